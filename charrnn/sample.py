"""Sampling: feed a prime, then draw one character at a time and hand it out as soon as it exists.

The draw is the same on every path and device: the distribution is computed in float64 on the
CPU and one uniform number from a seeded torch.Generator picks the character by inverse CDF, so
the same seed gives the same text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch

from charrnn.errors import CharrnnError
from charrnn.model import CharRNN
from charrnn.vocab import Vocab


@dataclass
class SampleConfig:
    temperature: float = 0.8  # below 1 is safer and more repetitive; 0 always takes the likeliest
    top_k: int | None = None  # draw only among the k likeliest characters
    top_p: float | None = None  # draw only among the likeliest characters whose mass reaches p
    length: int = 1000  # characters to generate after the prime

    def __post_init__(self) -> None:
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise CharrnnError(f"--temperature must be 0 or more, not {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise CharrnnError(f"--top-k must be 1 or more, not {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise CharrnnError(f"--top-p must be in (0, 1], not {self.top_p}")
        if self.length < 0:
            raise CharrnnError(f"--length must be 0 or more, not {self.length}")


def distribution(logits: torch.Tensor, cfg: SampleConfig) -> torch.Tensor:
    """The float64 distribution to draw from, after temperature, top-k and top-p; (V,)."""
    logits = logits.detach().to("cpu", torch.float64)
    if cfg.temperature == 0:
        probs = torch.zeros_like(logits)
        probs[logits.argmax()] = 1.0
        return probs
    logits = logits / cfg.temperature
    if cfg.top_k is not None and cfg.top_k < logits.numel():
        kth = logits.topk(cfg.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, -math.inf)
    probs = torch.softmax(logits, dim=0)
    if cfg.top_p is not None and cfg.top_p < 1:
        sorted_probs, order = probs.sort(descending=True)
        before = sorted_probs.cumsum(0) - sorted_probs  # mass of the likelier characters
        drop = order[before >= cfg.top_p]
        probs[drop] = 0.0
    return probs


def draw(probs: torch.Tensor, generator: torch.Generator) -> int:
    """Inverse-CDF draw with one uniform number: identical for identical distributions."""
    cdf = probs.cumsum(0)
    u = torch.rand((), generator=generator, dtype=torch.float64) * cdf[-1]
    return min(int(torch.searchsorted(cdf, u, right=True)), probs.numel() - 1)


def check_prime(prime: str, vocab: Vocab, drop_unknown: bool) -> str:
    unknown = vocab.unknown(prime)
    if not unknown:
        return prime
    if drop_unknown:
        return "".join(ch for ch in prime if ch not in set(unknown))
    shown = " ".join(repr(ch) for ch in unknown[:20]) + (" ..." if len(unknown) > 20 else "")
    raise CharrnnError(f"the prime has {len(unknown)} character(s) the model never saw: {shown};"
                       " change the prime, or pass --drop-unknown to leave them out")


def start_ids(prime: str, vocab: Vocab, generator: torch.Generator) -> list[int]:
    """The ids fed before the first draw: the prime, or a newline, or a random character."""
    if prime:
        return [int(i) for i in vocab.encode(prime)]
    if "\n" in vocab.chars:
        return [vocab.chars.index("\n")]
    return [int(torch.randint(len(vocab), (), generator=generator))]


@torch.no_grad()
def generate(model: CharRNN, vocab: Vocab, prime: str, cfg: SampleConfig,
             generator: torch.Generator) -> Iterator[str]:
    """Yield `cfg.length` characters, one at a time, continuing `prime` (not yielded)."""
    model.eval()
    device = next(model.parameters()).device
    ids = start_ids(prime, vocab, generator)
    logits, state = model(torch.tensor([ids], device=device))
    last = logits[0, -1]
    for _ in range(cfg.length):
        i = draw(distribution(last, cfg), generator)
        yield vocab.chars[i]
        logits, state = model(torch.tensor([[i]], device=device), state)
        last = logits[0, -1]
