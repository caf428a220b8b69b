"""Whether a loss means the run diverged (the loop's one place for every stop is
`Trainer.stop_reason`, in charrnn/training/loop.py)."""

from __future__ import annotations

import math

import torch


def sane(loss: float, vocab_size: int) -> bool:
    """Not NaN, and not far worse than guessing uniformly."""
    return math.isfinite(loss) and loss <= 2 * math.log(vocab_size) + 2


def divergence(loss: float, vocab_size: int, model: torch.nn.Module | None = None) -> str | None:
    """What says the run diverged, if anything does: a NaN or exploding loss, or (given the
    model) NaN weights, which the last update may have made after the loss was computed."""
    finite = model is None or all(bool(torch.isfinite(p).all()) for p in model.parameters())
    if sane(loss, vocab_size) and finite:
        return None
    return f"loss {loss:.4g}" if finite else "loss NaN weights"
