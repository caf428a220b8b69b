"""The plan of a time budget: the budget turned into steps and evaluations at the start, from the
calibrated speed, then planned again at every evaluation from the run's recent speed, so that
the run ends at its budget on a machine whose speed drifts. Every re-plan is recorded (in
config.json), so --resume and --plan-from follow the run step for step. The learning-rate
schedule is defined on the fraction of the planned run done, which each re-plan bends
smoothly (`Plan.progress`). The clock is a safety stop for a machine that slows suddenly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from charrnn.budget.speed import Speed, speed_value
from charrnn.config import TrainConfig
from charrnn.fileio import positive_number

EVALUATIONS = 20  # evaluations planned over a run: enough for the plateau rule to see a trend
EVAL_SHARE = 0.08  # at most this share of a run's time goes to evaluation
EVAL_CHARS = 200_000  # validation characters, at most, unless --eval-chars says otherwise
EVAL_COST = 1 / 3  # a validation character's cost against a training one's: forward only
MIN_EVAL_CHARS = 16_384
END_SHARE = 0.005  # of the budget, left after the planned end for the run's last writes
FIRST_SHARE = 0.03  # of the budget, kept spare by the first plan (made from a short timing)
CLOCK_MARGIN = 0.05  # the clock stops a run this share of its budget past it, whatever else


@dataclass(frozen=True)
class Replan:
    """The rest of a run planned again, at the evaluation of step `at`."""

    at: int
    steps: int  # where the run now ends
    eval_every: int  # the evaluations from `at` on
    chars_per_sec: float  # the recent training speed it was planned from
    eval_seconds: float  # and an evaluation's recent cost, its checkpoint and sample included


@dataclass(frozen=True)
class Plan:
    """A time budget as steps: what --resume follows, recorded in config.json."""

    seconds: float  # the budget
    steps: int  # training steps planned at the start
    eval_every: int
    eval_chars: int
    chars_per_sec: float  # the speeds the first plan was made from
    eval_chars_per_sec: float
    setup_seconds: float = 0.0  # of the budget, spent before training (loading, calibrating)
    replans: tuple[Replan, ...] = field(default=())
    repeat: bool = False  # another run's plan, followed step for step: no re-plan, no clock

    @property
    def end(self) -> int:
        """The step the run ends at, as last planned."""
        return self.replans[-1].steps if self.replans else self.steps

    @property
    def loop_seconds(self) -> float:
        """The part of the budget left for training, once the run was set up."""
        return max(self.seconds - self.setup_seconds, 0.0)

    @property
    def clock_limit(self) -> float:
        """Seconds of training after which the clock stops the run, CLOCK_MARGIN of the
        budget past it: only a machine that slowed suddenly, after the last re-plan, gets
        there."""
        return self.loop_seconds + CLOCK_MARGIN * self.seconds

    def _knots(self) -> list[tuple[int, int, int]]:
        """(from step, to the end at step, evaluating every) of each stretch of the run."""
        knots = [(0, self.steps, self.eval_every)]
        return knots + [(r.at, r.steps, r.eval_every) for r in self.replans]

    def eval_due(self, step: int) -> bool:
        at, _, every = next(k for k in reversed(self._knots()) if k[0] < step or k[0] == 0)
        return (step - at) % every == 0

    def progress(self, step: int, warmup: int = 0) -> float:
        """How much of the planned run `step` has done, from 0 (the end of the warm-up) to 1
        (the planned end): linear between re-plans, each of which starts from where the run
        then stood, so a re-plan bends the learning-rate schedule and never jumps it."""
        done, start, end = 0.0, warmup, self.steps
        for at, steps, _ in self._knots()[1:]:
            if step <= at:
                break
            if at > start:
                done += (1 - done) * min((at - start) / max(end - start, 1), 1.0)
                start = at
            end = steps
        return min(done + (1 - done) * max(step - start, 0) / max(end - start, 1), 1.0)

    def replanned(self, step: int, elapsed: float, per_step: float, per_eval: float,
                  chars_per_sec: float, keep_eval_every: bool = False) -> Plan | None:
        """The rest planned again at `step`, `elapsed` seconds of training in, from the recent
        seconds a step and an evaluation (its checkpoint and sample included): as many
        evaluations as were left, the last at the new end, which falls END_SHARE of the budget
        before the budget's; with `keep_eval_every` (the user gave it), the evaluations keep
        their interval instead, and grow in number with the steps. At the planned end, the run
        goes on only if time enough is left (its plan was made from too slow a speed); None:
        it ends here."""
        _, end, every = next(k for k in reversed(self._knots()) if k[0] < step or k[0] == 0)
        left = self.loop_seconds - END_SHARE * self.seconds - elapsed
        if step >= end:
            spare = left - per_eval
            if spare < max(FIRST_SHARE * self.seconds, 10 * per_step):
                return None
            evaluations = max(1, math.ceil(EVALUATIONS * spare / max(self.loop_seconds, 1e-9)))
        else:
            evaluations = max(math.ceil((end - step) / every), 1)
        if keep_eval_every:
            steps = max(int(left / (per_step + per_eval / every)), 1)
        else:
            every = max(int((left - evaluations * per_eval) / max(per_step, 1e-9) /
                            evaluations), 1)
            steps = every * evaluations
        return replace(self, replans=self.replans + (
            Replan(step, step + steps, every, chars_per_sec, per_eval),))

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("seconds", "steps", "eval_every", "eval_chars",
                                           "chars_per_sec", "eval_chars_per_sec",
                                           "setup_seconds", "repeat")}
        d["replans"] = [asdict(r) for r in self.replans]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        """A plan read back from config.json (a stranger's, perhaps: every field checked)."""
        def whole(value, key):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} is {value!r}")
            return value

        setup = d.get("setup_seconds", 0.0)
        if isinstance(setup, bool) or not isinstance(setup, (int, float)) or \
                not 0 <= setup < math.inf:
            raise ValueError(f"setup_seconds is {setup!r}")
        replans = d.get("replans", [])
        if not isinstance(replans, list):
            raise ValueError("replans is not a list")
        steps, every = whole(d.get("steps"), "steps"), whole(d.get("eval_every"), "eval_every")
        if d.get("first_steps") is not None:  # a plan of an older charrnn: checked once
            replans = [{"at": d.get("checked_at"), "steps": steps, "eval_every": every,
                        "chars_per_sec": d["chars_per_sec"], "eval_seconds": 0.0}]
            steps = whole(d.get("first_steps"), "first_steps")
            every = whole(d.get("first_eval_every"), "first_eval_every")
        checked, last = [], 0
        for r in replans:
            if not isinstance(r, dict):
                raise ValueError("a re-plan is not an object")
            at = whole(r.get("at"), "a re-plan's step")
            if at <= last:
                raise ValueError("the re-plans are out of order")
            checked.append(Replan(at, whole(r.get("steps"), "a re-plan's steps"),
                                  whole(r.get("eval_every"), "a re-plan's eval_every"),
                                  speed_value(r.get("chars_per_sec")),
                                  _seconds(r.get("eval_seconds"))))
            last = at
        return cls(seconds=positive_number(d["seconds"]), steps=steps, eval_every=every,
                   eval_chars=whole(d.get("eval_chars"), "eval_chars"),
                   chars_per_sec=speed_value(d["chars_per_sec"]),
                   eval_chars_per_sec=speed_value(d["eval_chars_per_sec"]),
                   setup_seconds=float(setup), replans=tuple(checked),
                   repeat=d.get("repeat") is True)


def _seconds(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not 0 <= value < math.inf:
        raise ValueError(f"{value!r} is not a number of seconds")
    return float(value)


def first_plan(seconds: float, speed: Speed, cfg: TrainConfig, val_chars: int,
               setup_seconds: float = 0.0) -> Plan:
    """Steps and evaluations that fill `seconds` at `speed`, `setup_seconds` of them already
    spent. Evaluation takes at most EVAL_SHARE of the budget: first fewer validation characters
    (down to MIN_EVAL_CHARS), then fewer evaluations; training takes the rest, less what the
    first re-plan may need (FIRST_SHARE) and the end's (END_SHARE)."""
    chars_per_step = cfg.batch_size * cfg.seq_len
    eval_chars = max(min(cfg.eval_chars or EVAL_CHARS, val_chars), 2)
    share = EVAL_SHARE * seconds
    if EVALUATIONS * eval_chars / speed.eval > share:
        eval_chars = max(int(share * speed.eval / EVALUATIONS), min(MIN_EVAL_CHARS, eval_chars))
    one_eval = eval_chars / speed.eval  # seconds
    usable = max(seconds - setup_seconds - (FIRST_SHARE + END_SHARE) * seconds, 0.0)
    if cfg.eval_every:  # the user's interval: evaluations grow with the steps
        per_step = chars_per_step / speed.train + one_eval / cfg.eval_every
        steps = max(int(usable / per_step), 1)
        eval_every = cfg.eval_every
    else:
        evaluations = max(1, min(EVALUATIONS, int(share / one_eval)))
        steps = max(int((usable - evaluations * one_eval) * speed.train / chars_per_step), 1)
        eval_every = max(steps // evaluations, 1)
        steps = eval_every * evaluations  # the last evaluation at the end
    return Plan(seconds=seconds, steps=steps, eval_every=eval_every, eval_chars=eval_chars,
                chars_per_sec=speed.train, eval_chars_per_sec=speed.eval,
                setup_seconds=setup_seconds)


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
