"""What a training run asks of its budget, and tells it: when to evaluate, where the run ends,
how far along its schedule a step is, whether the clock has run out; the steps and evaluations
timed. A run of steps or epochs has no plan: it ends at its planned steps and evaluates every
`eval_every`. A time budget's plan is made again after every evaluation from the recent speed
(charrnn/budget/plan.py); in a torchrun job rank 0 makes it, and `share` sends it to all.
"""

from __future__ import annotations

import math
from typing import Callable

from charrnn.budget.plan import CLOCK_MARGIN, Plan
from charrnn.budget.speed import Speed, Timing

# the first plan, made from a few calibration steps, is checked once before the first
# evaluation: after CHECK_STEPS steps over CHECK_SECONDS (or CHECK_SHARE of the budget, if
# less); in a torchrun job, whose ranks must agree without their clocks, at CHECK_SHARE of
# its planned steps
CHECK_STEPS, CHECK_SECONDS, CHECK_SHARE = 5, 1.0, 0.02


class Pacer:
    """The budget of one run, as the loop sees it."""

    def __init__(self, plan: Plan | None, steps: int | None, eval_every: int, warmup: int,
                 chars_per_step: int, keep_eval_every: bool = False,
                 share: Callable[[Plan | None], Plan] | None = None):
        self.plan = plan  # a time budget's, re-planned as the run goes; None: a run of steps
        self.steps, self.eval_every = steps, eval_every  # (a run of steps or epochs)
        self.warmup, self.chars_per_step = warmup, chars_per_step
        self.keep_eval_every = keep_eval_every  # the user gave --eval-every: it stays
        self.share = share or (lambda plan: plan)
        self.by_steps = share is not None  # a torchrun job: checked by the step, not the clock
        self.timing = Timing()

    @property
    def end(self) -> int:
        """The step the run ends at, as planned now."""
        if self.plan is None:
            return self.steps
        return self.plan.end if self.steps is None else min(self.plan.end, self.steps)

    def evaluate_after(self, step: int) -> bool:
        return self.plan.eval_due(step) if self.plan else step % self.eval_every == 0

    def progress(self, step: int) -> float:
        """How much of the planned run `step` has done, 0 to 1: what the learning-rate
        schedule follows."""
        if self.plan:
            return self.plan.progress(step, self.warmup)
        w = self.warmup
        return min(max(step - w, 0) / max(self.end - w, 1), 1.0)

    def over_time(self, elapsed: float) -> bool:
        """Whether the clock stops the run: only past the budget's margin (a machine that
        slowed suddenly), and never for a repeated plan."""
        return bool(self.plan) and not self.plan.repeat and elapsed >= self.plan.clock_limit

    def stepped(self, seconds: float, cpu: float, threads: int) -> None:
        self.timing.step(self.chars_per_step, seconds, cpu, threads)

    def evaluated(self, chars: int, seconds: float, pause: float) -> None:
        self.timing.evaluation(chars, seconds, pause)

    def check_due(self, step: int) -> bool:
        """Whether the first plan is checked after this step (once, before any evaluation)."""
        p, t = self.plan, self.timing
        if not p or p.repeat or p.replans or t.evals or step >= p.end:
            return False
        if self.by_steps:
            return step == max(math.ceil(CHECK_SHARE * p.steps), CHECK_STEPS)
        return t.recent_steps >= CHECK_STEPS and \
            t.recent_seconds >= min(CHECK_SECONDS, CHECK_SHARE * p.loop_seconds)

    def replan(self, step: int, elapsed: float, writer: bool = True,
               evaluating: float = 0.0) -> Plan | None:
        """After the evaluation of `step`, `elapsed` seconds of training in (the evaluation's
        `evaluating` seconds so far included): the rest of a time budget planned again from
        the recent speed, and the plan returned, to be recorded; None where there is nothing
        to plan again (a run of steps, a repeated plan, the end, a step whose re-plan is
        already recorded: a resumed run follows it). In a torchrun job rank 0 (`writer`) plans,
        and `share` gives every rank its plan."""
        per_step, timed = self.timing.recent()
        plan = self.plan
        if not plan or plan.repeat or (plan.replans and step <= plan.replans[-1].at):
            return None
        new = None
        if writer and timed:
            per_eval = max(self.timing.last_pause, evaluating)  # its checkpoint, its sample
            if not per_eval:  # none timed yet: the plan's, off by as much as its steps were
                planned = self.chars_per_step / plan.chars_per_sec
                per_eval = plan.eval_chars / plan.eval_chars_per_sec * per_step / planned
            new = plan.replanned(step, elapsed, per_step, per_eval,
                                 self.chars_per_step / max(per_step, 1e-9),
                                 self.keep_eval_every)
        new = self.share(new)
        if new is None:
            return None
        self.plan = new
        return new

    def clock_stop_line(self) -> str:
        """Why the clock stopped a run before its planned end."""
        p = self.plan
        recent = (f"{p.replans[-1].chars_per_sec:,.0f} chars/s when last planned"
                  if p.replans else f"{p.chars_per_sec:,.0f} chars/s as calibrated")
        speed = self.timing.speed()
        now = f"{speed.train:,.0f} chars/s over the run" if speed else "an unknown speed"
        return (f"the clock stopped the run {CLOCK_MARGIN:.0%} of its {p.seconds:g} s budget "
                f"past it, before its planned end: the machine slowed suddenly after the plan "
                f"was last made ({recent}; {now}); other work on it, or a slower device")

    def state_dict(self) -> dict:
        """What a re-plan will read of the stretch since the last evaluation: saved with the
        run, so a resumed run plans again as an uninterrupted one would."""
        t = self.timing
        return {"recent_steps": t.recent_steps, "recent_seconds": t.recent_seconds,
                "last_pause": t.last_pause}

    def load_state_dict(self, state: dict) -> None:
        t = self.timing
        t.recent_steps = int(state["recent_steps"])
        t.recent_seconds = float(state["recent_seconds"])
        t.last_pause = float(state["last_pause"])

    def speed(self) -> Speed | None:
        return self.timing.speed()
