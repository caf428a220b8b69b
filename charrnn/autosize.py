"""Choosing the model and its training settings for the budget, the corpus and the device.

- `calibrate` measures how many characters per second this device trains (and validates) each
  candidate size: a few steps each, cached per device and torch version, so the next run starts
  at once and makes the same choice.
- `choose` is the rule, a pure function: the largest candidate that can train on at least
  CHARS_PER_PARAMETER characters for each of its recurrent parameters within the budget (as
  Chinchilla's rule of about 20 tokens a parameter does for transformers), with repeated passes
  over a small corpus counting for less than new text, and dropout that grows with those
  repeats. The constants are fitted to the grid that benchmarks/grid.py measured
  (benchmarks/fit.py): the ones whose choices lose least against the best size the grid knows.
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
from charrnn.distributed import SINGLE, World

HIDDEN_SIZES = (64, 128, 192, 256, 384, 512, 768, 1024)  # the candidates, smallest first
LAYERS = 2
EMBEDDING = 64
# Larger batches barely ran faster on a 2-core Intel Xeon (a 2x256 LSTM: 33.9k chars/s at 32 x 64,
# 35.7k at 64 x 64, 37.1k at 64 x 100), so the smaller batch, with more steps, wins there
BATCH_SIZE = 32
SEQ_LEN = 64
LR = 4e-3

# benchmarks/fit.py over benchmarks/grid/grid.jsonl (benchmarks/grid/fit.json)
CHARS_PER_PARAMETER = 14.0  # the largest size that sees this many characters a parameter wins
REPEAT_DECAY = 16.0  # pass k over the corpus is worth exp(-(k - 1) / REPEAT_DECAY) of new text
# Dropout: at 8 passes over tiny Shakespeare the grid is mixed (a 2x192 did better without it,
# 1.550 against 1.558 with 0.1; a 2x256 better with it, 1.512 against 1.519); at about 30
# passes a 2x384 with 0.1 (1.472) beat a 2x256 without, which had begun to overfit (1.552;
# the README's 15-minute runs).
DROPOUT_FROM_PASSES = 8
MAX_DROPOUT = 0.3

TRAIN_SHARE = 0.85  # of a time budget, about what goes to training steps
OVERHEAD_SHARE = 0.07  # of a time budget, kept for set-up, checkpoints and the display
EVALUATIONS = 20  # evaluations planned over a run: enough for the plateau rule to see a trend
EVAL_SHARE = 0.08  # at most this share of a time budget goes to evaluation
MIN_EVAL_CHARS = 16_384
CALIBRATION_SHARE, CALIBRATION_MAX_S = 0.05, 15.0
SAFETY = 1.25  # the clock stops a run that overran its planned budget by this factor
CACHE_FORMAT = 2


def parameters(mc: ModelConfig) -> int:
    """The recurrent layers' parameters: the part of the model that its size choice scales
    (the embedding and the output layer depend on the vocabulary, not on the choice)."""
    from charrnn.checkpoint import expected_shapes

    return sum(math.prod(shape) for name, shape in expected_shapes(mc).items()
               if name.startswith("rnn."))


def effective_chars(seen: float, unique: float, repeat_decay: float = REPEAT_DECAY) -> float:
    """Characters seen, with each repeated pass over the corpus worth less than new text."""
    if seen <= unique:
        return seen
    repeats = seen / unique - 1
    return unique * (1 + repeat_decay * (1 - math.exp(-repeats / repeat_decay)))


def fits(hidden_params: int, chars: float, unique: float, k: float = CHARS_PER_PARAMETER,
         repeat_decay: float = REPEAT_DECAY) -> bool:
    """Whether a model of this many recurrent parameters gets enough characters to train on
    (k and repeat_decay are the rule's constants; benchmarks/fit.py tries others)."""
    return effective_chars(chars, unique, repeat_decay) >= k * hidden_params


def dropout_for(seen: float, unique: float) -> float:
    """No dropout until the budget passes over the corpus more than DROPOUT_FROM_PASSES times;
    then 0.1 more for each doubling of the passes (in steps of 0.05), up to MAX_DROPOUT."""
    passes = seen / max(unique, 1)
    if passes <= DROPOUT_FROM_PASSES:
        return 0.0
    return round(min(MAX_DROPOUT, 0.1 * math.log2(passes / DROPOUT_FROM_PASSES)) * 20) / 20


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
           speeds: dict[int, Speed] | None = None, where: str = "this device",
           batch_size: int = BATCH_SIZE) -> Choice:
    """The settings for a budget of `chars` characters, or of `seconds` at `speeds` (chars/s
    per hidden size); settings the user gave (given_model, given_train) are kept, and
    `batch_size` is the batch when none was given."""
    layers = given_model.get("layers", LAYERS)
    embedding = given_model.get("embedding_size", EMBEDDING)
    train = {"batch_size": given_train.get("batch_size") or batch_size,
             "seq_len": given_train.get("seq_len") or SEQ_LEN,
             "lr": given_train.get("lr") or LR}
    sizes = ([given_model["hidden_size"]] if "hidden_size" in given_model else
             [h for h in HIDDEN_SIZES if chars is not None or h in (speeds or {})])
    hidden, seen = sizes[0], 0
    for h in sizes:  # smallest first: the last that still fits the budget wins
        mc = ModelConfig(vocab_size=vocab_size, model=model, layers=layers, hidden_size=h,
                         embedding_size=embedding, dropout=0.0)
        p = parameters(mc)
        chars_h = chars if chars is not None else speeds[h].train * seconds * TRAIN_SHARE
        if h == sizes[0] or fits(p, chars_h, corpus_chars):
            hidden, seen = h, int(chars_h)
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
    # dropout matters: with it, the CPU runs a multi-layer LSTM a layer at a time, slower
    return (f"{describe(device)} | torch {torch.__version__} | {mc.model} {mc.layers}x"
            f"{mc.hidden_size} emb {mc.embedding_size} vocab {vocab}"
            f"{' dropout' if mc.dropout else ''} | batch {batch}x{seq}{' amp' if amp else ''}")


def measure(device: torch.device, mc: ModelConfig, batch: int, seq: int, amp: bool,
            min_seconds: float = 0.25, world: World = SINGLE) -> Speed:
    """Train and validate a fresh model of this size on random ids for a few steps. Each step
    is timed alone and the median kept: one step stalled by another process does not count.
    In a torchrun job every rank runs it at once on its share `batch`, exchanging gradients as
    training does: the job's speed, at its slowest rank's pace."""
    from charrnn.model import CharRNN
    from charrnn.train import StepRunner

    torch.manual_seed(0)
    model = CharRNN(mc).to(device)
    runner = StepRunner(model, TrainConfig(device=str(device), amp=amp, lr=LR), device, world)
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
    while len(times) < 3 or (sum(times) < min_seconds and len(times) < 20
                             and not world.distributed):  # (the same steps on every rank)
        times.append(timed(step))
    model.eval()
    with torch.no_grad(), runner.autocast():
        model(x)
        evals = [timed(lambda: model(x)) for _ in range(3)]
    train_s, eval_s = statistics.median(times), statistics.median(evals)
    if world.distributed:  # the slowest rank's, on every rank
        train_s, eval_s = (us / 1e6 for us in world.agree([round(train_s * 1e6),
                                                            round(eval_s * 1e6)]))
    return Speed(train=batch * world.size * seq / train_s, eval=batch * world.size * seq / eval_s)


def calibrate(device: torch.device, base: ModelConfig, sizes: list[int], batch: int, seq: int,
              amp: bool, budget_s: float, say=lambda line: None,
              too_big=lambda hidden, speed: False) -> dict[int, Speed]:
    """Speeds of each hidden size in `sizes` (smallest first), from the cache or measured, within
    `budget_s` seconds of measuring. It stops at the first size `too_big` for the budget (the
    larger ones are slower still), and leaves out sizes too slow to time in what is left."""
    cache = _read_cache()
    speeds, measured, spent = {}, False, 0.0
    for h in sizes:
        mc = ModelConfig(**{**base.to_dict(), "hidden_size": h})
        key = cache_key(device, mc, batch, seq, amp)
        if key in cache:
            speeds[h] = cache[key]
            if too_big(h, speeds[h]):
                break
            continue
        if speeds:  # a step of this size takes about params/params_before as long
            last = max(speeds)
            ratio = parameters(mc) / parameters(ModelConfig(**{**mc.to_dict(), "hidden_size":
                                                                last}))
            if 4 * batch * seq * ratio / speeds[last].train > budget_s - spent:
                break
        if not measured:
            what = "each model size" if len(sizes) > 1 else f"the {base.layers}x{h} model"
            say(f"calibrating: timing a few training steps of {what} on {describe(device)} "
                f"(once; cached in {_cache_path()})")
            measured = True
        start = time.perf_counter()
        speeds[h] = cache[key] = measure(device, mc, batch, seq, amp)
        spent += time.perf_counter() - start
        if spent >= budget_s or too_big(h, speeds[h]):
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
