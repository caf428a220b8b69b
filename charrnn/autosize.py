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
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from charrnn.config import ModelConfig, TrainConfig
from charrnn.device import describe, synchronize
from charrnn.distributed import SINGLE, World
from charrnn.threads import SHARE_MIN

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
# Dropout helps where the model can memorise the text: by the grid, once the characters seen
# times the parameters, over the unique characters squared (passes over the corpus, per unique
# character per parameter), reach DROPOUT_FROM; below, it only costs (benchmarks/fit.py)
DROPOUT_FROM = 5.0
MAX_DROPOUT = 0.3

TRAIN_SHARE = 0.85  # of a time budget, about what goes to training steps
OVERHEAD_SHARE = 0.05  # of a time budget, kept for checkpoints and the display
EVALUATIONS = 20  # evaluations planned over a run: enough for the plateau rule to see a trend
EVAL_SHARE = 0.08  # at most this share of a run's time goes to evaluation
EVAL_CHARS = 200_000  # validation characters, at most, unless --eval-chars says otherwise
EVAL_COST = 1 / 3  # a validation character's cost against a training one's: forward only
MIN_EVAL_CHARS = 16_384
# after REPLAN_AFTER of its steps, a run whose own speed puts its end further than
# REPLAN_MARGIN of the budget from the plan's is planned again, once
REPLAN_AFTER, REPLAN_MARGIN = 0.1, 0.05
CHECK_STEPS, CHECK_SECONDS = 5, 1.0  # timed, at least, before a run's speed is checked
CLOCK_MARGIN = 0.1  # the clock stops a run this share of its budget past it, whatever else
CALIBRATION_SHARE, CALIBRATION_MAX_S = 0.05, 15.0  # of the budget, at most, in wall time
CACHE_FORMAT = 3
CACHE_SAMPLES = 5  # the latest timings kept for each model, device and batch
SUSPECT = 4.0  # a cached speed this many times slower than a smaller size's says: timed again


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


def memorising(seen: float, unique: float, hidden_params: int) -> float:
    """How far a budget lets a model memorise its corpus: the passes over it, times the
    parameters per unique character (the grid's measure of when dropout helps)."""
    unique = max(unique, 1)
    return seen / unique * hidden_params / unique


def dropout_for(seen: float, unique: float, hidden_params: int) -> float:
    """No dropout until `memorising` reaches DROPOUT_FROM; then 0.1, and 0.1 more each time it
    grows fourfold, up to MAX_DROPOUT (the grid measured the first step: 0.1 from 5, where 0.2
    at 6.8 did worse than 0.1; the steps past it are the rule's guess)."""
    m = memorising(seen, unique, hidden_params)
    if m < DROPOUT_FROM:
        return 0.0
    return round(min(MAX_DROPOUT, 0.1 * (1 + math.floor(math.log(m / DROPOUT_FROM, 4)))), 2)


@dataclass
class Speed:
    train: float  # characters per second, training
    eval: float  # characters per second, validation (forward only)
    share: float = 1.0  # of the CPU time its threads asked for, what the timing got
    cut: bool = False  # the wall-time cap ended the timing before its steps were done

    @property
    def clean(self) -> bool:
        """Timed whole, with the CPU it asked for: worth keeping for the next run."""
        return self.share >= SHARE_MIN and not self.cut


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
    mc = ModelConfig(vocab_size=vocab_size, model=model, layers=layers, hidden_size=hidden,
                     embedding_size=embedding, dropout=0.0)
    dropout = given_model.get("dropout", dropout_for(seen, corpus_chars, parameters(mc)))
    chosen = [k for k in ("layers", "hidden_size", "embedding_size", "dropout")
              if k not in given_model] + [k for k in train if not given_train.get(k)]
    why = (f"about {seen:,} characters fit in {_fmt_seconds(seconds)} at "
           f"{speeds[hidden].train:,.0f} chars/s on {where}" if chars is None else
           f"a budget of {seen:,} characters")
    passes = seen / max(corpus_chars, 1)
    if "dropout" in chosen and dropout:
        why += (f"; dropout {dropout:g} as that is {passes:.0f} passes over the corpus, enough "
                "for this size to memorise it")
    reason = f"{layers}x{hidden} {model}: {why}"
    return Choice(model={"layers": layers, "hidden_size": hidden, "embedding_size": embedding,
                         "dropout": dropout},
                  train=train, chosen=chosen, chars=seen, reason=reason)


# ---------------------------------------------------------------------------------------------
# Calibration


def _cache_path() -> Path:
    from charrnn.corpus import cache_dir

    return cache_dir() / "calibration.json"


def _number(value) -> float:
    """A positive, finite number from JSON, or ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(value)
    value = float(value)
    if not 0 < value < math.inf:
        raise ValueError(value)
    return value


def _read_cache() -> dict[str, list[dict]]:
    """The recent timings of each key; a missing, damaged or foreign file counts as empty (and
    is rebuilt), and so does any entry that is not a list of positive speeds."""
    from charrnn.fileio import read_json_object

    data = read_json_object(_cache_path())
    if data.get("format") != CACHE_FORMAT or not isinstance(data.get("speeds"), dict):
        return {}
    cache = {}
    for key, samples in data["speeds"].items():
        try:
            cache[key] = [{"train": _number(t["train"]), "eval": _number(t["eval"]),
                           "source": str(t.get("source", "calibration"))}
                          for t in samples][-CACHE_SAMPLES:]
        except (TypeError, KeyError, ValueError, AttributeError):
            continue
    return cache


def _write_cache(cache: dict[str, list[dict]]) -> None:
    from charrnn.fileio import atomic_write_text

    data = {"format": CACHE_FORMAT, "speeds": cache}
    try:
        atomic_write_text(_cache_path(), json.dumps(data, indent=1) + "\n")
    except OSError:
        pass  # a cache we cannot write only costs the next run its calibration


def estimate(samples: list[dict]) -> Speed | None:
    """The speed a key's recent timings say. Other work on the machine only ever makes a timing
    slower, never faster: timings under half the fastest are left out, and of the rest the
    median is taken, so one slow moment neither stays nor drags the others down."""
    if not samples:
        return None

    def robust(values: list[float]) -> float:
        return statistics.median([v for v in values if v >= max(values) / 2])
    return Speed(train=robust([t["train"] for t in samples]),
                 eval=robust([t["eval"] for t in samples]))


def cached(key: str) -> Speed | None:
    return estimate(_read_cache().get(key, []))


def learn(key: str, speed: Speed, source: str = "run") -> None:
    """Add a timing of `key` to the cache (a clean one: a busy moment is never kept)."""
    if not speed.clean:
        return
    cache = _read_cache()
    samples = cache.get(key, []) + [{"train": speed.train, "eval": speed.eval,
                                     "source": source}]
    cache[key] = samples[-CACHE_SAMPLES:]
    _write_cache(cache)


def cache_key(device: torch.device, mc: ModelConfig, batch: int, seq: int, amp: bool,
              threads: int | None = None) -> str:
    # the vocabulary rounded up to a power of two: corpora of similar alphabets share entries
    vocab = 1 << max(mc.vocab_size - 1, 63).bit_length()
    # dropout matters: drawing its masks costs time on a CPU
    return (f"{describe(device, threads)} | torch {torch.__version__} | {mc.model} {mc.layers}x"
            f"{mc.hidden_size} emb {mc.embedding_size} vocab {vocab}"
            f"{' dropout' if mc.dropout else ''} | batch {batch}x{seq}{' amp' if amp else ''}")


def measure(device: torch.device, mc: ModelConfig, batch: int, seq: int, amp: bool,
            min_seconds: float = 0.25, world: World = SINGLE,
            deadline: float | None = None) -> Speed:
    """Train and validate a fresh model of this size on random ids for a few steps. Each step
    is timed alone and the median kept: one step stalled by another process does not count;
    and the process's CPU time is read beside the wall time, so a timing whose threads did not
    get their cores says so (`Speed.share`). At `deadline` (time.perf_counter) it stops with
    what it has. In a torchrun job every rank runs it at once on its share `batch`, exchanging
    gradients as training does: the job's speed, at its slowest rank's pace."""
    from charrnn.model import CharRNN
    from charrnn.train import StepRunner

    deadline = None if world.distributed else deadline  # (the same steps on every rank)
    torch.manual_seed(0)
    model = CharRNN(mc).to(device)
    runner = StepRunner(model, TrainConfig(device=str(device), amp=amp, lr=LR), device, world)
    x = torch.randint(mc.vocab_size, (batch, seq), device=device)
    y = torch.randint(mc.vocab_size, (batch, seq), device=device)
    hidden = model.init_state(batch, device)

    def late() -> bool:
        return deadline is not None and time.perf_counter() >= deadline

    def timed(fn) -> float:
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        return time.perf_counter() - start

    def step():
        nonlocal hidden
        _, hidden = runner.step(x, y, hidden, LR)

    warm = [timed(step) for _ in range(2)]  # the first steps allocate and pick kernels
    times, cpu_start, wall_start = [], time.process_time(), time.perf_counter()
    while not late() and (len(times) < 3 or (sum(times) < min_seconds and len(times) < 20
                                             and not world.distributed)):
        times.append(timed(step))
    share = ((time.process_time() - cpu_start) /
             max((time.perf_counter() - wall_start) * torch.get_num_threads(), 1e-9)
             if device.type == "cpu" and times else 1.0)
    cut = len(times) < 3
    model.eval()
    with torch.no_grad(), runner.autocast():
        evals = [timed(lambda: model(x))]  # (its first call allocates: a slower figure)
        while len(evals) < 4 and not late():
            evals.append(timed(lambda: model(x)))
    train_s = statistics.median(times or warm[-1:])
    eval_s = statistics.median(evals[1:] or evals)
    if world.distributed:  # the slowest rank's, on every rank
        train_s, eval_s = (us / 1e6 for us in world.agree([round(train_s * 1e6),
                                                            round(eval_s * 1e6)]))
    chars = batch * world.size * seq
    return Speed(train=chars / train_s, eval=chars / eval_s, share=min(share, 1.0),
                 cut=cut or len(evals) < 2)


def _sized(mc: ModelConfig, hidden: int) -> ModelConfig:
    return ModelConfig(**{**mc.to_dict(), "hidden_size": hidden})


def calibrate(device: torch.device, base: ModelConfig, sizes: list[int], batch: int, seq: int,
              amp: bool, budget_s: float, say=lambda line: None,
              too_big=lambda hidden, speed: False, deadline: float | None = None
              ) -> dict[int, Speed]:
    """Speeds of each hidden size in `sizes` (smallest first), from the cache or measured,
    within `budget_s` seconds of wall time (or by `deadline`, time.perf_counter, if sooner),
    whatever the load. It stops at the first size `too_big` for the budget (the larger ones are
    slower still), and leaves out sizes too slow to time in what is left. A timing taken while
    the machine was busy is used for this run only, and said."""
    cache = _read_cache()
    end = time.perf_counter() + budget_s
    end = min(end, deadline) if deadline is not None else end
    speeds, said, busy = {}, False, []
    for h in sizes:
        mc = _sized(base, h)
        key = cache_key(device, mc, batch, seq, amp)
        known = estimate(cache.get(key, []))
        if known is not None and speeds:
            # a step's cost grows about with the parameters, or slower (small models pay fixed
            # costs): a cached speed far below what the size before it says was taken in a
            # busy moment; it is timed again
            last = max(speeds)
            like = speeds[last].train * parameters(_sized(mc, last)) / parameters(mc)
            known = known if known.train * SUSPECT >= like else None
        if known is not None:
            speeds[h] = known
            if too_big(h, known):
                break
            continue
        left = end - time.perf_counter()
        if speeds:  # a step of this size takes about params/params_before as long
            last = max(speeds)
            ratio = parameters(mc) / parameters(_sized(mc, last))
            if 5 * batch * seq * ratio / speeds[last].train > left:
                break
        if not said:
            what = "each model size" if len(sizes) > 1 else f"the {base.layers}x{h} model"
            say(f"calibrating: timing a few training steps of {what} on {describe(device)} "
                f"(once; cached in {_cache_path()})")
            said = True
        speed = measure(device, mc, batch, seq, amp, deadline=end)
        speeds[h] = speed
        if speed.clean:
            cache[key] = (cache.get(key, []) + [{"train": speed.train, "eval": speed.eval,
                                                 "source": "calibration"}])[-CACHE_SAMPLES:]
        else:
            busy.append((h, speed))
        if time.perf_counter() >= end or too_big(h, speed):
            break
    if said:
        _write_cache(cache)
    if busy:
        h, speed = min(busy, key=lambda hs: (hs[1].share, hs[1].cut))
        if speed.share < SHARE_MIN:
            why = (f"the machine was busy while timing (the {base.layers}x{h} model's threads "
                   f"got {speed.share:.0%} of the CPU they asked for)")
        else:
            why = (f"the time for calibrating ({budget_s:.1f} s) ran out before the "
                   f"{base.layers}x{h} model was timed whole")
        say(f"{why}: planning from what was measured, not caching it, and checking the plan "
            "against the run's own speed early in the run")
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
    chars_per_sec: float  # the speeds the plan was made from
    eval_chars_per_sec: float
    setup_seconds: float = 0.0  # of the budget, spent before training (loading, calibrating)
    # the step at which the run checked its own speed against the plan (see `replan`), and,
    # if it planned the rest again there, the steps and evaluation interval planned before
    checked_at: int | None = None
    first_steps: int | None = None
    first_eval_every: int | None = None
    repeat: bool = False  # another run's plan, followed step for step: no check, no clock

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        def whole(key):
            value = d.get(key)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} is {value!r}")
            return value
        setup = d.get("setup_seconds", 0.0)
        if isinstance(setup, bool) or not isinstance(setup, (int, float)) or \
                not 0 <= setup < math.inf:
            raise ValueError(f"setup_seconds is {setup!r}")
        return cls(seconds=_number(d["seconds"]), steps=whole("steps"),
                   eval_every=whole("eval_every"), eval_chars=whole("eval_chars"),
                   chars_per_sec=_number(d["chars_per_sec"]),
                   eval_chars_per_sec=_number(d["eval_chars_per_sec"]),
                   setup_seconds=float(setup), checked_at=whole("checked_at"),
                   first_steps=whole("first_steps"), first_eval_every=whole("first_eval_every"),
                   repeat=d.get("repeat") is True)

    @property
    def loop_seconds(self) -> float:
        """The part of the budget left for training, once the run was set up."""
        return max(self.seconds - self.setup_seconds, 0.0)

    @property
    def clock_limit(self) -> float:
        """Seconds of training after which the clock stops a run that its plan let overrun:
        half of CLOCK_MARGIN past the budget, the other half left for the last evaluation."""
        return self.loop_seconds + CLOCK_MARGIN / 2 * self.seconds

    @property
    def replanned(self) -> bool:
        return self.first_steps is not None

    def eval_due(self, step: int) -> bool:
        if self.replanned and step > self.checked_at:
            return (step - self.checked_at) % self.eval_every == 0
        return step % (self.first_eval_every or self.eval_every) == 0

    def check_due(self, step: int, elapsed: float, timed_steps: int,
                  timed_seconds: float) -> bool:
        """Whether the run checks its speed against the plan after this step: once it has
        timed CHECK_STEPS steps of its own over CHECK_SECONDS (or REPLAN_AFTER of the budget,
        if less) and is REPLAN_AFTER into its steps or its time; or at the planned end, if
        that comes first. Once: the check is recorded, and a resumed run does not check
        again."""
        if self.checked_at is not None or self.repeat or not timed_steps:
            return False
        early = step >= REPLAN_AFTER * self.steps or elapsed >= REPLAN_AFTER * self.loop_seconds
        enough = (timed_steps >= CHECK_STEPS and
                  timed_seconds >= min(CHECK_SECONDS, REPLAN_AFTER * self.loop_seconds))
        return (enough and early) or step >= self.steps


def plan(seconds: float, speed: Speed, cfg: TrainConfig, val_chars: int,
         setup_seconds: float = 0.0) -> Plan:
    """Steps and evaluations that fill `seconds` at `speed`, `setup_seconds` of them already
    spent. Evaluation takes at most EVAL_SHARE of the budget: first fewer validation characters
    (down to MIN_EVAL_CHARS), then fewer evaluations; training takes the rest, less
    OVERHEAD_SHARE."""
    chars_per_step = cfg.batch_size * cfg.seq_len
    eval_chars = max(min(cfg.eval_chars or EVAL_CHARS, val_chars), 2)
    share = EVAL_SHARE * seconds
    if EVALUATIONS * eval_chars / speed.eval > share:
        eval_chars = max(int(share * speed.eval / EVALUATIONS), min(MIN_EVAL_CHARS, eval_chars))
    one_eval = eval_chars / speed.eval  # seconds
    usable = max(seconds - setup_seconds, 0.0) * (1 - OVERHEAD_SHARE)
    if cfg.eval_every:  # the user's interval: evaluations grow with the steps
        per_step = chars_per_step / speed.train + one_eval / cfg.eval_every
        steps = max(int(usable / per_step), 1)
        eval_every = cfg.eval_every
    else:
        evaluations = max(1, min(EVALUATIONS, int(share / one_eval)))
        steps = max(int((usable - evaluations * one_eval) * speed.train / chars_per_step), 1)
        eval_every = max(steps // evaluations, 1)
    return Plan(seconds=seconds, steps=steps, eval_every=eval_every, eval_chars=eval_chars,
                chars_per_sec=speed.train, eval_chars_per_sec=speed.eval,
                setup_seconds=setup_seconds)


def replan(p: Plan, step: int, elapsed: float, per_step: float, per_eval: float,
           user_eval_every: bool) -> Plan:
    """The plan checked at `step`, with `elapsed` seconds of training behind it at `per_step`
    seconds a step and `per_eval` an evaluation (with its checkpoint): the rest planned again
    when the plan's end would fall further than REPLAN_MARGIN of the budget from the budget's,
    else the same plan. The evaluations left keep their number; the interval between them
    follows the steps (unless the user gave it)."""
    evaluations_left = max(math.ceil((p.steps - step) / p.eval_every), 1)
    target = p.loop_seconds * (1 - OVERHEAD_SHARE / 2)
    projected = elapsed + (p.steps - step) * per_step + evaluations_left * per_eval
    if abs(projected - target) <= REPLAN_MARGIN * p.loop_seconds:
        return replace(p, checked_at=step)
    if user_eval_every:  # the evaluations grow with the steps
        steps_left = max(int((target - elapsed) / (per_step + per_eval / p.eval_every)), 1)
        eval_every = p.eval_every
    else:
        steps_left = max(int((target - elapsed - evaluations_left * per_eval) / per_step), 1)
        eval_every = max(steps_left // evaluations_left, 1)
    return replace(p, steps=step + steps_left, eval_every=eval_every, checked_at=step,
                   first_steps=p.steps, first_eval_every=p.eval_every)


def eval_settings(steps: int, chars_per_step: int, val_chars: int, eval_every: int | None,
                  eval_chars: int | None) -> tuple[int, int]:
    """(eval_every, eval_chars) for a run of `steps` steps without a time budget: about
    EVALUATIONS evaluations, all of them together costing at most EVAL_SHARE of the training
    (a validation character costs about EVAL_COST of a training one: no backward pass)."""
    budget = EVAL_SHARE * steps * chars_per_step / EVAL_COST  # validation characters in all
    n = max(steps // eval_every, 1) if eval_every else min(EVALUATIONS, steps)
    chars = min(eval_chars or EVAL_CHARS, val_chars)
    if eval_chars is None and n * chars > budget:
        chars = max(int(budget / n), min(MIN_EVAL_CHARS, chars))
        n = max(1, min(n, int(budget / chars)))
    return (eval_every or max(steps // n, 1)), max(chars, 2)
