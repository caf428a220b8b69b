"""What `inspect-cells` shows: the views of one inspection, for the terminal and for HTML.

A view is a title and one value per character (with its scale); the terminal paints it with
`terminal.heatmap`, the HTML page with the same colours. Tables (probe rankings, gate
saturation) and summary lines go beside the views.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

from charrnn.config import InspectConfig
from charrnn.interp import html_page, layerprobe, match, probes, terminal
from charrnn.interp.inspection import Inspection, default_state, state_label, value_range
from charrnn.interp.terminal import View

MIN_LAYER_PROBE_CHARS = 200  # a held-out part of 30% needs some length to say anything


@dataclass
class TableView:
    heading: str
    table: Table  # a Rich table


@dataclass
class Report:
    views: list[View] = field(default_factory=list)
    tables: list[TableView] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # summary lines


def cell_view(ins: Inspection, state: str, layer: int, cell: int, note: str = "") -> View:
    lo, hi = value_range(state)
    return View(f"layer {layer} cell {cell} · {state_label(state)}{note}",
                ins.values(state, layer, cell), lo, hi)


def build(ins: Inspection, req: InspectConfig) -> Report:
    """Every view, table and line that `req` asks of an inspection."""
    state = req.state or default_state(ins.model)
    ins.check(state, req.layer, req.cells)
    chosen = [probes.get(name) for name in req.probes]
    chosen += [probes.regex_probe(pattern) for pattern in req.regexes]
    lang = req.lang or probes.detect(ins.text)
    report = Report()
    if req.cells:
        layer = req.layer or ins.layers
        report.views += [cell_view(ins, state, layer, c) for c in req.cells]
    elif not (chosen or req.gates or req.surprisal):
        report.views += [cell_view(ins, state, k, c, " (one of the most active cells)")
                         for k, c in ins.most_active(state, req.top, req.layer)]
    if chosen:
        report.lines.append(f"probes read the text as {lang}"
                            + ("" if req.lang else " (detected; --lang to say otherwise)"))
        columns = ins.columns(state)  # (N, layers * H), shared by every probe
        for probe in chosen:
            _probe_views(report, ins, state, probe, lang, req.top, columns)
    if ins.feature is not None:
        title, acts = ins.feature
        report.views.append(View(f"{title}: how strongly it fires (blue)", acts, 0.0,
                                 float(acts.max()) or 1.0))
    if ins.matching is not None:
        _match_lines(report, ins, state)
    if ins.ablation is not None:
        _ablation_views(report, ins, chosen, lang)
    if req.gates:
        _gate_table(report, ins)
    if req.surprisal:
        _surprisal_view(report, ins)
    return report


def ranked_cells(ins: Inspection, feature: np.ndarray, columns: np.ndarray, top: int
                 ) -> list[tuple[int, int, float]]:
    """(layer, cell, r) of the `top` cells by |r| with `feature`."""
    r = probes.correlations(columns, feature)
    order = np.argsort(-np.abs(r), kind="stable")[:top]
    return [(int(k) // ins.hidden_size + 1, int(k) % ins.hidden_size, float(r[k]))
            for k in order]


def probe_answer(ins: Inspection, name: str, state: str | None = None, top: int = 10,
                 lang: str | None = None) -> dict:
    """The Python API's probe: the cells by |r| and each layer's score (see Inspection)."""
    state = state or default_state(ins.model)
    ins.check(state)
    probe = (probes.regex_probe(name[len("regex:"):]) if name.startswith("regex:")
             else probes.get(name))
    feature = probe.feature(ins.text, lang or probes.detect(ins.text))
    if np.ptp(feature) == 0:
        return {"cells": [], "layers": []}
    layers = (layerprobe.probe_layers(ins.states[state], feature)
              if len(feature) >= MIN_LAYER_PROBE_CHARS else [])
    return {"cells": ranked_cells(ins, feature, ins.columns(state), top), "layers": layers}


def _probe_views(report: Report, ins: Inspection, state: str, probe, lang: str, top: int,
                 columns: np.ndarray) -> None:
    feature = probe.feature(ins.text, lang)
    if np.ptp(feature) == 0:
        report.lines.append(f"probe {probe.name} ({probe.help}) is the same all through this "
                            "text, so no cell can follow it; inspect a text where it changes "
                            "(--text, --offset)")
        return
    ranked = ranked_cells(ins, feature, columns, top)
    report.tables.append(TableView(f"Probe {probe.name} ({probe.help}): the cells of "
                                   f"{state_label(state)} by |r|",
                                   terminal.correlation_table(ranked)))
    layer, cell, best_r = ranked[0]
    report.views.append(cell_view(ins, state, layer, cell,
                                  f" · best for probe {probe.name}, r = {best_r:+.3f}"))
    if len(feature) >= MIN_LAYER_PROBE_CHARS:
        report.lines += [layerprobe.score_line(probe.name, s)
                         for s in layerprobe.probe_layers(ins.states[state], feature)]


def _match_lines(report: Report, ins: Inspection, state: str) -> None:
    phrase = ins.matching
    cells, found = match.find(phrase.columns(state), ins.columns(state))
    named = ", ".join(f"{int(k) // ins.hidden_size + 1}:{int(k) % ins.hidden_size}"
                      for k in cells)
    report.lines.append(f"--match {phrase.text!r}: its most active cells of "
                        f"{state_label(state)} are {named}; the closest stretches:")
    for m in found:
        stretch = ins.text[m.start: m.start + len(phrase.text)]
        report.lines.append(f"  at character {m.start:,}: {stretch!r} (distance "
                            f"{m.distance:.3f})")
    if not found:
        report.lines.append("  none: the text is shorter than the phrase")


def _ablation_views(report: Report, ins: Inspection, chosen: list, lang: str) -> None:
    named, rise = ins.ablation
    report.lines.append(f"holding {named} at their mean changes the loss by "
                        f"{rise.mean():+.4f} nats per character")
    for probe in chosen:
        on = probe.feature(ins.text, lang)[1:] > 0
        if on.any() and (~on).any():
            report.lines.append(f"  inside probe {probe.name}: {rise[on].mean():+.4f}; "
                                f"outside: {rise[~on].mean():+.4f}")
    scale = float(np.abs(rise).max()) or 1.0
    report.views.append(View(f"loss change with {named} held at their mean (red: it rose)",
                             np.concatenate([[np.nan], -rise]), -scale, scale))


def _gate_table(report: Report, ins: Inspection) -> None:
    rows = ins.gate_saturation()
    if not rows:
        report.lines.append("a vanilla RNN has no gates: --gates shows nothing for it")
        return
    report.tables.append(TableView("Gate saturation: the fraction of time steps below 0.1 "
                                   "(left) and above 0.9 (right), as in the paper",
                                   terminal.saturation_table(rows)))


def _surprisal_view(report: Report, ins: Inspection) -> None:
    p, bits = ins.surprisal()
    wrong = np.nan_to_num(p, nan=1.0) < 0.5
    report.views.append(View("probability the model gave each character (red: surprising; "
                             "underlined: below 0.5, a mistake)", 2 * p - 1, -1.0, 1.0,
                             marks=wrong))
    scored = len(p) - 1
    report.lines.append(f"{bits:.3f} bits per character over {scored:,} predicted characters; "
                        f"{int(wrong.sum()):,} ({wrong.sum() / scored:.1%}) got a probability "
                        "below 0.5")


def list_probes(console: Console, known) -> None:
    """What --list-probes prints."""
    for p in known:
        console.print(Text(f"{p.name:<10} {p.help}"))
    console.print(Text("--probe-regex PATTERN: on inside matches of PATTERN"))


def show(console: Console, report: Report, ins: Inspection) -> None:
    for t in report.tables:
        console.print(Text(t.heading, style="bold"))
        console.print(t.table)
        console.print()
    for line in report.lines:
        console.print(Text(line))
    if report.lines:
        console.print()
    for view in report.views:
        terminal.heatmap(console, view, ins.text)


def html(title: str, report: Report, ins: Inspection) -> str:
    top_ids, top_p = ins.top_predictions(5)
    glyphs = [[terminal.glyph(ins.vocab.chars[i]) for i in row] for row in top_ids]
    summary = list(report.lines)
    for t in report.tables:  # the tables as plain lines, escaped by the page
        console = Console(width=120, record=True, file=io.StringIO(), color_system=None)
        console.print(t.table)
        summary += ["", t.heading] + console.export_text().rstrip().splitlines()
    return html_page.build(title, ins.text, report.views, glyphs, top_p, summary)


def explorer_page(x, run: str) -> str:
    """The explorer's view as the `--html` page: its cell, and what its panel says."""
    report = Report()
    report.views.append(cell_view(x.ins, x.state, x.layer, x.cell))
    if x.probe is not None:
        report.lines.append(f"probe {x.probe}: " + ", ".join(
            f"{r.layer}:{r.cell} r {r.score:+.3f}" for r in x.ranking[:10]))
    if x.selection is not None:
        report.lines.append(f"selection {x.selection[0]}-{x.selection[1]}: " + ", ".join(
            f"{r.layer}:{r.cell} {r.score:+.2f} sd" for r in x.selected))
    report.lines.append(x.command(run))
    return html(f"charrnn explore {run}", report, x.ins)
