"""A model reading a text: as it was trained (`static`), or learning as it reads (`read`).

Dynamic evaluation (Krause, Kahembwe, Murray and Renals 2018) is a copy of the model that keeps
learning from the text it reads. It scores a segment of characters, then takes one step on that
segment's loss and carries its recurrent state on, so every character is predicted before the
model learns from it. The trained weights are never changed: the learner is a copy.

The update is Krause's RMS-normalised step with a decay back to the trained weights,

    theta <- theta - lr * g / (sqrt(ms) + eps) + decay * (theta_trained - theta)

where ms is the running mean of the squared gradients of the segments read so far. How the
settings were chosen is in benchmarks/adapt.py.

A long text is read in parallel streams: it is cut at every `STREAM` characters, and each part
is read by a learner of its own, which starts from the trained weights with the state the
trained model has after the characters just before the part. The cut depends on positions only,
never on the text's length, so a character's probability depends on nothing after it. Each
learner runs on one thread (at batch 1, one thread is the fastest per stream) and the streams
share the cores.
"""

from __future__ import annotations

import copy
import math
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from charrnn.model import CharRNN, State, detach

STREAM = 1 << 17  # characters each parallel stream reads (131,072)
LEAD = 256  # characters before a stream's start that set its first state (trained weights)


@dataclass(frozen=True)
class Adaptation:
    """How the model learns as it reads (chosen by benchmarks/adapt.py)."""

    rule: str = "rms"  # rms: Krause's normalised step; sgd: the plain gradient step
    segment: int = 64  # characters scored, then learned from, at a time
    lr: float = 1e-3  # step size
    decay: float = 1e-3  # pull back towards the trained weights, per step
    beta: float = 0.99  # how slowly the mean of the squared gradients forgets
    eps: float = 1e-5  # keeps the normalised step bounded where the gradient is ~0

    def __post_init__(self) -> None:
        if self.rule not in ("rms", "sgd"):
            raise ValueError("rule must be rms or sgd")
        if not (isinstance(self.segment, int) and self.segment >= 1):
            raise ValueError("segment must be a whole number, 1 or more")
        if not (0 < self.lr < math.inf and 0 <= self.decay < 1 and 0 < self.beta < 1):
            raise ValueError("lr must be positive, decay and beta in [0, 1)")


@dataclass
class Reading:
    """Per predicted character (characters 1 .. N - 1 of a text): its probability, and the
    entropy of the distribution it was drawn from (nats), under the model."""

    p: np.ndarray  # (N - 1,) float64
    entropy: np.ndarray  # (N - 1,) float32


class Learner:
    """A copy of a model that learns from the text it reads (see the module's docstring)."""

    def __init__(self, model: CharRNN, how: Adaptation = Adaptation()):
        c = model.config
        # dropout off, training mode: a recurrent layer's backward needs training mode on a GPU
        self.model = CharRNN(type(c)(**{**c.to_dict(), "dropout": 0.0}))
        self.model.load_state_dict(model.state_dict())
        self.model.to("cpu").train()
        self.how = how
        self.params = [p for p in self.model.parameters()]
        self.trained = [p.detach().clone() for p in self.params]
        self.square = [torch.zeros_like(p) for p in self.params]
        self.steps = 0
        self.state: State | None = None

    def read(self, ids: np.ndarray, keep: bool = True) -> Reading:
        """Read `ids`, predicting ids[1:] from what came before (and the carried state); learn
        from each segment after scoring it. With `keep`, each character's probability and
        entropy are returned; without, nothing is kept (sampling only wants the learning)."""
        x = torch.from_numpy(np.asarray(ids, dtype=np.int64))
        n = len(x) - 1
        p = np.empty(max(n, 0)) if keep else None
        entropy = np.empty(max(n, 0), dtype=np.float32) if keep else None
        L = self.how.segment
        for start in range(0, n, L):
            end = min(start + L, n)
            logits, state = self.model(x[None, start:end], self.state)
            logp = torch.log_softmax(logits[0].float(), dim=-1)  # (T, V)
            targets = x[start + 1: end + 1]
            chosen = logp.gather(1, targets[:, None])[:, 0]
            if keep:
                with torch.no_grad():
                    p[start:end] = chosen.double().exp().numpy()
                    entropy[start:end] = -(logp.exp() * logp).sum(-1).numpy()
            self._learn(-chosen.mean())
            self.state = detach(state)
        return Reading(p, entropy)

    def _learn(self, loss: torch.Tensor) -> None:
        grads = torch.autograd.grad(loss, self.params)
        h = self.how
        self.steps += 1
        with torch.no_grad():
            if h.rule == "sgd":
                torch._foreach_add_(self.params, grads, alpha=-h.lr)
            else:
                self._rms_step(grads)
            if h.decay:
                torch._foreach_lerp_(self.params, self.trained, h.decay)

    def _rms_step(self, grads) -> None:
        h = self.how
        torch._foreach_mul_(self.square, h.beta)
        torch._foreach_addcmul_(self.square, grads, grads, value=1 - h.beta)
        bias = 1 - h.beta ** self.steps  # the running mean, unbiased in its first steps
        scale = torch._foreach_sqrt(torch._foreach_div(self.square, bias))
        torch._foreach_add_(scale, h.eps)
        torch._foreach_addcdiv_(self.params, grads, scale, value=-h.lr)

    def adapted(self) -> CharRNN:
        """The model as it stands now, in evaluation mode (a copy: reading on leaves it)."""
        out = copy.deepcopy(self.model)
        return out.eval()


BLOCK = 4096  # characters per call of the model when it only reads


@torch.no_grad()
def static(model: CharRNN, ids: np.ndarray) -> Reading:
    """Each character's probability (and its distribution's entropy) under `model` as trained,
    for characters 1 .. N - 1, fed in blocks."""
    model.eval()
    device = next(model.parameters()).device
    x = torch.from_numpy(np.asarray(ids, dtype=np.int64))
    p, entropy, state = [], [], None
    for start in range(0, len(x) - 1, BLOCK):
        block = x[start: min(start + BLOCK, len(x) - 1)]
        logits, state = model(block[None].to(device), state)
        logp = torch.log_softmax(logits[0].double(), dim=-1)  # (T, V)
        targets = x[start + 1: start + 1 + len(block)].to(device)
        p.append(logp.gather(1, targets[:, None])[:, 0].exp().cpu().numpy())
        entropy.append(-(logp.exp() * logp).sum(-1).float().cpu().numpy())
    if not p:
        return Reading(np.empty(0), np.empty(0, dtype=np.float32))
    return Reading(np.concatenate(p), np.concatenate(entropy))


@contextmanager
def one_thread():
    """torch's threads at one while learners run side by side, each on its own core."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.no_grad()
def _lead_state(model: CharRNN, ids: np.ndarray) -> State | None:
    """The trained model's state after the characters before a stream's start."""
    if len(ids) == 0:
        return None
    model.eval()
    _, state = model(torch.from_numpy(np.asarray(ids, dtype=np.int64))[None].cpu())
    return state


def read(model: CharRNN, ids: np.ndarray, how: Adaptation = Adaptation(),
         workers: int = 1) -> Reading:
    """Each character's probability (and its distribution's entropy) under dynamic evaluation
    of `model` over `ids`, for characters 1 .. N - 1, in streams of STREAM characters read by
    up to `workers` threads side by side."""
    ids = np.asarray(ids, dtype=np.int64)
    n = len(ids) - 1
    if n < 1:
        return Reading(np.empty(0), np.empty(0, dtype=np.float32))
    trained = copy.deepcopy(model).to("cpu")

    def stream(first: int) -> Reading:  # predicts characters first + 1 .. first + STREAM
        learner = Learner(trained, how)
        learner.state = _lead_state(trained, ids[max(0, first - LEAD): first])
        return learner.read(ids[first: min(first + STREAM, n) + 1])

    with one_thread():
        starts = range(0, n, STREAM)
        if workers <= 1 or len(starts) == 1:
            parts = [stream(s) for s in starts]
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                parts = list(pool.map(stream, starts))
    return Reading(np.concatenate([r.p for r in parts]),
                   np.concatenate([r.entropy for r in parts]))


def learn(model: CharRNN, ids: np.ndarray, how: Adaptation = Adaptation()) -> CharRNN:
    """A copy of `model` that has read `ids` once, in order, learning as it went (what
    `sample --adapt` continues from). `model` itself is unchanged."""
    learner = Learner(model, how)
    with one_thread():
        learner.read(np.asarray(ids, dtype=np.int64), keep=False)
    return learner.adapted()
