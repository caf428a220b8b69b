"""Where a pattern recurs (LSTMVis's match): the cells most active on a phrase, and the
stretches of a text whose activity on those cells is most like the phrase's."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CELLS = 8  # the cells that carry the pattern: the most active on the phrase
RESULTS = 5


@dataclass
class Match:
    start: int  # where the stretch starts in the inspected text
    distance: float  # root-mean-square difference of the cells' activity, per character


def pattern_cells(states: np.ndarray, cells: int = CELLS) -> np.ndarray:
    """The cells (columns of `states`, (L, C)) most active on the phrase: highest mean |value|."""
    return np.argsort(-np.abs(states).mean(axis=0), kind="stable")[:cells]


def find(phrase_states: np.ndarray, text_states: np.ndarray, results: int = RESULTS
         ) -> tuple[np.ndarray, list[Match]]:
    """(the pattern's cells, the closest non-overlapping stretches of the text), where both
    states are (length, C) arrays of the same cells' activity."""
    cells = pattern_cells(phrase_states)
    pattern = phrase_states[:, cells].astype(np.float64)  # (L, K)
    length = len(pattern)
    if len(text_states) < length:
        return cells, []
    distance = np.sqrt(np.maximum(_window_squares(text_states[:, cells], pattern), 0.0)
                       / (length * len(cells)))
    found: list[Match] = []
    for start in np.argsort(distance, kind="stable"):
        if all(abs(int(start) - m.start) >= length for m in found):
            found.append(Match(int(start), float(distance[start])))
            if len(found) == results:
                break
    return cells, found


def _window_squares(text: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    """For each start s, the sum over the window's cells and characters of (text[s + t] -
    pattern[t])^2: |window|^2 - 2 window . pattern + |pattern|^2, the window's square from
    running sums and its product with the pattern by FFT, so the cost is N log N per cell,
    not N times the pattern's length."""
    n, length = len(text), len(pattern)
    x = text.astype(np.float64)
    sq = np.concatenate([[0.0], np.cumsum((x * x).sum(axis=1))])
    windows = sq[length:] - sq[: n - length + 1]  # (N - L + 1,)
    size = 1 << int(np.ceil(np.log2(n + length)))
    spectrum = np.fft.rfft(x, size, axis=0) * np.conj(np.fft.rfft(pattern, size, axis=0))
    cross = np.fft.irfft(spectrum, size, axis=0)[: n - length + 1].sum(axis=1)
    return windows - 2 * cross + float((pattern * pattern).sum())
