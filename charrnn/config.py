"""The settings of a run, as small dataclasses: what rebuilds the model, how it was trained,
how text is drawn. Each checks its own values; each default says what it does. No torch here,
so the command line can show these defaults without loading it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from charrnn.errors import CharrnnError

MODELS = ("lstm", "gru", "rnn")
DEFAULT_TIME = 600.0  # seconds a run may take when no stop condition is given
# sizes past these are mistakes (or a hostile config), not models
LIMITS = {"vocab_size": 0x110000, "layers": 64, "hidden_size": 1 << 16, "embedding_size": 1 << 16}


@dataclass
class ModelConfig:
    """Everything needed to rebuild the network; saved as JSON beside the weights."""

    vocab_size: int
    model: str = "lstm"  # lstm | gru | rnn (vanilla tanh RNN)
    layers: int = 2  # recurrent layers stacked
    hidden_size: int = 384  # units per recurrent layer
    embedding_size: int = 64  # size of the learned character embedding fed to layer 1
    dropout: float = 0.1  # dropout between recurrent layers and before the head, when training

    def __post_init__(self) -> None:
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


OPTIMIZERS = ("adamw", "adam", "rmsprop")


@dataclass
class TrainConfig:
    """How a run is trained; saved in config.json and restored by --resume. A setting left at
    None is chosen for the budget, the corpus and the device (charrnn/autosize.py)."""

    batch_size: int | None = None  # contiguous streams trained side by side
    seq_len: int | None = None  # characters per window of truncated backpropagation
    lr: float | None = None  # peak learning rate, reached after warm-up
    min_lr_frac: float = 0.05  # the cosine decay over the planned steps ends at lr * min_lr_frac
    warmup_steps: int = 50  # linear warm-up from 0 to lr
    weight_decay: float = 0.01  # AdamW's decoupled weight decay
    optimizer: str = "adamw"  # adamw | adam | rmsprop
    grad_clip: float = 5.0  # global gradient-norm clip; 0 turns it off
    epochs: float | None = None  # stop after this many passes over the training text
    max_steps: int | None = None  # stop after this many windows
    time: float | None = None  # a budget in seconds, planned as steps at the start
    eval_every: int | None = None  # validate every this many steps (and at the end)
    eval_chars: int = 200_000  # validate on at most this many characters of the validation text
    patience: int = 3  # evaluations without a new best before the learning rate decays; 0: never
    lr_decay: float = 0.5  # what a plateau multiplies the learning rate by
    max_decays: int = 2  # stop once this many decays in a row brought no new best
    val_frac: float = 0.1  # the last val_frac of the corpus is the validation text
    seed: int = 1337  # seeds initialisation, dropout and everything else random
    device: str = "auto"  # auto | cpu | cuda | mps
    amp: bool = False  # mixed precision: bfloat16 autocast (float16 with loss scaling on old GPUs)
    encoding: str = "utf-8"  # the corpus file's text encoding
    errors: str = "strict"  # what to do with undecodable bytes: strict | replace | ignore

    def __post_init__(self) -> None:
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
            (self.eval_chars >= 2, "--eval-chars must be 2 or more"),
            (self.patience >= 0, "--patience must be 0 (off) or more"),
            (0 < self.lr_decay <= 1, "--lr-decay must be in (0, 1]"),
            (self.max_decays >= 0, "--max-decays must be 0 or more"),
            (0 <= self.val_frac < 1, "--val-frac must be in [0, 1)"),
            (self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:"),
             "--device must be auto, cpu, cuda or mps"),
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
        """Whether every setting that autosize chooses has a value."""
        return None not in (self.batch_size, self.seq_len, self.lr)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


SEED_MAX = 2**64 - 1  # torch's generators take seeds up to this


def check_seed(seed: int | None) -> None:
    if seed is not None and not 0 <= seed <= SEED_MAX:
        raise CharrnnError(f"--seed must be a whole number from 0 to {SEED_MAX}, not {seed}")


@dataclass
class SampleConfig:
    temperature: float = 0.8  # below 1 is safer and more repetitive; 0 always takes the likeliest
    top_k: int | None = None  # draw only among the k likeliest characters
    top_p: float | None = None  # draw only among the likeliest characters whose mass reaches p
    length: int = 1000  # characters to generate after the prime

    def __post_init__(self) -> None:
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise CharrnnError(f"--temperature must be 0 or more, not {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise CharrnnError(f"--top-k must be 1 or more, not {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise CharrnnError(f"--top-p must be in (0, 1], not {self.top_p}")
        if self.length < 0:
            raise CharrnnError(f"--length must be 0 or more, not {self.length}")
