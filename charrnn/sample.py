"""Sampling: feed a prime, then draw one character at a time and hand it out as soon as it exists.

Two ways to get the next logits, same weights, same draws:
- the straightforward path calls the model (fused nn.LSTM/GRU/RNN) once per character;
- the fast path (`Stepper`, the default) runs the same recurrences in numpy on the CPU. At
  batch 1 a fused module spends most of its time in fixed per-call costs; here the first
  layer's input projection is a table lookup (embedding @ W_ih folded ahead of time) and each
  step is a few matrix-vector products and elementwise ops.
The draw is shared: the distribution is computed in float64 by one function, and the uniform
numbers come from a seeded torch.Generator, drawn in blocks, so the same seed gives the same
text on either path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from charrnn.config import SampleConfig  # noqa: F401 - re-exported
from charrnn.errors import CharrnnError
from charrnn.fileio import read_text
from charrnn.model import CharRNN, State
from charrnn.vocab import Vocab


UNIFORM_BLOCK = 4096  # uniform numbers drawn per call to the generator
PRIME_BLOCK = 4096  # prime characters fed per call of the model: memory bounded by the block
MAX_PRIME = 1 << 22  # characters a --prime-file may hold (tens of MB at most in memory)


def distribution(logits: np.ndarray, cfg: SampleConfig) -> np.ndarray:
    """The float64 distribution to draw from, after temperature, top-k and top-p; (V,)."""
    logits = np.asarray(logits, dtype=np.float64)
    if cfg.temperature == 0:
        probs = np.zeros_like(logits)
        probs[np.argmax(logits)] = 1.0
        return probs
    logits = logits / cfg.temperature
    if cfg.top_k is not None and cfg.top_k < len(logits):
        kth = np.partition(logits, -cfg.top_k)[-cfg.top_k]
        logits = np.where(logits < kth, -np.inf, logits)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    if cfg.top_p is not None and cfg.top_p < 1:
        order = np.argsort(-probs, kind="stable")
        before = np.cumsum(probs[order]) - probs[order]  # mass of the likelier characters
        probs[order[before >= cfg.top_p]] = 0.0
    return probs


def draw(probs: np.ndarray, u: float) -> int:
    """Inverse-CDF draw with one uniform number in [0, 1): identical for identical inputs."""
    cdf = np.cumsum(probs)
    return min(int(np.searchsorted(cdf, u * cdf[-1], side="right")), len(probs) - 1)


def check_prime(prime: str, vocab: Vocab, drop_unknown: bool) -> str:
    problem = vocab.describe_unknown(prime)
    if problem is None:
        return prime
    if drop_unknown:
        known = set(vocab.chars)
        return "".join(ch for ch in prime if ch in known)
    raise CharrnnError(f"the prime has {problem}; change the prime, or pass --drop-unknown to "
                       "leave them out")


def read_prime(path: Path) -> str:
    prime, more = read_text(path, "--prime-file", MAX_PRIME)
    if more:
        raise CharrnnError(f"--prime-file {path} holds more than {MAX_PRIME:,} characters, the "
                           f"most a prime may have; prime with its end instead (tail -c 1000000 "
                           f"{path} > end.txt): a recurrent state keeps little from further back")
    return prime


def start_ids(prime: str, vocab: Vocab, generator: torch.Generator) -> np.ndarray:
    """The ids fed before the first draw: the prime, or a newline, or a random character."""
    if prime:
        return vocab.encode(prime).astype(np.int64)
    if "\n" in vocab.chars:
        return np.array([vocab.chars.index("\n")])
    return np.array([int(torch.randint(len(vocab), (), generator=generator))])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow for large |x|, unlike 1 / (1 + e^-x)


class Stepper:
    """The model's recurrences for one character at a time, in numpy float32 on the CPU."""

    def __init__(self, model: CharRNN, state: State):
        c = model.config
        self.kind, self.H = c.model, c.hidden_size
        w = {k: v.detach().to("cpu", torch.float32).numpy()
             for k, v in model.state_dict().items()}
        self.w_ih, self.w_hh, self.b_ih, self.b_hh = [], [], [], []
        for k in range(c.layers):
            b_ih, b_hh = w[f"rnn.bias_ih_l{k}"], w[f"rnn.bias_hh_l{k}"]
            if self.kind != "gru":  # the GRU's b_hh sits inside r * (W_hn h + b_hn): keep it
                b_ih, b_hh = b_ih + b_hh, np.zeros_like(b_hh)
            self.w_ih.append(np.ascontiguousarray(w[f"rnn.weight_ih_l{k}"].T))  # (in, G*H)
            self.w_hh.append(np.ascontiguousarray(w[f"rnn.weight_hh_l{k}"].T))  # (H, G*H)
            self.b_ih.append(b_ih)
            self.b_hh.append(b_hh)
        # layer 1's input projection for every character, computed once: (V, G*H)
        self.table = w["embed.weight"] @ self.w_ih[0] + self.b_ih[0]
        self.head_w = np.ascontiguousarray(w["head.weight"].T)  # (H, V)
        self.head_b = w["head.bias"]
        self.h = [s.astype(np.float32) for s in state[0][:, 0].cpu().numpy()]
        self.c = ([s.astype(np.float32) for s in state[1][:, 0].cpu().numpy()]
                  if self.kind == "lstm" else None)

    def step(self, i: int) -> np.ndarray:
        """Feed character id i; return the logits for the next character, (V,)."""
        H, x = self.H, None
        for k in range(len(self.h)):
            xw = self.table[i] if k == 0 else x @ self.w_ih[k] + self.b_ih[k]
            hw = self.h[k] @ self.w_hh[k]
            if self.kind == "lstm":
                gates = xw + hw
                sig = _sigmoid(gates)
                self.c[k] = sig[H:2 * H] * self.c[k] + sig[:H] * np.tanh(gates[2 * H:3 * H])
                self.h[k] = sig[3 * H:] * np.tanh(self.c[k])
            elif self.kind == "gru":
                hw = hw + self.b_hh[k]
                rz = _sigmoid(xw[:2 * H] + hw[:2 * H])
                n = np.tanh(xw[2 * H:] + rz[:H] * hw[2 * H:])
                z = rz[H:]
                self.h[k] = n + z * (self.h[k] - n)  # (1 - z) * n + z * h
            else:
                self.h[k] = np.tanh(xw + hw)
            x = self.h[k]
        return x @ self.head_w + self.head_b


class FusedStepper:
    """The straightforward path: one call of the model per character."""

    def __init__(self, model: CharRNN, state: State):
        self.model, self.state = model, state
        self.device = next(model.parameters()).device

    @torch.no_grad()
    def step(self, i: int) -> np.ndarray:
        logits, self.state = self.model(torch.tensor([[i]], device=self.device), self.state)
        return logits[0, -1].float().cpu().numpy()


@torch.no_grad()
def generate(model: CharRNN, vocab: Vocab, prime: str, cfg: SampleConfig,
             generator: torch.Generator, fast: bool = True) -> Iterator[str]:
    """Yield `cfg.length` characters, one at a time, continuing `prime` (not yielded)."""
    model.eval()
    device = next(model.parameters()).device
    ids = torch.from_numpy(start_ids(prime, vocab, generator))
    state = None
    for block in ids.split(PRIME_BLOCK):  # the prime through the fused model, block by block
        logits, state = model(block[None].to(device), state)
    last = logits[0, -1].float().cpu().numpy()
    stepper = (Stepper if fast else FusedStepper)(model, state)
    for n in range(cfg.length):
        if n % UNIFORM_BLOCK == 0:  # uniforms in blocks: one call per block, bounded memory
            block = min(UNIFORM_BLOCK, cfg.length - n)
            uniforms = torch.rand(block, generator=generator, dtype=torch.float64).numpy()
        i = draw(distribution(last, cfg), uniforms[n % UNIFORM_BLOCK])
        yield vocab.chars[i]
        if n + 1 < cfg.length:
            last = stepper.step(i)
