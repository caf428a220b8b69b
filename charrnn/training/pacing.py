"""How a run keeps to its machine and its budget while it trains: the threads follow the load,
the plan is checked once against the run's own speed, and what the run measured of itself is
kept for `charrnn info` and taught to the calibration cache. Functions of a Trainer `t`."""

from __future__ import annotations

import math
from dataclasses import asdict

from charrnn import checkpoint
from charrnn.training import calibrate
from charrnn.training import plan as planning
from charrnn.training.plan import Plan


def follow_load(t, chars: int) -> None:
    """Let the governor change the threads, and say when it does."""
    said = len(t.governor.moves)
    t.governor.tick(chars)
    if len(t.governor.moves) > said:
        n = t.governor.moves[-1][1]
        why = ("other work is using this machine's cores" if n < t.setup.threads.most
               else "the machine's cores are free again")
        t.reporter.say(f"{why}: training on {n} thread{'s' if n != 1 else ''} from step "
                       f"{t.step}")


def check_plan(t) -> None:
    """Once, early in a time-budget run: the run's own speed against its plan's, and the
    rest of the budget planned again if the end would be off by more than the margin
    (charrnn/training/plan.py). Recorded in config.json at once, so --resume follows it
    exactly. In a torchrun job rank 0 decides, and the others take its plan."""
    plan, timing = t.setup.plan, t.timing
    # in a torchrun job by the step alone: the ranks count the same steps, not the same time
    elapsed, timed = ((0.0, math.inf) if t.world.distributed
                      else (t.elapsed, timing.seconds))
    if plan is None or not plan.check_due(t.step, elapsed, timing.steps, timed):
        return
    new = None
    if t.world.is_writer:
        s = t.train_streams
        new = planning.checked(plan, t.step, t.elapsed, timing, s.batch * s.seq_len,
                               user_eval_every=t.cfg.eval_every is not None)
    if t.world.distributed:
        new = Plan.from_dict(t.world.broadcast_json(asdict(new) if new else None))
    t.setup.plan = new
    if t.world.is_writer:
        with t.saving():
            checkpoint.write_config(t.run, t.config_dict())
    if new.replanned:
        t.setup.total_steps = t.schedule.total_steps = new.steps
        t.schedule.bend_at, t.schedule.first_total = new.checked_at, new.first_steps
        t.reporter.say(
            f"planned again at step {t.step}: this run trains at "
            f"{timing.chars / max(timing.seconds, 1e-9):,.0f} chars/s, not the "
            f"{plan.chars_per_sec:,.0f} planned, so {new.steps:,} steps fill the "
            f"{plan.seconds:g} s budget instead of {plan.steps:,}")


def learn_speed(t) -> None:
    """What the run measured of itself: kept in config.json (for `charrnn info` and a later
    --time), and taught to the calibration cache."""
    speed = t.timing.speed()
    if speed is None:
        return
    t.measured = speed
    if not t.world.is_writer:
        return
    with t.saving():
        checkpoint.write_config(t.run, t.config_dict())
    n = t.setup.threads.count
    steady = t.timing.steady(n, t.device)
    if steady is not None and not t.world.distributed:  # (the cache: one process's)
        s, mc = t.train_streams, t.model.config
        calibrate.learn(calibrate.cache_key(t.device, mc, s.batch, s.seq_len, t.cfg.amp,
                                            threads=n), steady)


def clock_stop_line(t) -> str:
    """Why a run the clock stopped ended before its planned end."""
    plan, speed = t.setup.plan, t.timing.speed()
    measured = f"{speed.train:,.0f} chars/s" if speed else "an unknown speed"
    return (f"the clock stopped the run {planning.CLOCK_MARGIN / 2:.0%} past its "
            f"{plan.seconds:g} s budget, before its planned end: this machine trained at "
            f"{measured} against the {plan.chars_per_sec:,.0f} planned (other work on it, or a "
            "slower device)")
