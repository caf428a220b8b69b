"""Why the loop stops: a planned stop (Trainer.planned_stop), the clock, a signal, a loss that
diverged; and, in a torchrun job, the agreement that makes every rank stop at the same step.
Functions of a Trainer `t`."""

from __future__ import annotations

import math

import torch

from charrnn.errors import CharrnnError


def stop_reason(t) -> str | None:
    """Why the loop stops now, if it does: the same on every rank of a torchrun job. What
    one rank alone knows (a signal, its clock, a loss it saw explode) goes to the others
    with each step and is read at the next, the round trip hidden behind the step: every
    rank stops at the same step, one step after the first knew."""
    if not t.world.distributed:
        if t.stop_signal is not None:
            return "interrupted"
        return t.planned_stop() or ("clock" if t.over_time() else None)
    signum = clock = diverging = 0
    if t.pending_stop is not None:
        signum, clock, diverging = t.pending_stop()
        t.pending_stop = None
    if diverging:  # every rank stops with the same error at the same step
        loss = t.train_loss()
        check_divergence(t, loss if not sane(loss, len(t.vocab)) else math.inf)
    if signum:
        t.stop_signal = signum
        return "interrupted"
    reason = t.planned_stop() or ("clock" if clock else None)
    if reason is None:
        t.pending_stop = t.world.agree_later(
            [t.stop_signal or 0, int(t.over_time()), int(t.diverging)])
    return reason


def sane(loss: float, vocab_size: int) -> bool:
    """Not NaN, and not far worse than guessing uniformly."""
    return math.isfinite(loss) and loss <= 2 * math.log(vocab_size) + 2


def check_divergence(t, loss: float, weights: bool = False) -> None:
    """Stop on a NaN or exploding loss (or, with `weights`, NaN weights: the last update
    may have made them after the loss was computed), before anything reaches a checkpoint."""
    finite = not weights or all(bool(torch.isfinite(p).all())
                                for p in t.model.parameters())
    if sane(loss, len(t.vocab)) and finite:
        return
    shown = f"{loss:.4g}" if finite else "NaN weights"
    raise CharrnnError(
        f"training diverged at step {t.step} (loss {shown}); the last good checkpoint in "
        f"{t.run} is kept; try a lower --lr (it was {t.cfg.lr:g}) or a smaller "
        f"--grad-clip (it was {t.cfg.grad_clip:g})")
