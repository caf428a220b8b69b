"""`charrnn train`: a new run, a resumed one, one from another's weights or plan."""

from __future__ import annotations

import shlex
import signal
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Optional

import typer

from charrnn.cli import base, options
from charrnn.cli.base import app, given_names, stderr_console
from charrnn.config import LN2, ModelConfig, TrainConfig, option_settings

STOPPED = {"time": "the planned end of the time budget",
           "clock": "the clock ran past the time budget", "max_steps": "--max-steps reached",
           "epochs": "--epochs reached",
           "patience": "validation stopped improving, even after the learning rate decayed"}


@app.command()
def train(
    ctx: typer.Context,
    corpus: Annotated[Optional[str], typer.Argument(
        help="A text file, a folder of them, or a corpus name (charrnn corpus list). "
        "Optional with --resume.",
        show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", help="Run directory. [default: runs/<corpus name>]", show_default=False)] = None,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="Continue this run "
                                                   "exactly where it stopped.")] = None,
    init_from: Annotated[Optional[Path], typer.Option("--init-from", help="Start from this "
                                                      "run's weights on a new corpus.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run in "
                                            "the run directory.")] = False,
    plan_from: Annotated[Optional[Path], typer.Option(
        "--plan-from", help="Repeat this run exactly as a new run: its model, settings, seed "
        "and planned steps (a time budget as the steps it planned; no clock).")] = None,
    # the network
    model: options.Model = None,
    layers: options.Layers = None,
    hidden_size: options.HiddenSize = None,
    embedding_size: options.EmbeddingSize = None,
    dropout: options.Dropout = None,
    # how it trains, and for how long
    batch_size: options.BatchSize = None,
    seq_len: options.SeqLen = None,
    lr: options.Lr = None,
    warmup_steps: options.WarmupSteps = None,
    weight_decay: options.WeightDecay = None,
    optimizer: options.Optimizer = None,
    grad_clip: options.GradClip = None,
    epochs: options.Epochs = None,
    max_steps: options.MaxSteps = None,
    time: options.Time = None,
    eval_every: options.EvalEvery = None,
    eval_chars: options.EvalChars = None,
    tensorboard: options.Tensorboard = False,
    sample_every: options.SampleEvery = None,
    patience: options.Patience = None,
    lr_decay: options.LrDecay = None,
    max_decays: options.MaxDecays = None,
    # its text
    val_frac: options.ValFrac = None,
    test_frac: options.TestFrac = None,
    include: options.Include = None,
    exclude: options.Exclude = None,
    encoding: options.Encoding = None,
    errors: options.Errors = None,
    # where, and how
    seed: options.TrainSeed = None,
    device: options.TrainDevice = None,
    threads: options.Threads = None,
    amp: options.Amp = False,
):
    """Train a character model on a text file; write checkpoints to a run directory.

    Under torchrun (`torchrun --nproc-per-node N -m charrnn train ...`) the N processes train
    one model with DistributedDataParallel, each on its share of the --batch-size streams."""
    from charrnn import api
    from charrnn.engine import distributed
    from charrnn.training.progress import Silent, reporter_for

    # what was set: all of it for a new run; only what the command line gave for a run that
    # continues or repeats another (they refuse any other change, in their own words)
    given = given_names(ctx) if resume is not None or plan_from is not None else None
    chosen = {k: v for k, v in ctx.params.items() if k in SETTINGS and v not in (None, [], ())
              and (given is None or k in given)}
    world = distributed.join(device or "auto")
    clean = False  # every rank finished its collectives
    try:
        with distributed.guard(world) as where:
            reporter = reporter_for(stderr_console()) if world.is_writer else Silent()
            run = api.trainer(corpus, out=out, resume=resume, init_from=init_from,
                              plan_from=plan_from, overwrite=overwrite, reporter=reporter,
                              world=world, started=base.STARTED, **chosen)
            where["run"] = run.run
            try:
                outcome = run.run_loop()
            except typer.Exit:  # stopped by a signal, saved, in step with the others
                clean = True
                raise
            clean = True
    finally:
        world.close(clean)
    if outcome.stopped_by == "interrupted":
        # the shell's convention for a process stopped by a signal: 128 + its number
        raise typer.Exit(128 + (outcome.signal or signal.SIGINT))
    _say_how_it_ended(reporter, outcome)


# the settings this command passes on (each a field of ModelConfig or TrainConfig)
SETTINGS = {f.name for f in fields(ModelConfig) if f.name != "vocab_size"} | \
    {f.name for f in option_settings(TrainConfig)}


def _say_how_it_ended(reporter, outcome) -> None:
    from charrnn.training.progress import fmt_duration

    plan = outcome.plan
    took = fmt_duration(outcome.seconds) + (f" of a {fmt_duration(plan.seconds)} budget"
                                            if plan else "")
    reporter.say(f"stopped at step {outcome.step} ({STOPPED[outcome.stopped_by]}) after {took}; "
                 f"best validation loss {outcome.best_val_loss:.4f} nats/char "
                 f"({outcome.best_val_loss / LN2:.3f} bits/char)")
    reporter.say(f"sample from it with:  charrnn sample {shlex.quote(str(outcome.run))}")
