"""Each setting's command-line option as a type, read from its field in charrnn/config.py, where
its flags, help, default and check are declared once. A command lists the ones it takes in its
own signature (`hidden_size: HiddenSize = None`), so a reader of the command sees its options.

A setting left out arrives as None and keeps its field's default (a flag, as False); the help
says the default. A setting the budget chooses says so instead.
"""

from __future__ import annotations

import types
import typing
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Annotated, Optional

import typer

from charrnn.config import InspectConfig, ModelConfig, SampleConfig, TrainConfig, flag

CHOSEN = "[default: chosen for the budget, the corpus and the device]"


def option(cls, name: str):
    """The annotated type of setting `name` of settings class `cls`, as a typer option."""
    f = next(f for f in fields(cls) if f.name == name)
    m = f.metadata
    kind = str if m["parse"] else typing.get_type_hints(cls)[name]
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    default = None if f.default is MISSING else f.default
    if m["chosen"]:
        note = CHOSEN
    elif m["shown"]:
        note = f"[default: {m['shown']}]"
    elif default is not None and kind is not bool:
        note = f"[default: {default}]"
    else:
        note = ""
    return Annotated[kind if kind is bool else Optional[kind], typer.Option(
        *(m["flags"] or (flag(name),)), help=f"{m['help']} {note}".strip(), show_default=False,
        metavar=m["metavar"])]


# the network (ModelConfig)
Model = option(ModelConfig, "model")
Layers = option(ModelConfig, "layers")
HiddenSize = option(ModelConfig, "hidden_size")
EmbeddingSize = option(ModelConfig, "embedding_size")
Dropout = option(ModelConfig, "dropout")

# how it trains (TrainConfig)
BatchSize = option(TrainConfig, "batch_size")
SeqLen = option(TrainConfig, "seq_len")
Lr = option(TrainConfig, "lr")
WarmupSteps = option(TrainConfig, "warmup_steps")
WeightDecay = option(TrainConfig, "weight_decay")
Optimizer = option(TrainConfig, "optimizer")
GradClip = option(TrainConfig, "grad_clip")
Epochs = option(TrainConfig, "epochs")
MaxSteps = option(TrainConfig, "max_steps")
Time = option(TrainConfig, "time")
EvalEvery = option(TrainConfig, "eval_every")
EvalChars = option(TrainConfig, "eval_chars")
Tensorboard = option(TrainConfig, "tensorboard")
SampleEvery = option(TrainConfig, "sample_every")
Patience = option(TrainConfig, "patience")
LrDecay = option(TrainConfig, "lr_decay")
MaxDecays = option(TrainConfig, "max_decays")
ValFrac = option(TrainConfig, "val_frac")
TestFrac = option(TrainConfig, "test_frac")
Include = option(TrainConfig, "include")
Exclude = option(TrainConfig, "exclude")
TrainSeed = option(TrainConfig, "seed")
TrainDevice = option(TrainConfig, "device")
Threads = option(TrainConfig, "threads")
Amp = option(TrainConfig, "amp")
Encoding = option(TrainConfig, "encoding")
Errors = option(TrainConfig, "errors")

# how text is drawn (SampleConfig)
Temperature = option(SampleConfig, "temperature")
TopK = option(SampleConfig, "top_k")
TopP = option(SampleConfig, "top_p")
Length = option(SampleConfig, "length")
Seed = option(SampleConfig, "seed")

# what inspect-cells and explore ask (InspectConfig)
State = option(InspectConfig, "state")
Layer = option(InspectConfig, "layer")
Cells = option(InspectConfig, "cells")
Top = option(InspectConfig, "top")
Lang = option(InspectConfig, "lang")
Probes = option(InspectConfig, "probes")
Regexes = option(InspectConfig, "regexes")
Gates = option(InspectConfig, "gates")
Surprisal = option(InspectConfig, "surprisal")
Feature = option(InspectConfig, "feature")
Match = option(InspectConfig, "match")
Ablate = option(InspectConfig, "ablate")
MaxMemory = option(InspectConfig, "max_memory")
InspectDevice = option(InspectConfig, "device")

# the command line's own
RunArg = Annotated[Path, typer.Argument(help="A run directory written by `charrnn train`.",
                                        show_default=False)]
# the text that inspect-cells and explore look at: the same options, one pass of the model
TextFile = Annotated[Optional[Path], typer.Option(
    "--text", help="This UTF-8 file instead of the run's validation text.")]
PrimeText = Annotated[Optional[str], typer.Option(
    "--prime", help="This text and the model's continuation of it (--temperature, --seed).")]
StretchLength = Annotated[int, typer.Option(
    "--length", help="Characters to look at (with --prime: to generate).")]
Offset = Annotated[int, typer.Option("--offset", help="Where the stretch starts, in "
                                     "characters.")]
Color = Annotated[str, typer.Option("--color", help="auto, always or never.")]
