"""N-gram baselines for `charrnn eval`: interpolated Kneser-Ney character models, counted in bulk.

A model of order n conditions on the n characters before the one it predicts (order 0 is the
unigram model). Counting never loops over characters in Python: every window of k characters
gets a 64-bit rolling hash (charrnn/novelty.py's, two vector operations per length), and counts
come from sorting the hashes (np.unique). A hash collision between two different windows is
possible in principle (about one in 10^10 pairs for 10^5 distinct windows) and is ignored.

Interpolated Kneser-Ney (Chen and Goodman 1998, with one discount per order): at the highest
order the counts are the n-grams' own; below it they are continuation counts, the number of
distinct characters seen before the shorter n-gram; every level mixes in the one below with the
weight its discount frees, down to the uniform distribution over the vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from charrnn.evaluation.novelty import Hashes


@dataclass
class Level:
    """The counts of one order: n-grams of k characters and their (k-1)-character contexts."""

    keys: np.ndarray  # sorted hashes of the k-grams seen
    counts: np.ndarray  # their counts (raw at the top level, continuation counts below)
    context_keys: np.ndarray  # sorted hashes of the contexts
    context_totals: np.ndarray  # sum of the counts of the k-grams with that context
    context_types: np.ndarray  # how many distinct k-grams have that context
    discount: float


def _groups(values: np.ndarray):
    """(sorted distinct values, how often each occurs, an index where each occurs, the sorting
    order); a stable argsort, which numpy does by radix for integers: faster than np.unique."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
    counts = np.diff(np.append(starts, len(ordered)))
    return ordered[starts], counts, order[starts], order


def _level(keys: np.ndarray, counts: np.ndarray, contexts: np.ndarray) -> Level:
    """A level from its k-grams (sorted keys), their counts and their contexts' hashes."""
    n1, n2 = np.count_nonzero(counts == 1), np.count_nonzero(counts == 2)
    discount = n1 / (n1 + 2 * n2) if n1 + n2 else 0.5
    context_keys, types, _, order = _groups(contexts)
    starts = np.concatenate([[0], np.cumsum(types)[:-1]])
    totals = np.add.reduceat(counts[order].astype(np.float64), starts)
    return Level(keys, counts.astype(np.float64), context_keys, totals,
                 types.astype(np.float64), discount)


def count(ids: np.ndarray, order: int) -> tuple[list[Level], list[Level]]:
    """(raw, continuation): for k = 1 .. order + 1, the k-grams of `ids` with their own counts,
    and with their continuation counts (index k - 1). A model of order n takes the continuation
    levels 1 .. n and the raw level n + 1 (see `levels`)."""
    h = Hashes(ids)
    grams = [h.windows(k) for k in range(order + 2)]  # grams[k][j]: ids[j .. j + k - 1]
    raw, continuation, where = [], [], {}
    for k in range(order + 1, 0, -1):  # from the top: level k's continuations need k + 1's
        keys, counts, at, _ = _groups(grams[k])
        where[k] = at
        raw.append(_level(keys, counts, grams[k - 1][at]))
        if k <= order:  # distinct characters seen before each k-gram: one per (k+1)-gram
            suffix_at = where[k + 1] + 1  # the k-gram that ends each distinct (k+1)-gram
            keys, counts, first, _ = _groups(grams[k][suffix_at])
            continuation.append(_level(keys, counts, grams[k - 1][suffix_at[first]]))
        where.pop(k + 1, None)
    return raw[::-1], continuation[::-1]


def levels(raw: list[Level], continuation: list[Level], order: int) -> list[Level]:
    """The levels of the interpolated Kneser-Ney model of `order`."""
    return continuation[:order] + [raw[order]]


def _lookup(keys: np.ndarray, values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """values[keys == q] for each query, 0 where the key is absent."""
    at = np.searchsorted(keys, queries)
    at = np.minimum(at, len(keys) - 1)
    found = keys[at] == queries
    return np.where(found, values[at], 0.0)


def probabilities(levels: list[Level], ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """P(ids[i] | what came before in `ids`) for i = 1 .. len(ids) - 1; a context that reaches
    before the start of `ids` is shortened to what there is."""
    h = Hashes(ids)
    n = len(ids)
    p = np.full(n - 1, 1.0 / vocab_size)  # the uniform distribution below every level
    positions = np.arange(1, n)  # the predicted characters
    for k, level in enumerate(levels, start=1):
        # the k-gram ending at i starts at i - k + 1; positions without room keep the lower p
        start = positions - k + 1
        ok = start >= 0
        s = start[ok]
        grams = h.windows(k)[s]
        contexts = h.windows(k - 1)[s]
        c = _lookup(level.keys, level.counts, grams)
        total = _lookup(level.context_keys, level.context_totals, contexts)
        types = _lookup(level.context_keys, level.context_types, contexts)
        lower = p[ok]
        seen = total > 0
        safe = np.where(seen, total, 1.0)
        mixed = (np.maximum(c - level.discount, 0.0) / safe
                 + level.discount * types / safe * lower)
        p[ok] = np.where(seen, mixed, lower)
    return p


def loss(p: np.ndarray) -> float:
    """Mean negative log probability, in nats per character."""
    return float(-np.log(np.maximum(p, 1e-300)).mean())
