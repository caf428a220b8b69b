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
    pattern = phrase_states[:, cells]  # (L, K)
    length = len(pattern)
    if len(text_states) < length:
        return cells, []
    windows = np.lib.stride_tricks.sliding_window_view(text_states[:, cells], length, axis=0)
    # windows: (N - L + 1, K, L); distance to the pattern, per start
    distance = np.sqrt(((windows - pattern.T[None]) ** 2).mean(axis=(1, 2)))
    found: list[Match] = []
    for start in np.argsort(distance, kind="stable"):
        if all(abs(int(start) - m.start) >= length for m in found):
            found.append(Match(int(start), float(distance[start])))
            if len(found) == results:
                break
    return cells, found
