"""The match model of the text read so far (as in the PAQ compressors): find the longest stretch
just before a character that also occurred earlier in the text, and predict the character that
followed it there.

Code and much other text repeat whole lines: once a context of 30 characters has been seen
before, what followed it is a better guess than any count model of 16 characters can give. The
mixture (charrnn/evaluation/mixing.py) learns how far to trust a match of each length.

Lengths are tried from a fixed set (LENGTHS), each with one sort of the text's window hashes
(charrnn/evaluation/novelty.py's): for every window, the most recent earlier window with the
same hash, so a character's prediction depends only on the text before it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from charrnn.evaluation.novelty import Hashes

LENGTHS = (8, 16, 32)  # context lengths tried (chosen in benchmarks/adapt.py)
MISS = 1e-3  # the probability a match leaves to the characters it does not predict


@dataclass
class Matches:
    """What the match model says of each predicted character (characters 1 .. N - 1)."""

    p: np.ndarray  # (N - 1,) its probability
    length: np.ndarray  # (N - 1,) int: the longest of LENGTHS matched before it; 0 if none


def reading(ids: np.ndarray, vocab_size: int, lengths=LENGTHS) -> Matches:
    """The match model's probability of every character of `ids` given the text before it:
    1 - MISS for the character that followed the most recent earlier occurrence of the longest
    matched context, MISS shared by the others; uniform where no context of LENGTHS recurs."""
    ids = np.asarray(ids)
    n = len(ids)
    predicted = np.full(max(n - 1, 0), -1, dtype=np.int64)
    length = np.zeros(max(n - 1, 0), dtype=np.int64)
    h = Hashes(ids)
    for k in sorted(lengths):  # (a longer match overwrites a shorter one)
        if n - k < 1:
            break
        earlier = _previous_same(h.windows(k)[: n - k])  # windows followed by a character
        s = np.flatnonzero(earlier >= 0)
        predicted[s + k - 1] = ids[earlier[s] + k]  # window s predicts character s + k
        length[s + k - 1] = k
    hit = predicted == ids[1:]
    p = np.where(predicted < 0, 1.0 / vocab_size,
                 np.where(hit, 1.0 - MISS, MISS / max(vocab_size - 1, 1)))
    return Matches(p, length)


def _previous_same(keys: np.ndarray) -> np.ndarray:
    """For each position, the most recent earlier position with the same key; -1 if none."""
    order = np.argsort(keys, kind="stable")  # equal keys stay in text order
    same = np.concatenate([[False], keys[order][1:] == keys[order][:-1]])
    out = np.empty(len(keys), dtype=np.int64)
    out[order] = np.where(same, np.concatenate([[-1], order[:-1]]), -1)
    return out
