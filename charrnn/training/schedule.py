"""The learning-rate schedule and the stopping rule: they follow steps and validation, never
the clock, so a run is reproducible and resumes exactly.

The rate warms up linearly, then follows a cosine from `lr` down to `lr * min_lr_frac` over the
fraction of the planned run done (the budget's `Pacer.progress`: a re-plan bends it, never
jumps it). On top of that plan it reacts to validation, as char-rnn's learning_rate_decay
did: after `patience` evaluations without a new best, the rate is multiplied by `lr_decay`; and
after `max_decays` such decays in a row have brought no new best, the run stops. A long run on a
small corpus that starts to overfit while the cosine is still high thus lowers its rate at once
instead of waiting for the clock, which is what makes more time never give a worse model.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

# a new best must beat the old one by this fraction; noise in the last digits is no progress
MIN_IMPROVEMENT = 1e-4


@dataclass
class Schedule:
    lr: float  # peak learning rate, reached after warm-up
    warmup_steps: int = 50
    min_lr_frac: float = 0.05  # the cosine ends at lr * min_lr_frac
    patience: int = 3  # evaluations without a new best before the rate decays; 0: never
    lr_decay: float = 0.5  # what a plateau multiplies the rate by
    max_decays: int = 2  # stop once this many decays in a row brought no new best
    # what validation has done so far (saved with the run, restored by --resume)
    scale: float = 1.0  # the product of the decays so far
    best: float = math.inf
    evals_since_best: int = 0
    decays_since_best: int = 0
    stopped: bool = False

    def lr_at(self, step: int, progress: float) -> float:
        """The rate at `step`, `progress` (0 to 1) of the way through the planned run."""
        if step < self.warmup_steps:
            return self.lr * self.scale * (step + 1) / self.warmup_steps
        cosine = 0.5 * (1 + math.cos(math.pi * progress))
        return self.lr * self.scale * (self.min_lr_frac + (1 - self.min_lr_frac) * cosine)

    def observe(self, val_loss: float) -> bool:
        """Take one validation loss; return whether it is the best so far."""
        improved = val_loss < self.best * (1 - MIN_IMPROVEMENT)
        best = val_loss < self.best
        if best:
            self.best = val_loss
        if improved:
            self.evals_since_best = self.decays_since_best = 0
            return best
        self.evals_since_best += 1
        if self.patience and self.evals_since_best >= self.patience:
            self.evals_since_best = 0
            if self.decays_since_best >= self.max_decays:
                self.stopped = True
            else:
                self.scale *= self.lr_decay
                self.decays_since_best += 1
        return best

    def state_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items()
                if k in ("scale", "best", "evals_since_best", "decays_since_best", "stopped")}

    def load_state_dict(self, state: dict) -> None:
        self.scale = float(state["scale"])
        self.best = float(state["best"])
        self.evals_since_best = int(state["evals_since_best"])
        self.decays_since_best = int(state["decays_since_best"])
        self.stopped = bool(state["stopped"])
