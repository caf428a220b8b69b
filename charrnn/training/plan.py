"""The plan of a time budget: the budget turned into steps and an evaluation interval at the
start, so that the run follows steps and validation (the clock is a safety stop); the run's
own speed checked against it early, and the rest planned again once if it is off; and the
evaluations of a budget of steps or epochs kept to a small share of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from charrnn.config import TrainConfig
from charrnn.fileio import positive_number
from charrnn.training.timing import Speed

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
        return cls(seconds=positive_number(d["seconds"]), steps=whole("steps"),
                   eval_every=whole("eval_every"), eval_chars=whole("eval_chars"),
                   chars_per_sec=positive_number(d["chars_per_sec"]),
                   eval_chars_per_sec=positive_number(d["eval_chars_per_sec"]),
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


def checked(p: Plan, step: int, elapsed: float, timing, chars_per_step: int,
            user_eval_every: bool) -> Plan:
    """The plan checked at `step` against what `timing` (training.timing.Timing) measured of
    the run: `replan` from its seconds a step and an evaluation (none timed yet: the plan's,
    off by as much as its training speed was)."""
    per_step = timing.seconds / timing.steps
    planned_step = chars_per_step / p.chars_per_sec
    per_eval = (timing.pause_seconds / timing.evals if timing.evals else
                p.eval_chars / p.eval_chars_per_sec * per_step / planned_step)
    return replan(p, step, elapsed, per_step, per_eval, user_eval_every)
