"""Interpolated Kneser-Ney character models, counted in bulk: `charrnn eval`'s baselines, and the
count model a run mixes with its network (charrnn/evaluation/mixture.py).

A model of order n conditions on the n characters before the one it predicts (order 0 is the
unigram model). Counting never loops over characters in Python: every window of k characters
gets a 64-bit rolling hash (charrnn/evaluation/novelty.py's, two vector operations per length),
and counts come from sorting the hashes. A hash collision between two different windows is
possible in principle (about one in 10^10 pairs for 10^5 distinct windows) and is ignored.

Interpolated Kneser-Ney (Chen and Goodman 1998, with one discount per order): at the highest
order the counts are the n-grams' own; below it they are continuation counts, the number of
distinct characters seen before the shorter n-gram; every level mixes in the one below with the
weight its discount frees, down to the uniform distribution over the vocabulary.

Each order's counts are a `Table` grouped by context: the characters seen after a context, and
their counts, are one slice. So the whole distribution after a context costs one look-up per
order (what sampling from a mixture needs), and a character's probability one more.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from charrnn.evaluation.novelty import B as BASE
from charrnn.evaluation.novelty import Hashes

B, MASK = int(BASE), (1 << 64) - 1
CHAR_BITS = 21  # a row's key is (its context's rank << CHAR_BITS) | its character: 0x110000 < 2^21


@dataclass
class Table:
    """The counts of one order k: the k-grams seen, grouped by their (k-1)-character context."""

    contexts: np.ndarray  # (C,) uint64: the contexts' hashes, sorted
    starts: np.ndarray  # (C + 1,) int64: context j's k-grams are rows starts[j] .. starts[j+1]-1
    chars: np.ndarray  # (G,) int32: each k-gram's last character, ascending within a context
    counts: np.ndarray  # (G,) float64: raw counts at the top order, continuation counts below
    discount: float
    totals: np.ndarray = field(init=False, repr=False)  # (C,) sum of the context's counts
    types: np.ndarray = field(init=False, repr=False)  # (C,) how many k-grams follow it
    _keys: np.ndarray | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.types = np.diff(self.starts).astype(np.float64)
        self.totals = (np.add.reduceat(self.counts, self.starts[:-1]) if len(self.contexts)
                       else np.zeros(0))

    @property
    def keys(self) -> np.ndarray:
        """(G,) int64, ascending: (rank of the row's context << CHAR_BITS) | its character."""
        if self._keys is None:
            ranks = np.repeat(np.arange(len(self.contexts), dtype=np.int64),
                              np.diff(self.starts))
            self._keys = (ranks << CHAR_BITS) | self.chars.astype(np.int64)
        return self._keys

    def find(self, contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rank, seen) of each context hash: where it is in `contexts`, and whether it is."""
        at = np.minimum(np.searchsorted(self.contexts, contexts), max(len(self.contexts) - 1, 0))
        seen = (self.contexts[at] == contexts) if len(self.contexts) else \
            np.zeros(len(contexts), dtype=bool)
        return at, seen

    def count_of(self, ranks: np.ndarray, chars: np.ndarray) -> np.ndarray:
        """The count of each (context rank, character) pair; 0 where it was never seen."""
        keys = self.keys
        queries = (ranks.astype(np.int64) << CHAR_BITS) | chars.astype(np.int64)
        at = np.minimum(np.searchsorted(keys, queries), max(len(keys) - 1, 0))
        return np.where(keys[at] == queries, self.counts[at], 0.0) if len(keys) else \
            np.zeros(len(queries))

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.contexts, self.starts, self.chars, self.counts))


def _discount(counts: np.ndarray) -> float:
    n1, n2 = np.count_nonzero(counts == 1), np.count_nonzero(counts == 2)
    return float(n1 / (n1 + 2 * n2)) if n1 + n2 else 0.5


def _groups(values: np.ndarray):
    """(sorted distinct values, how often each occurs, an index where each occurs); a stable
    argsort, which numpy does by radix for integers: faster than np.unique."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]])
                            if len(ordered) else np.zeros(0, dtype=bool))
    counts = np.diff(np.append(starts, len(ordered)))
    return ordered[starts], counts, order[starts]


def _table(contexts: np.ndarray, chars: np.ndarray, counts: np.ndarray) -> Table:
    """A table from its k-grams, each given by its context's hash, last character and count."""
    order = np.lexsort((chars, contexts))
    contexts, chars, counts = contexts[order], chars[order], counts[order]
    new = np.concatenate([[True], contexts[1:] != contexts[:-1]]) if len(contexts) else \
        np.zeros(0, dtype=bool)
    starts = np.append(np.flatnonzero(new), len(contexts)).astype(np.int64)
    return Table(contexts[new], starts, chars.astype(np.int32), counts.astype(np.float64),
                 _discount(counts))


def count(ids: np.ndarray, order: int) -> tuple[list[Table], list[Table]]:
    """(raw, continuation): for k = 1 .. order + 1, the k-grams of `ids` with their own counts,
    and with their continuation counts (index k - 1). A model of order n takes the continuation
    levels 1 .. n and the raw level n + 1 (see `levels`)."""
    ids = np.asarray(ids)
    h = Hashes(ids)
    grams = [h.windows(k) for k in range(order + 2)]  # grams[k][j]: ids[j .. j + k - 1]
    raw, continuation, where = [], [], {}
    for k in range(order + 1, 0, -1):  # from the top: level k's continuations need k + 1's
        _, counts, at = _groups(grams[k])
        where[k] = at
        raw.append(_table(grams[k - 1][at], ids[at + k - 1], counts))
        if k <= order:  # distinct characters seen before each k-gram: one per (k+1)-gram
            suffix_at = where[k + 1] + 1  # the k-gram that ends each distinct (k+1)-gram
            _, counts, first = _groups(grams[k][suffix_at])
            at = suffix_at[first]
            continuation.append(_table(grams[k - 1][at], ids[at + k - 1], counts))
        where.pop(k + 1, None)
    return raw[::-1], continuation[::-1]


def levels(raw: list[Table], continuation: list[Table], order: int) -> list[Table]:
    """The levels of the interpolated Kneser-Ney model of `order`."""
    return continuation[:order] + [raw[order]]


@dataclass
class Scores:
    """What a count model says of each predicted character (characters 1 .. N - 1)."""

    p: np.ndarray  # (N - 1,) its probability
    depth: np.ndarray  # (N - 1,) int: the longest context seen in the counts, in characters
    backoff: np.ndarray  # (N - 1,) the weight that longest context leaves to shorter ones
    total: np.ndarray  # (N - 1,) how often that context was counted


def score(levels: list[Table], ids: np.ndarray, vocab_size: int) -> Scores:
    """P(ids[i] | what came before in `ids`) for i = 1 .. len(ids) - 1, and what the counts know
    of each context (for the mixture's gate); a context that reaches before the start of `ids`
    is shortened to what there is."""
    ids = np.asarray(ids)
    h = Hashes(ids)
    n = len(ids)
    p = np.full(n - 1, 1.0 / vocab_size)  # the uniform distribution below every level
    depth = np.zeros(n - 1, dtype=np.int64)
    backoff, total = np.ones(n - 1), np.zeros(n - 1)
    positions = np.arange(1, n)  # the predicted characters
    for k, level in enumerate(levels, start=1):
        # the k-gram ending at i starts at i - k + 1; positions without room keep the lower p
        start = positions - k + 1
        ok = np.flatnonzero(start >= 0)
        rank, seen = level.find(h.windows(k - 1)[start[ok]])
        ok, rank = ok[seen], rank[seen]
        if len(ok) == 0:
            break  # no longer context is seen either
        t, types = level.totals[rank], level.types[rank]
        c = level.count_of(rank, ids[positions[ok]])
        freed = level.discount * types / t
        p[ok] = np.maximum(c - level.discount, 0.0) / t + freed * p[ok]
        depth[ok], backoff[ok], total[ok] = k - 1, freed, t
    return Scores(p, depth, backoff, total)


def probabilities(levels: list[Table], ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """P(ids[i] | what came before in `ids`) for i = 1 .. len(ids) - 1."""
    return score(levels, ids, vocab_size).p


def distribution(levels: list[Table], context, vocab_size: int):
    """(the whole distribution over the next character after `context` (ids, oldest first),
    the longest context seen, its backoff weight, its total): one look-up per order, from the
    shortest context up, ending at the first context never seen (no longer one is)."""
    h = 0  # the hash of the context so far (Hashes.windows'), grown one older character a level
    found = []  # (level, its slice of rows, total, backoff) of each context seen
    for k, level in enumerate(levels, start=1):
        if k > 1:
            if k - 1 > len(context):
                break
            h = (int(context[len(context) - k + 1]) + 1 + B * h) & MASK
        j = int(level.contexts.searchsorted(np.uint64(h)))
        if j >= len(level.contexts) or int(level.contexts[j]) != h:
            break
        a, b = level.starts[j: j + 2].tolist()
        t = level.totals[j].item()
        found.append((level, a, b, t, level.discount * (b - a) / t))
    if not found:
        return np.full(vocab_size, 1.0 / vocab_size), 0, 1.0, 0.0
    # p = u * prod(backoffs) + sum_k (the backoffs above k) * (counts_k - D_k) / t_k at k's chars
    above = np.cumprod([1.0] + [f[4] for f in found[:0:-1]])[::-1]  # level k: prod over > k
    chars = np.concatenate([level.chars[a:b] for level, a, b, _, _ in found])
    values = np.concatenate([(level.counts[a:b] - level.discount) * (w / t)
                             for (level, a, b, t, _), w in zip(found, above)])
    p = np.bincount(chars, np.maximum(values, 0.0), minlength=vocab_size)
    p += above[0] * found[0][4] / vocab_size
    return p, len(found) - 1, found[-1][4], found[-1][3]


def own_levels(ids: np.ndarray, order: int, discount: float) -> list[Table]:
    """The count model of a text itself (what `reading` scores as it reads): its raw counts at
    every order up to `order`, one discount for all (interpolated absolute discounting)."""
    raw, _ = count(ids, order)
    for table in raw:
        table.discount = discount
    return raw


def reading(ids: np.ndarray, vocab_size: int, order: int, discount: float) -> Scores:
    """What the counts of the text read so far say of each next character: the score of
    character i under `own_levels(ids[:i], ...)`, for every i at once. At each order, a window's
    count is how many earlier windows have its hash (a rank within its group after a stable
    sort), so the text after i never enters."""
    ids = np.asarray(ids)
    h = Hashes(ids)
    n = len(ids)
    p = np.full(n - 1, 1.0 / vocab_size)
    depth = np.zeros(n - 1, dtype=np.int64)
    backoff, total = np.ones(n - 1), np.zeros(n - 1)
    for k in range(1, order + 2):  # windows of k characters: a context of k - 1 and the next
        if n - k + 1 < 1:
            break
        grams, contexts = h.windows(k)[: n - k + 1], h.windows(k - 1)[: n - k + 1]
        seen_gram = _earlier(grams)  # earlier windows with the same k characters
        t = _earlier(contexts)  # earlier windows with the same context: continuations known
        types = _earlier(contexts, counting=seen_gram == 0)  # distinct continuations among them
        s = np.arange(max(0, 2 - k), n - k + 1)  # window s predicts character s + k - 1 (>= 1)
        at = s + k - 2  # its place in p
        ok = t[s] > 0
        at, s = at[ok], s[ok]
        tt = t[s].astype(np.float64)
        freed = discount * types[s] / tt
        p[at] = np.maximum(seen_gram[s] - discount, 0.0) / tt + freed * p[at]
        depth[at], backoff[at], total[at] = k - 1, freed, tt
    return Scores(p, depth, backoff, total)


def _earlier(keys: np.ndarray, counting: np.ndarray | None = None) -> np.ndarray:
    """For each position, how many earlier positions have the same key (with `counting`, only
    the earlier positions where it is true)."""
    order = np.argsort(keys, kind="stable")  # equal keys stay in text order
    ordered = keys[order]
    new = np.concatenate([[True], ordered[1:] != ordered[:-1]])
    ones = np.ones(len(keys), dtype=np.int64) if counting is None else \
        counting[order].astype(np.int64)
    before = np.cumsum(ones) - ones  # of all positions before, in sorted order...
    out = np.empty(len(keys), dtype=np.int64)
    out[order] = before - np.maximum.accumulate(np.where(new, before, 0))  # ...in its group
    return out


def loss(p: np.ndarray) -> float:
    """Mean negative log probability, in nats per character."""
    return float(-np.log(np.maximum(p, 1e-300)).mean())
