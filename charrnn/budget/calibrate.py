"""Calibration: how many characters per second this device trains (and validates) each
candidate size, timed for a few steps each within a wall-time cap whatever the load, and cached
per device, thread count and torch version, so the next run starts at once. A timing taken
while the process did not get the CPU it asked for is used but never cached; every run teaches
the cache its own steady speed.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch

from charrnn.budget.rule import LR, parameters
from charrnn.budget.speed import Speed, speed_value
from charrnn.config import ModelConfig, TrainConfig
from charrnn.device import name_of, synchronize
from charrnn.engine.distributed import SINGLE, World
from charrnn.engine.step import StepRunner
from charrnn.fileio import atomic_write_text, read_json_object
from charrnn.model import CharRNN
from charrnn.threads import SHARE_MIN

CALIBRATION_SHARE, CALIBRATION_MAX_S = 0.05, 15.0  # of the budget, at most, in wall time
CACHE_FORMAT = 3
CACHE_SAMPLES = 5  # the latest timings kept for each model, device and batch
SUSPECT = 4.0  # a cached speed this many times slower than a smaller size's says: timed again


def _cache_path() -> Path:
    from charrnn.data.corpus import cache_dir

    return cache_dir() / "calibration.json"


def _read_cache(say=None) -> dict[str, list[dict]]:
    """The recent timings of each key; a missing, damaged or foreign file counts as empty (and
    is rebuilt), and so does any entry that is not a list of plausible speeds (said to `say`,
    once: a planted 1e308 would otherwise plan a run of more steps than a float holds)."""
    data = read_json_object(_cache_path())
    if data.get("format") != CACHE_FORMAT or not isinstance(data.get("speeds"), dict):
        return {}
    cache, damaged = {}, 0
    for key, samples in data["speeds"].items():
        try:
            cache[key] = [{"train": speed_value(t["train"]), "eval": speed_value(t["eval"]),
                           "source": str(t.get("source", "calibration"))}
                          for t in samples][-CACHE_SAMPLES:]
        except (TypeError, KeyError, ValueError, AttributeError):
            damaged += 1
    if damaged and say is not None:
        say(f"left out {damaged} damaged entr{'ies' if damaged != 1 else 'y'} of the "
            f"calibration cache {_cache_path()}; timing anew")
    return cache


def _write_cache(cache: dict[str, list[dict]]) -> None:
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
    return (f"{name_of(device, threads)} | torch {torch.__version__} | {mc.model} {mc.layers}x"
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
    cache = _read_cache(say)
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
        if left <= 0:
            break  # the time for calibrating is spent: plan from what is known
        if speeds:  # a step of this size takes about params/params_before as long
            last = max(speeds)
            ratio = parameters(mc) / parameters(_sized(mc, last))
            if 5 * batch * seq * ratio / speeds[last].train > left:
                break
        if not said:
            what = "each model size" if len(sizes) > 1 else f"the {base.layers}x{h} model"
            say(f"calibrating: timing a few training steps of {what} on {name_of(device)} "
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
        say(_busy_line(busy, base.layers, budget_s))
    return speeds


def _busy_line(busy: list[tuple[int, Speed]], layers: int, budget_s: float) -> str:
    """Why the timings in `busy` ((hidden size, speed)...) are not cached, in one line."""
    h, speed = min(busy, key=lambda hs: (hs[1].share, hs[1].cut))
    if speed.share < SHARE_MIN:
        why = (f"the machine was busy while timing (the {layers}x{h} model's threads "
               f"got {speed.share:.0%} of the CPU they asked for)")
    else:
        why = (f"the time for calibrating ({budget_s:.1f} s) ran out before the "
               f"{layers}x{h} model was timed whole")
    return (f"{why}: planning from what was measured, not caching it, and checking the plan "
            "against the run's own speed early in the run")


def calibration_budget(seconds: float) -> float:
    return min(CALIBRATION_SHARE * seconds, CALIBRATION_MAX_S)
