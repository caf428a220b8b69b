"""The network mixed with other models: p = w_0 p_net + w_1 p_counts + ... , the weights w
depending on the context.

The counts are those of the run's training text (an interpolated Kneser-Ney model), and, for a
model that adapts as it reads, those of the text read so far (charrnn/evaluation/ngram.py's
`reading`), and its match model (charrnn/evaluation/match_model.py). The weights come from a
small gate on what each model knows of the context before the character, never the character
itself: the network's uncertainty (the entropy of its distribution), and for each count model
how long a context it has seen, how often, and how much weight that context leaves to shorter
ones. A mixture that reads a text as it goes (`charrnn eval`'s adapting row) also reads each
model's record on the text so far (`records`: which model has been right lately) and how long a
context the match model matched. The gate is fitted by maximum likelihood on the run's
validation text, never on the text being scored; benchmarks/adapt.py measures it against fixed
weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from charrnn.evaluation.ngram import Scores

FIT_CHARS = 200_000  # validation characters a gate is fitted on, at most
LIMIT = 100.0  # a coefficient beyond this is a damaged or hostile file, not a fit


def features(entropy: np.ndarray, counts: list[tuple[Scores, int]]) -> np.ndarray:
    """(N, 2 + 3 per count model): what the gate reads, each of order 1: a constant, the
    network's entropy (nats), and for each count model (its scores, its order) the longest
    context it has seen as a share of its order, that context's backoff weight, and the log of
    how often it was counted."""
    columns = [np.ones(len(entropy)), np.asarray(entropy, dtype=np.float64)]
    for scores, order in counts:
        columns += [scores.depth / max(order, 1), scores.backoff, np.log1p(scores.total) / 10]
    return np.stack(columns, axis=1)


def records(ps: list[np.ndarray], windows) -> np.ndarray:
    """(N, (models - 1) * len(windows)): for each window W and each model after the network,
    how much likelier it made the W characters before each one than the network did (the mean
    of log p_model - log p_net over them, halved; 0 before the first), so a character's features
    never include its own probability."""
    logs = [np.log(np.maximum(np.asarray(p, dtype=np.float64), 1e-300)) for p in ps]
    n = len(logs[0])
    columns = []
    for w in windows:
        at = np.arange(n)
        first = np.maximum(at - w, 0)
        size = np.maximum(at - first, 1)
        for lp in logs[1:]:
            running = np.concatenate([[0.0], np.cumsum(lp - logs[0])])
            columns.append((running[at] - running[first]) / size / 2)
    return np.stack(columns, axis=1) if columns else np.zeros((n, 0))


def _softmax_rows(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class Gate:
    """Each model's weight as a function of the context: softmax(0, a_1 . x, a_2 . x, ...),
    the network's logit held at 0; `coefficients` holds a_1, a_2, ..."""

    coefficients: tuple[tuple[float, ...], ...]

    @property
    def models(self) -> int:
        return len(self.coefficients) + 1

    def weights(self, x: np.ndarray) -> np.ndarray:
        """(..., models): each model's weight for features x (..., F)."""
        a = np.asarray(self.coefficients)  # (models - 1, F)
        z = np.concatenate([np.zeros((*x.shape[:-1], 1)), x @ a.T], axis=-1)
        return _softmax_rows(z)

    def mix(self, ps: list[np.ndarray], x: np.ndarray) -> np.ndarray:
        """The mixture of the models' probabilities (each (N,) with x (N, F), or each (V,)
        whole distributions with x (F,))."""
        w = self.weights(x)
        return sum(w[..., m] * p for m, p in enumerate(ps))

    def to_json(self) -> list[list[float]]:
        return [[float(c) for c in row] for row in self.coefficients]

    @classmethod
    def from_json(cls, value, models: int, width: int) -> Gate | None:
        """A gate read back from a file, or None where the value is not one of this shape
        (checked: a run's files may be a stranger's)."""
        if not (isinstance(value, list) and len(value) == models - 1 and all(
                isinstance(row, list) and len(row) == width and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                    and abs(v) <= LIMIT for v in row) for row in value)):
            return None
        return cls(tuple(tuple(float(v) for v in row) for row in value))


def fit(ps: list[np.ndarray], x: np.ndarray, single: bool = False) -> Gate:
    """The gate that maximises the mixture's likelihood of these characters (`ps`: each model's
    probability of each, the network's first); with `single`, fixed weights (the constant
    feature alone)."""
    import torch

    keep = slice(0, min(len(ps[0]), FIT_CHARS))
    p = torch.from_numpy(np.stack([np.asarray(q, dtype=np.float64)[keep] for q in ps], 1))
    xs = torch.from_numpy(np.asarray(x, dtype=np.float64)[keep])
    width = 1 if single else xs.shape[1]
    a = torch.zeros(len(ps) - 1, width, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([a], max_iter=300, line_search_fn="strong_wolfe")

    def loss():
        optimizer.zero_grad()
        z = torch.cat([torch.zeros(len(xs), 1, dtype=torch.float64), xs[:, :width] @ a.T], 1)
        mixed = (torch.softmax(z, dim=1) * p).sum(1)
        value = -torch.log(mixed + 1e-300).mean() + 1e-5 * (a * a).sum()
        value.backward()
        return value

    optimizer.step(loss)
    found = np.zeros((len(ps) - 1, xs.shape[1]))
    found[:, :width] = a.detach().clamp(-LIMIT, LIMIT).numpy()
    return Gate(tuple(tuple(float(c) for c in row) for row in found))
