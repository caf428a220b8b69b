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

Each order's counts are counted as a `Table` grouped by context, and a model's levels are
packed into one `Model`: the whole distribution after a context costs one look-up for all its
levels (what sampling from a mixture needs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from charrnn.evaluation import novelty
from charrnn.evaluation.novelty import Hashes

B, MASK = int(novelty.B), (1 << 64) - 1  # the rolling hash's base, as a Python int
CHAR_BITS = 21  # a row's key is (its context's rank << CHAR_BITS) | its character: 0x110000 < 2^21


@dataclass
class Table:
    """The counts of one order k, as counted: the k-grams seen, grouped by their (k-1)-character
    context (a `Model` packs the levels of one model for look-ups)."""

    contexts: np.ndarray  # (C,) uint64: the contexts' hashes, sorted
    starts: np.ndarray  # (C + 1,) int64: context j's k-grams are rows starts[j] .. starts[j+1]-1
    chars: np.ndarray  # (G,) int32: each k-gram's last character, ascending within a context
    counts: np.ndarray  # (G,) float64: raw counts at the top order, continuation counts below
    discount: float


def _salt(level: int) -> int:
    """What a context's hash is xored with to tag it with its level (1 ..) in a Model."""
    return (level * 0xD6E8FEB86659FD93 + 0x2545F4914F6CDD1D) & MASK


class Model:
    """An interpolated count model: the levels of one model (orders 1 .. L, low to high), packed
    into one sorted array of contexts, each tagged with its level, and their rows (character,
    count) in the same order. So one look-up finds the contexts of every level after a text
    (what sampling from a mixture needs), and a character's count one more."""

    def __init__(self, keys, starts, levels_of, chars, counts, discounts):
        self.keys = keys  # (C,) uint64, ascending: context hash ^ _salt(its level)
        self.starts = starts  # (C + 1,) int64: context j's rows are starts[j] .. starts[j+1]-1
        self.levels_of = levels_of  # (C,) uint8: each context's level
        self.chars = chars  # (G,) int32: ascending within a context
        self.counts = counts  # (G,) float64
        self.discounts = np.asarray(discounts, dtype=np.float64)  # (L,)
        self.types = np.diff(starts).astype(np.float64)
        self.totals = np.add.reduceat(counts, starts[:-1]) if len(keys) else np.zeros(0)
        discount = self.discounts[levels_of.astype(np.int64) - 1]  # each context's
        self.freed = discount * self.types / np.maximum(self.totals, 1e-300)  # left to below
        # each row's own term of the interpolation, (count - D) / total of its context
        self.values = (counts - np.repeat(discount, np.diff(starts))) / \
            np.repeat(np.maximum(self.totals, 1e-300), np.diff(starts))
        self.salts = np.array([_salt(k) for k in range(1, len(discounts) + 1)], dtype=np.uint64)
        self._row_keys = None

    @property
    def order(self) -> int:
        return len(self.discounts) - 1

    @classmethod
    def pack(cls, levels: list[Table]) -> Model:
        tagged, level_of, first, lengths, offset = [], [], [], [], 0
        for k, t in enumerate(levels, start=1):
            tagged.append(t.contexts ^ np.uint64(_salt(k)))
            level_of.append(np.full(len(t.contexts), k, dtype=np.uint8))
            first.append(t.starts[:-1] + offset)
            lengths.append(np.diff(t.starts))
            offset += len(t.chars)
        order = np.argsort(np.concatenate(tagged), kind="stable")
        keys = np.concatenate(tagged)[order]
        first, lengths = np.concatenate(first)[order], np.concatenate(lengths)[order]
        starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        rows = np.repeat(first - starts[:-1], lengths) + np.arange(starts[-1])
        return cls(keys, starts, np.concatenate(level_of)[order],
                   np.concatenate([t.chars for t in levels])[rows].astype(np.int32),
                   np.concatenate([t.counts for t in levels])[rows].astype(np.float64),
                   [t.discount for t in levels])

    def _find(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rank, seen) of each tagged context: where it is in `keys`, and whether it is."""
        if not len(self.keys):
            return np.zeros(len(queries), dtype=np.int64), np.zeros(len(queries), dtype=bool)
        at = self.keys.searchsorted(queries)
        at[at == len(self.keys)] = 0
        return at, self.keys[at] == queries

    def _count_of(self, ranks: np.ndarray, chars: np.ndarray) -> np.ndarray:
        """The count of each (context rank, character) pair; 0 where it was never seen."""
        if self._row_keys is None:  # (rank << CHAR_BITS) | character: ascending, row by row
            ranks_of_rows = np.repeat(np.arange(len(self.keys), dtype=np.int64),
                                      np.diff(self.starts))
            self._row_keys = (ranks_of_rows << CHAR_BITS) | self.chars.astype(np.int64)
        queries = (ranks.astype(np.int64) << CHAR_BITS) | chars.astype(np.int64)
        at = np.minimum(np.searchsorted(self._row_keys, queries), max(len(self.chars) - 1, 0))
        return np.where(self._row_keys[at] == queries, self.counts[at], 0.0) if \
            len(self.chars) else np.zeros(len(queries))

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.keys, self.starts, self.levels_of, self.chars,
                                      self.counts))


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


def kneser_ney(raw: list[Table], continuation: list[Table], order: int) -> Model:
    """The interpolated Kneser-Ney model of `order`, packed for look-ups."""
    return Model.pack(levels(raw, continuation, order))


@dataclass
class Scores:
    """What a count model says of each predicted character (characters 1 .. N - 1)."""

    p: np.ndarray  # (N - 1,) its probability
    depth: np.ndarray  # (N - 1,) int: the longest context seen in the counts, in characters
    backoff: np.ndarray  # (N - 1,) the weight that longest context leaves to shorter ones
    total: np.ndarray  # (N - 1,) how often that context was counted


def score(model: Model, ids: np.ndarray, vocab_size: int) -> Scores:
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
    for k, discount in enumerate(model.discounts, start=1):
        # the k-gram ending at i starts at i - k + 1; positions without room keep the lower p
        start = positions - k + 1
        ok = np.flatnonzero(start >= 0)
        rank, seen = model._find(h.windows(k - 1)[start[ok]] ^ model.salts[k - 1])
        ok, rank = ok[seen], rank[seen]
        if len(ok) == 0:
            break  # no longer context is seen either
        t, freed = model.totals[rank], model.freed[rank]
        c = model._count_of(rank, ids[positions[ok]])
        p[ok] = np.maximum(c - discount, 0.0) / t + freed * p[ok]
        depth[ok], backoff[ok], total[ok] = k - 1, freed, t
    return Scores(p, depth, backoff, total)


def probabilities(model: Model, ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """P(ids[i] | what came before in `ids`) for i = 1 .. len(ids) - 1."""
    return score(model, ids, vocab_size).p


MEMO_LEVELS = 3  # the lowest levels' distribution is kept per context by `distribution`
MEMO_MOST = 1 << 15  # contexts kept at most (a few MB)


def distribution(model: Model, context, vocab_size: int, memo: dict | None = None):
    """(the whole distribution over the next character after `context` (ids, oldest first),
    the longest context seen, its backoff weight, its total): one look-up for every level,
    which counts up to the first context never seen (no longer one is). `memo` keeps the
    distribution of the lowest levels per context, which a text meets again and again."""
    levels = min(len(model.discounts), len(context) + 1)
    hashes, h = [0], 0  # each level's context hash (Hashes.windows'), one older character more
    for k in range(2, levels + 1):
        h = (int(context[len(context) - k + 1]) + 1 + B * h) & MASK
        hashes.append(h)
    rank, seen = model._find(np.array(hashes, dtype=np.uint64) ^ model.salts[:levels])
    seen = seen.tolist()
    found = seen.index(False) if False in seen else levels
    if found == 0:
        return np.full(vocab_size, 1.0 / vocab_size), 0, 1.0, 0.0
    rank = rank[:found]
    freed, t = model.freed[rank].tolist(), model.totals[rank].tolist()
    low = min(found, MEMO_LEVELS) if memo is not None else 0
    base = None
    if low:
        key = (low, tuple(context[len(context) - low + 1:]) if low > 1 else ())
        base = memo.get(key)
        if base is None:
            base = _interpolate(model, rank[:low], freed[:low], vocab_size)
            if len(memo) >= MEMO_MOST:
                memo.clear()
            memo[key] = base
    if low == found:
        p = base.copy()
    else:
        p = _interpolate(model, rank[low:], freed[low:], vocab_size, low, base)
    return p, found - 1, freed[-1], t[-1]


def _interpolate(model: Model, rank, freed: list, vocab_size: int, low: int = 0,
                 below=None) -> np.ndarray:
    """The distribution of levels low + 1 .. low + len(rank) (the contexts `rank`) over the
    distribution `below` of the levels under them (the uniform one when none):
    p = below * prod(freed) + sum_k (the freed weights above k) * (counts_k - D_k) / t_k."""
    above = [1.0] * len(freed)
    for k in range(len(freed) - 2, -1, -1):
        above[k] = above[k + 1] * freed[k + 1]
    first, last = model.starts[rank], model.starts[rank + 1]
    lengths = last - first
    ends = lengths.cumsum()
    rows = np.arange(int(ends[-1])) + np.repeat(first - (ends - lengths), lengths)
    p = np.bincount(model.chars[rows], model.values[rows] * np.repeat(above, lengths),
                    minlength=vocab_size)
    weight = above[0] * freed[0]
    if below is None:
        p += weight / vocab_size
    else:
        p += weight * below
    return p


def own_model(ids: np.ndarray, order: int, discount: float) -> Model:
    """The count model of a text itself (what `reading` scores as it reads): its raw counts at
    every order up to `order`, one discount for all (interpolated absolute discounting)."""
    raw, _ = count(ids, order)
    for table in raw:
        table.discount = discount
    return Model.pack(raw)


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
