"""What `charrnn explore` knows and answers, without the screen: one inspection held as arrays,
the cell, layer and state in view, a probe's ranking, a selection's ranking and its matches,
what the model said at the cursor, and the `inspect-cells` line that paints the same view.

Everything a key asks is a slice of arrays computed once: a cell's values are a view into the
states, a probe's ranking one product per layer, a selection's ranking the sum over the
selection against sums over the whole text kept from the first time a state is asked.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

import numpy as np

from charrnn.errors import CharrnnError
from charrnn.interp import inspection, match, probes
from charrnn.interp.inspection import Inspection, default_state, state_label, states_of

SELECTED = 10  # cells a selection ranks and matches on


@dataclass
class Ranked:
    layer: int  # 1-based
    cell: int
    score: float  # r for a probe; the difference in standard deviations for a selection


class Explorer:
    """Where a person stands in one inspection, and the questions they can ask of it."""

    def __init__(self, ins: Inspection, source: list[str]):
        self.ins = ins
        self.source = source  # the inspect-cells arguments that give this text (--text F ...)
        self.states = list(states_of(ins.model))
        self.state = default_state(ins.model)
        self.layer, self.cell = ins.layers, 0
        self.cursor = 0
        self.probe: str | None = None  # a name of probes.PROBES, or "regex:PATTERN"
        self.ranking: list[Ranked] = []
        self.selection: tuple[int, int] | None = None  # [start, end) of the text
        self.selected: list[Ranked] = []  # the cells the selection ranks first
        self.matches: list[match.Match] = []
        self.lang = probes.detect(ins.text)
        self._sums: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # state -> (sum, sum sq)

    # -- the cell in view --------------------------------------------------------------------

    def values(self) -> np.ndarray:
        return self.ins.states[self.state][self.layer - 1, :, self.cell]

    def value_range(self) -> tuple[float, float]:
        return inspection.value_range(self.state)

    def title(self) -> str:
        where = f"layer {self.layer} cell {self.cell} · {state_label(self.state)}"
        rank = self._rank_of_view()
        if rank is not None:
            where += f" · #{rank + 1} for {self._probe_name()}, r = {self.ranking[rank].score:+.3f}"
        return where

    def move_cell(self, step: int) -> None:
        """The next (or previous) cell: in the probe's rank order when there is one, else by
        number, across the layers."""
        if self.ranking:
            rank = self._rank_of_view()
            rank = 0 if rank is None and step > 0 else (rank or 0) + step
            best = self.ranking[rank % len(self.ranking)]
            self.layer, self.cell = best.layer, best.cell
            return
        k = ((self.layer - 1) * self.ins.hidden_size + self.cell + step) % (
            self.ins.layers * self.ins.hidden_size)
        self.layer, self.cell = k // self.ins.hidden_size + 1, k % self.ins.hidden_size

    def move_layer(self, step: int) -> None:
        self.layer = (self.layer - 1 + step) % self.ins.layers + 1

    def move_state(self, step: int) -> None:
        i = self.states.index(self.state)
        self.state = self.states[(i + step) % len(self.states)]
        if self.probe is not None:  # the ranking is of this state's cells; the view stays
            self.set_probe(self.probe, keep_view=True)
        if self.selection is not None:
            self.select(*self.selection)

    def jump(self, text: str) -> None:
        """To a cell by number: "17" in this layer, or "2:17" (layer 2, cell 17)."""
        m = re.fullmatch(r"\s*(?:(\d+)\s*:)?\s*(\d+)\s*", text)
        if not m:
            raise CharrnnError(f"{text!r} is not a cell; give a number like 17, or 2:17")
        layer = int(m.group(1)) if m.group(1) else self.layer
        cell = int(m.group(2))
        self.ins.check(self.state, layer, [cell])
        self.layer, self.cell = layer, cell

    # -- probes ------------------------------------------------------------------------------

    def set_probe(self, name: str, top: int = 20, keep_view: bool = False) -> None:
        """Rank every cell of every layer by |r| with a probe (a name, or "regex:PATTERN")
        and show the best (or, with `keep_view`, stay on the cell in view)."""
        self.rank(name, self.feature_of(name), top, keep_view)

    def feature_of(self, name: str) -> np.ndarray:
        """A probe's feature over the text: the slow part of set_probe (a user's pattern may
        take seconds), which explore runs beside its screen."""
        probe = (probes.regex_probe(name[len("regex:"):]) if name.startswith("regex:")
                 else probes.get(name))
        return probe.feature(self.ins.text, self.lang).astype(np.float64)

    def rank(self, name: str, feature: np.ndarray, top: int = 20,
             keep_view: bool = False) -> None:
        """Rank the cells by |r| with a probe's `feature` (see set_probe)."""
        self.probe = name
        if np.ptp(feature) == 0:
            self.ranking = []
            return
        r = self._correlations(feature)
        order = np.argsort(-np.abs(r), kind="stable")[:top]
        h = self.ins.hidden_size
        self.ranking = [Ranked(int(k) // h + 1, int(k) % h, float(r[k])) for k in order]
        if not keep_view:
            self.layer, self.cell = self.ranking[0].layer, self.ranking[0].cell

    def _correlations(self, feature: np.ndarray) -> np.ndarray:
        """Pearson r of every cell of every layer with `feature`: one product per layer with
        the centred feature, over the column sums kept for the state (no copy of the states)."""
        states = self.ins.states[self.state]
        n = states.shape[1]
        f = (feature - feature.mean()).astype(np.float32)
        total, squares = self._totals()
        spread = np.sqrt(np.maximum(squares - total * total / n, 0.0)) * np.sqrt(float(f @ f))
        cross = np.stack([f @ layer for layer in states]).astype(np.float64)  # (layers, H)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.where(spread > 1e-12, cross / spread, 0.0)
        return np.nan_to_num(r, nan=0.0).ravel()

    def clear_probe(self) -> None:
        self.probe, self.ranking = None, []

    def _probe_name(self) -> str:
        return f"regex {self.probe[6:]}" if self.probe and self.probe.startswith("regex:") \
            else str(self.probe)

    def _rank_of_view(self) -> int | None:
        for i, r in enumerate(self.ranking):
            if (r.layer, r.cell) == (self.layer, self.cell):
                return i
        return None

    # -- a selection: which cells behave differently inside it, and where else they do -------

    def select(self, start: int, end: int) -> None:
        """Rank the cells of every layer by how far their mean inside [start, end) is from
        their mean outside it, in standard deviations over the text (LSTMVis's select), and
        find the other stretches whose activity on the first of them is most alike (its
        match)."""
        start, end = sorted((max(start, 0), min(end, len(self.ins.text))))
        if end - start < 2 or end - start > len(self.ins.text) - 2:
            raise CharrnnError("select a stretch of 2 characters or more, not the whole text")
        self.selection = (start, end)
        states = self.ins.states[self.state]  # (layers, N, H)
        total, squares = self._totals()
        n, k = states.shape[1], end - start
        inside = states[:, start:end].sum(axis=1, dtype=np.float64)  # (layers, H)
        mean_in, mean_out = inside / k, (total - inside) / (n - k)
        std = np.sqrt(np.maximum(squares / n - (total / n) ** 2, 1e-12))
        score = ((mean_in - mean_out) / std).ravel()
        order = np.argsort(-np.abs(score), kind="stable")[:SELECTED]
        h = self.ins.hidden_size
        self.selected = [Ranked(int(i) // h + 1, int(i) % h, float(score[i])) for i in order]
        columns = np.stack([states[r.layer - 1, :, r.cell] for r in self.selected], axis=1)
        _, found = match.find(columns[start:end], columns, results=6)
        self.matches = [m for m in found if abs(m.start - start) >= k][:5]

    def clear_selection(self) -> None:
        self.selection, self.selected, self.matches = None, [], []

    def _totals(self) -> tuple[np.ndarray, np.ndarray]:
        if self.state not in self._sums:  # by matrix products, in float32 blocks
            s = self.ins.states[self.state]
            total = np.zeros(s.shape[::2])
            squares = np.zeros(s.shape[::2])
            for k, layer in enumerate(s):
                for block in range(0, len(layer), 1 << 16):
                    part = layer[block: block + (1 << 16)]
                    total[k] += part.sum(axis=0, dtype=np.float32)
                    squares[k] += np.einsum("nh,nh->h", part, part)
            self._sums[self.state] = (total, squares)
        return self._sums[self.state]

    # -- the cursor --------------------------------------------------------------------------

    def search(self, pattern: str, forward: bool = True) -> bool:
        """Move the cursor to the next place the text holds `pattern` (plain text); False if
        it holds it nowhere."""
        text = self.ins.text
        if not pattern:
            return False
        if forward:
            at = text.find(pattern, self.cursor + 1)
            at = text.find(pattern) if at < 0 else at
        else:
            at = text.rfind(pattern, 0, self.cursor)
            at = text.rfind(pattern) if at < 0 else at
        if at < 0:
            return False
        self.cursor = at
        return True

    def at_cursor(self) -> dict:
        """The character at the cursor, its probability given the text before it, the five
        likeliest next characters, and the selected cell's value in every state there."""
        i, ins = self.cursor, self.ins
        chars = ins.vocab.chars
        p = (float(ins.next_probs[i - 1, chars.index(ins.text[i])]) if i > 0 else None)
        order = np.argsort(-ins.next_probs[i], kind="stable")[:5]
        gates = {s: float(ins.states[s][self.layer - 1, i, self.cell]) for s in self.states}
        return {"index": i, "char": ins.text[i], "probability": p,
                "next": [(chars[j], float(ins.next_probs[i, j])) for j in order],
                "states": gates}

    # -- the same view elsewhere -------------------------------------------------------------

    def command(self, run: str) -> str:
        """The `charrnn inspect-cells` line that paints this view."""
        args = ["charrnn", "inspect-cells", run, *self.source, "--state", self.state]
        if self.probe is not None and self.ranking and self._rank_of_view() == 0:
            args += (["--probe-regex", self.probe[6:]] if self.probe.startswith("regex:")
                     else ["--probe", self.probe])
        else:
            args += ["--layer", str(self.layer), "--cells", str(self.cell)]
        return shlex.join(args)
