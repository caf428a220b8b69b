"""How fast a run goes: its steps and evaluations timed apart, over the whole run (for
`charrnn info` and the calibration cache) and since the last evaluation (what a re-plan
follows: the recent speed, not the whole run's)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from charrnn.fileio import positive_number
from charrnn.threads import SHARE_MIN

# characters a second: a recorded speed outside these is damage (or a planted number), not a
# machine; numbers at a float's edges would overflow the plans made from them
SLOWEST, FASTEST = 1e-3, 1e10


def speed_value(value) -> float:
    """A speed read from a file (a calibration cache, a run's config.json), or ValueError."""
    speed = positive_number(value)
    if not SLOWEST <= speed <= FASTEST:
        raise ValueError(f"a speed of {value!r} characters a second")
    return speed


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


class Timing:
    """This process's own speed, its training steps and its evaluations timed apart. The first
    steps of a process allocate and pick kernels: they are not counted."""

    WARM_UP = 3  # steps

    def __init__(self):
        self.seen = 0  # steps, counted or not
        self.steps = 0
        self.chars = self.seconds = 0.0
        self.by_threads: dict[int, list[float]] = {}  # threads -> [chars, seconds, cpu seconds]
        self.evals = 0
        self.eval_chars = self.eval_seconds = 0.0
        self.pause_seconds = 0.0  # evaluations with their checkpoints and samples
        self.recent_steps, self.recent_seconds = 0, 0.0  # since the last evaluation
        self.last_pause = 0.0  # the last evaluation's, its checkpoint and sample included

    def step(self, chars: int, seconds: float, cpu: float, n_threads: int) -> None:
        self.seen += 1
        self.recent_steps += 1
        self.recent_seconds += seconds
        if self.seen <= self.WARM_UP:
            return
        self.steps += 1
        self.chars += chars
        self.seconds += seconds
        row = self.by_threads.setdefault(n_threads, [0.0, 0.0, 0.0])
        row[0] += chars
        row[1] += seconds
        row[2] += cpu

    def evaluation(self, chars: int, seconds: float, pause: float) -> None:
        self.evals += 1
        self.eval_chars += chars
        self.eval_seconds += seconds
        self.pause_seconds += pause
        self.last_pause = pause

    def recent(self) -> tuple[float, int]:
        """(seconds a step since the last evaluation, steps timed), and a new stretch begins."""
        per_step = self.recent_seconds / max(self.recent_steps, 1)
        steps = self.recent_steps
        self.recent_steps, self.recent_seconds = 0, 0.0
        return per_step, steps

    def speed(self) -> Speed | None:
        if not self.steps or not self.evals:
            return None
        return Speed(train=self.chars / max(self.seconds, 1e-9),
                     eval=self.eval_chars / max(self.eval_seconds, 1e-9))

    def steady(self, n_threads: int, device: torch.device) -> Speed | None:
        """The speed at `n_threads`, if long enough to trust (and, on a CPU, with the CPU
        time they asked for): what the calibration cache learns."""
        chars, seconds, cpu = self.by_threads.get(n_threads, (0.0, 0.0, 0.0))
        if seconds < 3.0 or not self.evals:
            return None
        share = cpu / (seconds * n_threads) if device.type == "cpu" else 1.0
        return Speed(train=chars / seconds, eval=self.eval_chars / max(self.eval_seconds, 1e-9),
                     share=min(share, 1.0))
