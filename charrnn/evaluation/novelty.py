"""How much of a sample is copied: the longest stretch of it that occurs verbatim in the training
text, found with rolling hashes over the encoded corpus (numpy, no scan per character).

A window's hash is sum_k t[i + k] * B^k mod 2^64. With W[j] = t[j] * B^j and C its running sum,
the window at i is (C[i + L] - C[i]) * B^-i, where B^-1 exists because B is odd: every window
of a length comes from two vector operations, whatever the length. A binary search over the
length then asks, per length, whether any window of the sample is among the corpus's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

B = np.uint64(0x9E3779B97F4A7C15)  # odd, so invertible mod 2^64
B_INV = np.uint64(pow(int(B), -1, 1 << 64))


@dataclass
class Copy:
    length: int  # characters
    sample_at: int  # where the stretch starts in the sample
    corpus_at: int  # and where in the corpus


class Hashes:
    """Window hashes of one id sequence, for any window length."""

    def __init__(self, ids: np.ndarray):
        n = len(ids)
        with np.errstate(over="ignore"):
            powers = np.cumprod(np.full(n, B, dtype=np.uint64)) * B_INV  # B^j, j = 0..n-1
            self.inverse = np.cumprod(np.full(n, B_INV, dtype=np.uint64)) * B  # B^-j
            weighted = (np.asarray(ids, dtype=np.uint64) + np.uint64(1)) * powers
            self.running = np.concatenate([[np.uint64(0)], np.cumsum(weighted)])

    def at(self, positions: np.ndarray, length: int) -> np.ndarray:
        """The hash of the `length` characters from each of `positions`."""
        with np.errstate(over="ignore"):
            return (self.running[positions + length] - self.running[positions]) * \
                self.inverse[positions]

    def windows(self, length: int) -> np.ndarray:
        """The hash of the `length` characters from each position (the empty window: 0)."""
        if length == 0:
            return np.zeros(len(self.running), dtype=np.uint64)
        count = max(len(self.running) - length, 0)  # none longer than the text
        with np.errstate(over="ignore"):
            return (self.running[length:length + count] - self.running[:count]) * \
                self.inverse[:count]


def longest_copy(sample: np.ndarray, corpus: np.ndarray) -> Copy:
    """The longest stretch of `sample` found verbatim in `corpus` (both arrays of ids).

    The length doubles while some window of the sample is among the corpus's, then is halved
    back to the longest; the corpus positions still in the running are only those whose
    shorter window matched, so after the first few lengths only a handful are looked at."""
    if len(sample) == 0 or len(corpus) == 0:
        return Copy(0, 0, 0)
    s, c = Hashes(sample), Hashes(corpus)

    def matching(length: int, where: np.ndarray) -> np.ndarray:
        """The positions of `where` whose corpus window of `length` the sample has too."""
        where = where[where + length <= len(corpus)]
        keys = np.unique(s.windows(length))
        theirs = c.at(where, length)
        at = np.minimum(np.searchsorted(keys, theirs), len(keys) - 1)
        return where[keys[at] == theirs]

    where = matching(1, np.arange(len(corpus)))
    if not len(where):
        return Copy(0, 0, 0)
    lo, hi = 1, 2
    while hi <= len(sample) and len(found := matching(hi, where)):
        lo, hi, where = hi, 2 * hi, found
    hi = min(hi - 1, len(sample))
    while lo < hi:  # the longest length with a copy, between lo (found) and hi
        mid = (lo + hi + 1) // 2
        found = matching(mid, where)
        if len(found):
            lo, where = mid, found
        else:
            hi = mid - 1
    ours = s.windows(lo)
    for j in where:  # check the ids: a hash match is only a candidate
        for i in np.flatnonzero(ours == c.at(np.array([j]), lo)[0]):
            if np.array_equal(sample[i:i + lo], corpus[j:j + lo]):
                return Copy(lo, int(i), int(j))
    return Copy(0, 0, 0)  # (hash collisions alone: as good as never)


def line(config: dict, text: str) -> str:
    """What `sample --novelty` says: the longest stretch of `text` found verbatim in the run's
    training text, and where (or why it cannot tell)."""
    from charrnn.errors import CharrnnError
    from charrnn.interp.inspection import run_corpus

    try:
        c = run_corpus(config)
    except CharrnnError as e:
        return f"--novelty: {e}".replace("; pass --text FILE or --prime TEXT", "")
    train, _ = c.split(config.get("train", {}))
    points = np.array([ord(ch) for ch in c.vocab.chars], dtype=np.uint32)
    copy = longest_copy(np.array([ord(ch) for ch in text], dtype=np.uint32), points[train])
    stretch = text[copy.sample_at: copy.sample_at + copy.length]
    newline = c.vocab.chars.index("\n") if "\n" in c.vocab.chars else None
    at_line = (int(np.count_nonzero(train[: copy.corpus_at] == newline)) + 1
               if newline is not None else 1)
    shown = stretch if len(stretch) <= 60 else stretch[:57] + "..."
    return (f"novelty: the longest stretch of the sample found verbatim in the training text is "
            f"{copy.length:,} characters, {shown!r}, at character {copy.corpus_at:,} (line "
            f"{at_line:,}) of {c.path}")
