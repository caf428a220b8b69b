"""The settings of a run, as small dataclasses: what rebuilds the model, how it was trained,
how text is drawn. Each setting is declared once, here: its default, its check (in
__post_init__) and its help text (the field's metadata), which the command line reads to
declare its options. No torch here, so `charrnn --help` starts without loading it."""

from __future__ import annotations

import math
import re
import types
from dataclasses import MISSING, asdict, dataclass, field, fields

from charrnn import threads
from charrnn.errors import CharrnnError

MODELS = ("lstm", "gru", "rnn")
OPTIMIZERS = ("adamw", "adam", "rmsprop")
DEVICES = ("auto", "cpu", "cuda", "mps")
EVAL_FROM = ("spread", "start")  # TrainConfig.eval_from
LANGUAGES = ("c", "python", "latex", "prose")  # what the probes know (charrnn/interp/probes.py)
DEFAULT_TIME = 600.0  # seconds a run may take when no stop condition is given
# sizes past these are mistakes (or a hostile config), not models
LIMITS = {"vocab_size": 0x110000, "layers": 64, "hidden_size": 1 << 16, "embedding_size": 1 << 16}
SEED_MAX = 2**64 - 1  # torch's generators take seeds up to this
SEEDS = SEED_MAX + 1  # seeds derived from one (seed + step, seed + rank) wrap around at this
LN2 = math.log(2)  # nats per bit


def setting(default=MISSING, help: str = "", *, flags: tuple[str, ...] = (), chosen=False,
            parse=None, shown: str | None = None, metavar: str | None = None,
            default_factory=MISSING):
    """A dataclass field that is also a command-line option: `help` is its text; `flags` its
    spellings (default --field-name); `chosen`: left out, it is chosen
    (charrnn/budget/rule.py), so the option's default is None; `parse` turns the typed text
    into the value; `shown` replaces the default the help shows; `metavar` names the value in
    the help."""
    meta = {"help": help, "flags": flags, "chosen": chosen, "parse": parse, "shown": shown,
            "metavar": metavar}
    return field(default=default, default_factory=default_factory, metadata=meta)


def flag(name: str) -> str:
    """A setting's command-line spelling: max_steps -> --max-steps."""
    return "--" + name.replace("_", "-")


def option_settings(cls) -> list:
    """The fields of a settings class that are command-line options."""
    return [f for f in fields(cls) if f.metadata.get("help")]


def parse_duration(text: str) -> float:
    """'90s', '10m', '1h30m', '2.5h' or plain seconds -> seconds."""
    parts = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*"
                         r"(?:(\d+(?:\.\d+)?)s?)?\s*", text)
    if not text.strip() or parts is None:
        raise CharrnnError(f"--time {text!r} is not a duration; write it like 90s, 10m or 1h30m")
    h, m, s = (float(p) if p else 0.0 for p in parts.groups())
    seconds = 3600 * h + 60 * m + s
    if seconds <= 0:
        raise CharrnnError(f"--time must be more than 0, not {text!r}")
    return seconds


def parse_size(text: str) -> int:
    """'2G', '512M', '1.5GB' or plain bytes -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", text, flags=re.I)
    if m is None or float(m.group(1)) <= 0:
        raise CharrnnError(f"--max-memory {text!r} is not a size; write it like 512M or 4G")
    return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2).upper() or " "))


def parse_cells(text: str) -> list[int]:
    """'17,230' -> [17, 230]."""
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise CharrnnError(f"--cells {text!r} is not a list of cell numbers like 17,230") from None


def parse_temperature(text: str) -> float:
    """'0.8' -> 0.8 (`sample` takes a list: parse_temperatures)."""
    values = parse_temperatures(text)
    if len(values) > 1:
        raise CharrnnError(f"--temperature takes one number here, not a list ({text!r}); only "
                           "`charrnn sample` draws one sample for each of several")
    return values[0]


def parse_temperatures(text: str) -> list[float]:
    """'0.8' or '0.5,0.8,1.2' -> [0.8] or [0.5, 0.8, 1.2]."""
    try:
        values = [float(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        values = []
    if not values:
        raise CharrnnError(f"--temperature {text!r} is not a number or a list of numbers like "
                           "0.5,0.8,1.2")
    return values


def check_device(name: str) -> bool:
    """auto, cpu, cuda, mps, or cuda:N."""
    return name in DEVICES or re.fullmatch(r"cuda:\d{1,4}", name) is not None


def text_encoding(name: str) -> bool:
    """Whether `name` is a codec that turns bytes into text (not rot13, base64, zlib...); an
    unknown name passes, for the reader to say so in its own words."""
    import codecs

    try:
        return getattr(codecs.lookup(name), "_is_text_encoding", True)
    except LookupError:
        return True


def check_types(settings) -> None:
    """Each field of a settings dataclass holds a value of its declared type (an int where an
    int is declared, not 1.5, "10" or True): a notebook's argument or a stranger's config.json
    gets the line the command line would, not an error from deep inside torch."""
    import numbers
    import typing

    def fits(value, kind) -> bool:
        if typing.get_origin(kind) in (typing.Union, types.UnionType):
            return any(fits(value, k) for k in typing.get_args(kind))
        if kind is type(None):
            return value is None
        if isinstance(value, bool):
            return kind is bool
        if kind is int:
            return isinstance(value, numbers.Integral)
        if kind is float:
            return isinstance(value, numbers.Real)
        if typing.get_origin(kind) is list:
            (item,) = typing.get_args(kind)
            return isinstance(value, (list, tuple)) and all(fits(v, item) for v in value)
        return isinstance(value, kind)

    words = {bool: "true or false", int: "a whole number", float: "a number", str: "text",
             list[str]: "a list of texts", list[int]: "a list of whole numbers"}
    hints = typing.get_type_hints(type(settings))
    for f in fields(settings):
        kind, value = hints[f.name], getattr(settings, f.name)
        if not fits(value, kind):
            union = typing.get_origin(kind) in (typing.Union, types.UnionType)
            kinds = typing.get_args(kind) if union else (kind,)
            wanted = [words.get(k, getattr(k, "__name__", str(k)))
                      for k in kinds if k is not type(None)]
            raise CharrnnError(f"{flag(f.name)} must be {' or '.join(wanted)}"
                               f"{' (or None)' if type(None) in kinds else ''}, not {value!r}")


def check_seed(seed: int | None) -> None:
    if seed is not None and not 0 <= seed <= SEED_MAX:
        raise CharrnnError(f"--seed must be a whole number from 0 to {SEED_MAX}, not {seed}")


@dataclass
class ModelConfig:
    """Everything needed to rebuild the network; saved as JSON beside the weights."""

    vocab_size: int
    model: str = setting("lstm", "Recurrent cell: lstm, gru or rnn (vanilla tanh RNN).")
    layers: int = setting(2, "Recurrent layers stacked.", chosen=True)
    hidden_size: int = setting(384, "Units per layer.", chosen=True)
    embedding_size: int = setting(64, "Size of the character embedding fed to layer 1.",
                                  chosen=True)
    dropout: float = setting(0.1, "Dropout between layers and before the output, when training, "
                             "in [0, 1).", chosen=True)

    def __post_init__(self) -> None:
        check_types(self)
        if self.model not in MODELS:
            raise CharrnnError(f"unknown --model {self.model!r}; choose one of {', '.join(MODELS)}")
        for name, most in LIMITS.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= most:
                raise CharrnnError(f"{name.replace('_', '-')} must be a whole number from 1 to "
                                   f"{most:,}, not {value!r}")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise CharrnnError(f"--dropout must be in [0, 1), not {self.dropout}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainConfig:
    """How a run is trained; saved in config.json and restored by --resume. A setting left at
    None is chosen for the budget, the corpus and the device (charrnn/budget/rule.py)."""

    batch_size: int | None = setting(None, "Contiguous streams trained side by side.",
                                     chosen=True)
    seq_len: int | None = setting(None, "Characters per window of truncated backpropagation "
                                  "through time.", chosen=True)
    lr: float | None = setting(None, "Peak learning rate (after warm-up, then cosine decay over "
                               "the planned steps).", chosen=True)
    min_lr_frac: float = 0.05  # the cosine decay over the planned steps ends at lr * min_lr_frac
    warmup_steps: int = setting(50, "Steps of linear learning-rate warm-up.")
    weight_decay: float = setting(0.01, "AdamW weight decay of the weight matrices.")
    optimizer: str = setting("adamw", f"{', '.join(OPTIMIZERS[:-1])} or {OPTIMIZERS[-1]}.")
    grad_clip: float = setting(5.0, "Clip the global gradient norm to this; 0 turns clipping "
                               "off.")
    epochs: float | None = setting(None, "Stop after this many passes over the training text.")
    max_steps: int | None = setting(None, "Stop after this many training steps.")
    time: float | None = setting(
        None, "A time budget, like 90s, 10m or 1h: the model is chosen for it, and it is "
        "planned as a number of steps at the start.", parse=parse_duration,
        shown=f"{DEFAULT_TIME / 60:g}m when no other stop is given")
    eval_every: int | None = setting(None, "Validate (and checkpoint) every this many steps.",
                                     shown="about 20 times a run")
    eval_chars: int | None = setting(None, "Validate on at most this many characters.",
                                     shown="200000, less where evaluation would take over 8% "
                                     "of the run")
    # where those characters come from in a longer validation text: "spread", pieces from
    # evenly spaced places (the whole text's loss, estimated); "start", its beginning, as runs
    # made before this setting existed did, so that they resume and repeat exactly
    eval_from: str = "spread"
    tensorboard: bool = setting(False, "Also write TensorBoard events to RUN/tensorboard (pip "
                                "install 'charrnn[tensorboard]').")
    sample_every: int = setting(1, "At every this many evaluations, show a short sample of the "
                                "model and keep it in samples.txt; 0: never.")
    patience: int = setting(3, "Evaluations without a new best before the learning rate "
                            "decays; 0: never.")
    lr_decay: float = setting(0.5, "What a plateau multiplies the learning rate by, in (0, 1].")
    max_decays: int = setting(2, "Stop once this many decays in a row brought no new best.")
    val_frac: float = setting(0.1, "Fraction of the corpus, at its end, kept for validation.")
    test_frac: float = setting(0.0, "Fraction of the corpus, at its very end (after the "
                               "validation text), held out: never trained or validated on.")
    include: list[str] = setting(help="With a folder as CORPUS: train on the files that match "
                                 "this pattern (like '*.c'); repeatable. [default: all]",
                                 metavar="<pattern>", default_factory=list)
    exclude: list[str] = setting(help="With a folder as CORPUS: leave out the files that match "
                                 "this pattern; repeatable.", metavar="<pattern>",
                                 default_factory=list)
    seed: int = setting(1337, "Random seed: the same seed, the same run.")
    device: str = setting("auto", f"{', '.join(DEVICES[:-1])} or {DEVICES[-1]}.")
    threads: int | None = setting(None, threads.HELP, parse=threads.parse, shown="auto",
                                  metavar="N|auto")
    amp: bool = setting(False, "Mixed precision (bfloat16; float16 with loss scaling on GPUs "
                        "without bfloat16).")
    encoding: str = setting("utf-8", "Text encoding of the corpus.")
    errors: str = setting("strict", "Undecodable bytes: strict (stop), replace (U+FFFD) or "
                          "ignore.")

    def __post_init__(self) -> None:
        check_types(self)
        checks = [
            (self.batch_size is None or self.batch_size >= 1, "--batch-size must be 1 or more"),
            (self.seq_len is None or self.seq_len >= 1, "--seq-len must be 1 or more"),
            (self.lr is None or (self.lr > 0 and math.isfinite(self.lr)),
             "--lr must be a positive number"),
            (0 <= self.min_lr_frac <= 1, "min_lr_frac must be in [0, 1]"),
            (self.warmup_steps >= 0, "--warmup-steps must be 0 or more"),
            (0 <= self.weight_decay < math.inf, "--weight-decay must be a number, 0 or more"),
            (self.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}"),
            (0 <= self.grad_clip < math.inf, "--grad-clip must be 0 (off) or more"),
            (self.epochs is None or 0 < self.epochs < math.inf,
             "--epochs must be a number more than 0"),
            (self.max_steps is None or self.max_steps >= 1, "--max-steps must be 1 or more"),
            (self.time is None or 0 < self.time < math.inf, "--time must be more than 0"),
            (self.eval_every is None or self.eval_every >= 1, "--eval-every must be 1 or more"),
            (self.eval_chars is None or self.eval_chars >= 2, "--eval-chars must be 2 or more"),
            (self.eval_from in EVAL_FROM, f"eval_from must be {' or '.join(EVAL_FROM)}"),
            (self.sample_every >= 0, "--sample-every must be 0 (never) or more"),
            (self.patience >= 0, "--patience must be 0 (off) or more"),
            (0 < self.lr_decay <= 1, "--lr-decay must be in (0, 1]"),
            (self.max_decays >= 0, "--max-decays must be 0 or more"),
            (0 <= self.val_frac < 1, "--val-frac must be in [0, 1)"),
            (0 <= self.test_frac < 1 - self.val_frac,
             "--test-frac must be 0 or more, and --val-frac plus --test-frac below 1"),
            (check_device(self.device),
             f"--device must be {', '.join(DEVICES[:-1])} or {DEVICES[-1]} (or cuda:N, a GPU's "
             f"number), not {self.device!r}"),
            (text_encoding(self.encoding), f"--encoding {self.encoding} is not a text encoding; "
             "give one like utf-8, latin-1 or cp1252"),
            (self.threads is None or 1 <= self.threads <= threads.MAX_THREADS,
             f"--threads must be a whole number from 1 to {threads.MAX_THREADS} or auto, not "
             f"{self.threads!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise CharrnnError(message)
        check_seed(self.seed)

    @property
    def time_budget(self) -> float | None:
        """Seconds the run may take: --time, or DEFAULT_TIME when no other stop is given."""
        return self.time or (None if self.max_steps or self.epochs else DEFAULT_TIME)

    @property
    def decided(self) -> bool:
        """Whether every setting that the rule chooses has a value."""
        return None not in (self.batch_size, self.seq_len, self.lr)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class SampleConfig:
    temperature: float = setting(0.8, "Below 1: safer, more repetitive; above 1: wilder; 0: "
                                 "greedy. `sample` takes several, like 0.5,0.8,1.2: one sample "
                                 "each, from the same seed.", flags=("--temperature", "--temp"),
                                 parse=parse_temperature, shown="0.8")
    top_k: int | None = setting(None, "Draw only among the k likeliest characters.")
    top_p: float | None = setting(None, "Draw only among the likeliest characters holding this "
                                  "much probability, in (0, 1].")
    length: int = setting(1000, "Characters to generate.")
    seed: int | None = setting(None, "Random seed: the same seed gives the same text.")

    def __post_init__(self) -> None:
        check_types(self)
        check_seed(self.seed)
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise CharrnnError(f"--temperature must be 0 or more, not {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise CharrnnError(f"--top-k must be 1 or more, not {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise CharrnnError(f"--top-p must be in (0, 1], not {self.top_p}")
        if self.length < 0:
            raise CharrnnError(f"--length must be 0 or more, not {self.length}")


@dataclass
class InspectConfig:
    """The questions `inspect-cells` asks of one inspection, and where it runs."""

    state: str | None = setting(
        None, "c (LSTM cell state, as tanh(c)), h (hidden state), or a gate: input, forget, "
        "output, candidate (LSTM); reset, update, new (GRU).", shown="c for an LSTM, else h")
    layer: int | None = setting(None, "Layer, counted from 1.",
                                shown="all; the last with --cells")
    cells: list[int] = setting(help="Cells to paint, like 17,230.", parse=parse_cells,
                               default_factory=list)
    top: int = setting(3, "Cells to paint when none are named; rows of each probe table.")
    lang: str | None = setting(None, f"The text's language for the probes: "
                               f"{', '.join(LANGUAGES[:-1])} or {LANGUAGES[-1]}.",
                               shown="detected from the text")
    probes: list[str] = setting(help="Rank cells by correlation with a feature of the text; "
                                "repeatable. See --list-probes.", flags=("--probe",),
                                metavar="<name>", default_factory=list)
    regexes: list[str] = setting(help="A probe that is on inside matches of this regular "
                                 "expression; repeatable.", flags=("--probe-regex",),
                                 metavar="<pattern>", default_factory=list)
    gates: bool = setting(False, "Table of gate saturation per layer.")
    surprisal: bool = setting(False, "Paint each character by the probability the model gave "
                              "it.")
    feature: int | None = setting(None, "Paint this feature of the sparse dictionary that "
                                  "`charrnn features` learned for the layer (--layer, --state).")
    match: str | None = setting(None, "List the stretches of the text whose activity, on the "
                                "cells most active on this phrase, is most like the phrase's.",
                                metavar="<phrase>")
    ablate: str | None = setting(None, "Hold these cells at their mean (LAYER:CELL,...) and "
                                 "paint where the loss rises; with --probe, the rise inside "
                                 "and outside its spans.", metavar="<L:C,...>")
    max_memory: int = setting(2 << 30, "Refuse a text whose inspection would need more memory "
                              "than this (every state of every cell is kept for each "
                              "character).", parse=parse_size, shown="2G")
    device: str = setting("cpu", f"Where to run the model: {', '.join(DEVICES[1:-1])} or "
                          f"{DEVICES[-1]}.")
    threads: int | None = setting(None, threads.HELP, parse=threads.parse, shown="auto",
                                  metavar="N|auto")

    def __post_init__(self) -> None:
        check_types(self)
        if self.top < 1:
            raise CharrnnError(f"--top must be 1 or more, not {self.top}")
        if self.max_memory < 1:
            raise CharrnnError(f"--max-memory must be a size of 1 byte or more, like 512M or 4G, "
                               f"not {self.max_memory}")
        if self.threads is not None and not 1 <= self.threads <= threads.MAX_THREADS:
            raise CharrnnError(f"--threads must be a whole number from 1 to "
                               f"{threads.MAX_THREADS} or auto, not {self.threads!r}")
        if self.lang is not None and self.lang not in LANGUAGES:
            raise CharrnnError(f"--lang must be {', '.join(LANGUAGES[:-1])} or {LANGUAGES[-1]}, "
                               f"not {self.lang!r}")
        if not check_device(self.device):
            raise CharrnnError(f"--device must be {', '.join(DEVICES[:-1])} or {DEVICES[-1]} "
                               f"(or cuda:N, a GPU's number), not {self.device!r}")
