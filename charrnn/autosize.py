"""Choosing the model and its training settings for the budget, the corpus and the device.

- `calibrate` measures how many characters per second this device trains (and validates) each
  candidate size: a few steps each, cached per device and torch version, so the next run starts
  at once and makes the same choice.
- `choose` is the rule, a pure function: for each candidate, the characters the budget allows
  at its speed give a predicted validation loss, and the lowest wins. The prediction is the
  scaling law L = E + A / P^alpha + B / D^beta (P parameters, D characters seen) fitted to the
  grid that benchmarks/grid.py measured (benchmarks/fit.py), with repeated passes over a small
  corpus worth less than new text, and dropout that grows with those repeats.
- `plan` turns a time budget into a number of steps and an evaluation interval, so the run
  follows steps and validation, and the clock is only a safety stop.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from charrnn.config import ModelConfig, TrainConfig
from charrnn.device import describe, synchronize

HIDDEN_SIZES = (64, 96, 128, 192, 256, 384, 512, 768, 1024)  # the candidates, smallest first
LAYERS = 2
EMBEDDING = 64
BATCH_SIZE = 32  # the grid measured no gain in CPU speed from larger batches (33.9k chars/s at
SEQ_LEN = 64  # 32 x 64, 35.7k at 64 x 64, 37.1k at 64 x 100 for a 2x256 LSTM): more steps win
LR = 4e-3

# L = E + A / P^alpha + B / D^beta: benchmarks/fit.py over benchmarks/grid/grid.jsonl
FIT = {"A": 313.783, "alpha": 0.575, "B": 32260.6, "beta": 0.85}
REPEAT_DECAY = 1e+09  # a repeated pass is worth exp(-(passes - 1) / REPEAT_DECAY) of new text
MAX_DROPOUT = 0.3
# No size whose recurrent layers hold more parameters than this many per character of the
# training text. Not fitted (the CPU grid never reaches it); a bound from practice: nanoGPT's
# shakespeare_char trains 10.7M parameters on 1M characters, with dropout 0.2.
MAX_PARAMS_PER_CHAR = 4

TRAIN_SHARE = 0.85  # of a time budget, about what goes to training steps
OVERHEAD_SHARE = 0.07  # of a time budget, kept for set-up, checkpoints and the display
EVALUATIONS = 20  # evaluations planned over a run: enough for the plateau rule to see a trend
EVAL_SHARE = 0.08  # at most this share of a time budget goes to evaluation
MIN_EVAL_CHARS = 16_384
CALIBRATION_SHARE, CALIBRATION_MAX_S = 0.05, 15.0
SAFETY = 1.25  # the clock stops a run that overran its planned budget by this factor
CACHE_FORMAT = 1


def parameters(mc: ModelConfig) -> int:
    """The recurrent layers' parameters: the part of the model that its size choice scales
    (the embedding and the output layer depend on the vocabulary, not on the choice)."""
    from charrnn.checkpoint import expected_shapes

    return sum(math.prod(shape) for name, shape in expected_shapes(mc).items()
               if name.startswith("rnn."))


def effective_chars(seen: float, unique: float) -> float:
    """Characters seen, with each repeated pass over the corpus worth less than new text."""
    if seen <= unique:
        return seen
    repeats = seen / unique - 1
    return unique * (1 + REPEAT_DECAY * (1 - math.exp(-repeats / REPEAT_DECAY)))


def predicted_loss(params: int, seen: float, unique: float) -> float:
    """The fitted loss above the corpus's own floor E (which no choice changes)."""
    d = max(effective_chars(seen, unique), 1.0)
    return FIT["A"] / params ** FIT["alpha"] + FIT["B"] / d ** FIT["beta"]


def optimal_parameters(seen: float, unique: float) -> float:
    """The size for which `seen` characters are the compute-optimal amount: where a little more
    compute lowers the fitted loss as much spent on parameters as on characters,
    alpha A / P^alpha = beta B / D^beta."""
    d = max(effective_chars(seen, unique), 1.0)
    a, alpha, b, beta = FIT["A"], FIT["alpha"], FIT["B"], FIT["beta"]
    return (alpha * a * d ** beta / (beta * b)) ** (1 / alpha)


def dropout_for(seen: float, unique: float) -> float:
    """No dropout for a corpus seen about once; more the more often the budget repeats it."""
    passes = seen / max(unique, 1)
    if passes <= 2:
        return 0.0
    return round(min(MAX_DROPOUT, 0.1 * math.log2(passes / 2) + 0.05), 2)


@dataclass
class Speed:
    train: float  # characters per second, training
    eval: float  # characters per second, validation (forward only)


@dataclass
class Choice:
    model: dict  # layers, hidden_size, embedding_size, dropout
    train: dict  # batch_size, seq_len, lr
    chosen: list  # the names of the settings charrnn chose; the others the user gave
    chars: int  # characters this choice can train on within the budget
    reason: str


def _fmt_seconds(seconds: float) -> str:
    if seconds >= 120:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def choose(*, model: str, vocab_size: int, corpus_chars: int, given_model: dict,
           given_train: dict, chars: int | None = None, seconds: float | None = None,
           speeds: dict[int, Speed] | None = None, where: str = "this device") -> Choice:
    """The settings for a budget of `chars` characters, or of `seconds` at `speeds` (chars/s
    per hidden size); settings the user gave (given_model, given_train) are kept."""
    layers = given_model.get("layers", LAYERS)
    embedding = given_model.get("embedding_size", EMBEDDING)
    train = {"batch_size": given_train.get("batch_size") or BATCH_SIZE,
             "seq_len": given_train.get("seq_len") or SEQ_LEN,
             "lr": given_train.get("lr") or LR}
    sizes = ([given_model["hidden_size"]] if "hidden_size" in given_model else
             [h for h in HIDDEN_SIZES if chars is not None or h in (speeds or {})])
    options = []
    for h in sizes:
        mc = ModelConfig(vocab_size=vocab_size, model=model, layers=layers, hidden_size=h,
                         embedding_size=embedding, dropout=0.0)
        p = parameters(mc)
        if len(sizes) > 1 and h > sizes[0] and p > MAX_PARAMS_PER_CHAR * corpus_chars:
            break
        if chars is None:  # a time budget: each size gets what its speed allows
            seen = speeds[h].train * seconds * TRAIN_SHARE
            score = predicted_loss(p, seen, corpus_chars)
        else:  # a budget of characters: the size a compute-optimal run would train on them
            seen = chars
            score = abs(math.log(p / optimal_parameters(seen, corpus_chars)))
        options.append((score, h, int(seen)))
    _, hidden, seen = min(options)
    dropout = given_model.get("dropout", dropout_for(seen, corpus_chars))
    chosen = [k for k in ("layers", "hidden_size", "embedding_size", "dropout")
              if k not in given_model] + [k for k in train if not given_train.get(k)]
    why = (f"about {seen:,} characters fit in {_fmt_seconds(seconds)} at "
           f"{speeds[hidden].train:,.0f} chars/s on {where}" if chars is None else
           f"a budget of {seen:,} characters")
    passes = seen / max(corpus_chars, 1)
    if "dropout" in chosen and dropout:
        why += f"; dropout {dropout:g} as that is {passes:.0f} passes over the corpus"
    reason = f"{layers}x{hidden} {model}: {why}"
    return Choice(model={"layers": layers, "hidden_size": hidden, "embedding_size": embedding,
                         "dropout": dropout},
                  train=train, chosen=chosen, chars=seen, reason=reason)


# ---------------------------------------------------------------------------------------------
# Calibration


def _cache_path() -> Path:
    from charrnn.corpus import cache_dir

    return cache_dir() / "calibration.json"


def _read_cache() -> dict:
    """The cached speeds; a missing, damaged or foreign file counts as empty (and is rebuilt)."""
    try:
        data = json.loads(_cache_path().read_text(encoding="utf-8"))
        if data.get("format") != CACHE_FORMAT or not isinstance(data.get("speeds"), dict):
            return {}
        return {k: Speed(float(v["train"]), float(v["eval"])) for k, v in data["speeds"].items()
                if float(v["train"]) > 0 and float(v["eval"]) > 0}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def _write_cache(speeds: dict) -> None:
    from charrnn.fileio import atomic_write_text

    data = {"format": CACHE_FORMAT, "speeds": {k: asdict(v) for k, v in speeds.items()}}
    try:
        atomic_write_text(_cache_path(), json.dumps(data, indent=1) + "\n")
    except OSError:
        pass  # a cache we cannot write only costs the next run its calibration


def cache_key(device: torch.device, mc: ModelConfig, batch: int, seq: int, amp: bool) -> str:
    # the vocabulary rounded up to a power of two: corpora of similar alphabets share entries
    vocab = 1 << max(mc.vocab_size - 1, 63).bit_length()
    return (f"{describe(device)} | torch {torch.__version__} | {mc.model} {mc.layers}x"
            f"{mc.hidden_size} emb {mc.embedding_size} vocab {vocab} | batch {batch}x{seq}"
            f"{' amp' if amp else ''}")


def measure(device: torch.device, mc: ModelConfig, batch: int, seq: int, amp: bool,
            min_seconds: float = 0.25) -> Speed:
    """Train and validate a fresh model of this size on random ids for a few steps. Each step
    is timed alone and the median kept: one step stalled by another process does not count."""
    from charrnn.model import CharRNN
    from charrnn.train import StepRunner

    torch.manual_seed(0)
    model = CharRNN(mc).to(device)
    runner = StepRunner(model, TrainConfig(device=str(device), amp=amp, lr=LR), device)
    x = torch.randint(mc.vocab_size, (batch, seq), device=device)
    y = torch.randint(mc.vocab_size, (batch, seq), device=device)
    hidden = model.init_state(batch, device)

    def timed(fn) -> float:
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        return time.perf_counter() - start

    def step():
        nonlocal hidden
        _, hidden = runner.step(x, y, hidden, LR)

    for _ in range(2):  # the first steps allocate and pick kernels: not timed
        step()
    times = []
    while len(times) < 3 or (sum(times) < min_seconds and len(times) < 20):
        times.append(timed(step))
    model.eval()
    with torch.no_grad(), runner.autocast():
        model(x)
        evals = [timed(lambda: model(x)) for _ in range(3)]
    return Speed(train=batch * seq / statistics.median(times),
                 eval=batch * seq / statistics.median(evals))


def calibrate(device: torch.device, base: ModelConfig, sizes: list[int], batch: int, seq: int,
              amp: bool, budget_s: float, say=lambda line: None) -> dict[int, Speed]:
    """Speeds of each hidden size in `sizes` (smallest first), from the cache or measured, within
    `budget_s` seconds of measuring; sizes too slow to time in what is left are left out."""
    cache = _read_cache()
    speeds, measured, spent = {}, False, 0.0
    for h in sizes:
        mc = ModelConfig(**{**base.to_dict(), "hidden_size": h})
        key = cache_key(device, mc, batch, seq, amp)
        if key in cache:
            speeds[h] = cache[key]
            continue
        if speeds:  # a step of this size takes about params/params_before as long
            last = max(speeds)
            ratio = parameters(mc) / parameters(ModelConfig(**{**mc.to_dict(), "hidden_size":
                                                                last}))
            if 4 * batch * seq * ratio / speeds[last].train > budget_s - spent:
                break
        if not measured:
            say(f"calibrating: timing a few training steps of each model size on "
                f"{describe(device)} (once; cached in {_cache_path()})")
            measured = True
        start = time.perf_counter()
        speeds[h] = cache[key] = measure(device, mc, batch, seq, amp)
        spent += time.perf_counter() - start
        if spent >= budget_s:
            break
    if measured:
        _write_cache(cache)
    return speeds


def calibration_budget(seconds: float) -> float:
    return min(CALIBRATION_SHARE * seconds, CALIBRATION_MAX_S)


# ---------------------------------------------------------------------------------------------
# The plan


@dataclass
class Plan:
    """A time budget turned into steps: what --resume follows, recorded in config.json."""

    seconds: float  # the budget
    steps: int  # training steps that fit in it
    eval_every: int
    eval_chars: int
    chars_per_sec: float  # the calibrated speeds the plan was made from
    eval_chars_per_sec: float

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        return cls(seconds=float(d["seconds"]), steps=int(d["steps"]),
                   eval_every=int(d["eval_every"]), eval_chars=int(d["eval_chars"]),
                   chars_per_sec=float(d["chars_per_sec"]),
                   eval_chars_per_sec=float(d["eval_chars_per_sec"]))


def plan(seconds: float, speed: Speed, cfg: TrainConfig, val_chars: int) -> Plan:
    """Steps and evaluations that fill `seconds` at `speed`. Evaluation takes at most EVAL_SHARE
    of the budget: first fewer validation characters (down to MIN_EVAL_CHARS), then fewer
    evaluations; training takes the rest, less OVERHEAD_SHARE."""
    chars_per_step = cfg.batch_size * cfg.seq_len
    eval_chars = max(min(cfg.eval_chars, val_chars), 2)
    share = EVAL_SHARE * seconds
    if EVALUATIONS * eval_chars / speed.eval > share:
        eval_chars = max(int(share * speed.eval / EVALUATIONS), min(MIN_EVAL_CHARS, eval_chars))
    one_eval = eval_chars / speed.eval  # seconds
    usable = seconds * (1 - OVERHEAD_SHARE)
    if cfg.eval_every:  # the user's interval: evaluations grow with the steps
        per_step = chars_per_step / speed.train + one_eval / cfg.eval_every
        steps = max(int(usable / per_step), 1)
        eval_every = cfg.eval_every
    else:
        evaluations = max(1, min(EVALUATIONS, int(share / one_eval)))
        steps = max(int((usable - evaluations * one_eval) * speed.train / chars_per_step), 1)
        eval_every = max(steps // evaluations, 1)
    return Plan(seconds=seconds, steps=steps, eval_every=eval_every, eval_chars=eval_chars,
                chars_per_sec=speed.train, eval_chars_per_sec=speed.eval)
