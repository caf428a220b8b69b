"""Paint text in the terminal: each character's background is one value on a colour scale.

Text from the model or corpus only ever reaches Rich as `Text` objects, never as markup, and
control characters are drawn as visible symbols, so nothing in the text can restyle or drive
the terminal. Without colour (NO_COLOR, --color never, output not a terminal) each line of text
gets a line of block glyphs under it whose height is the value, so strong and weak activations
stay apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rich.cells import cell_len
from rich.color import Color
from rich.console import Console
from rich.style import Style
from rich.table import Table
from rich.text import Text

from charrnn.output import glyph

WHITE = (255, 255, 255)
RED = (202, 0, 32)  # -1 on the diverging scale, as in the paper's tanh(c) figures
BLUE = (5, 113, 176)  # +1
BLOCKS = " ▁▂▃▄▅▆▇█"  # no-colour magnitude: the value's height between the ends of its range


def mix(a, b, t: float) -> tuple[int, int, int]:
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))


def colour(value: float, lo: float, hi: float) -> tuple[int, int, int]:
    """Diverging for a signed range (-1 red, 0 white, +1 blue); white to blue for [0, 1]."""
    if not np.isfinite(value):
        return WHITE
    if lo < 0:
        t = float(np.clip(value / max(abs(lo), abs(hi)), -1, 1))
        return mix(WHITE, RED, -t) if t < 0 else mix(WHITE, BLUE, t)
    return mix(WHITE, BLUE, float(np.clip((value - lo) / (hi - lo), 0, 1)))


def block(value: float, lo: float, hi: float) -> str:
    if not np.isfinite(value):
        return " "
    t = float(np.clip((value - lo) / (hi - lo), 0, 1))
    return BLOCKS[int(round(t * (len(BLOCKS) - 1)))]


def style_for(value: float, lo: float, hi: float, underline: bool = False) -> Style:
    r, g, b = colour(value, lo, hi)
    dark = 0.299 * r + 0.587 * g + 0.114 * b < 140
    return Style(color="white" if dark else "black", bgcolor=Color.from_rgb(r, g, b),
                 underline=underline)


def rows(text: str, values: np.ndarray, width: int):
    """Split the text into display rows of at most `width` cells: [(glyphs, values, index)]."""
    out, row, used = [], [], 0
    at_line_start = True
    for i, ch in enumerate(text):
        at_line_start = at_line_start and ch in " \t"
        g = glyph(ch, leading=at_line_start)
        w = cell_len(g)
        if row and used + w > width:
            out.append(row)
            row, used = [], 0
        row.append((g, float(values[i]), i))
        used += w
        if ch == "\n":
            out.append(row)
            row, used, at_line_start = [], 0, True
    if row:
        out.append(row)
    return out


def use_colour(console: Console) -> bool:
    return console.color_system is not None and not console.no_color


@dataclass
class View:
    """One value per character of a text, on the scale lo..hi, under a title: what a heatmap
    (here) and the HTML page (page.py) both draw. `marks` underlines characters."""

    title: str
    values: np.ndarray  # (N,), NaN where there is no value
    lo: float
    hi: float
    marks: np.ndarray | None = None  # (N,) bool


def heatmap(console: Console, view: View, text: str) -> None:
    """Print a header and the text painted by the view's values (one per character)."""
    values, lo, hi, marks = np.asarray(view.values), view.lo, view.hi, view.marks
    finite = values[np.isfinite(values)]
    span = f"{finite.min():+.2f} to {finite.max():+.2f}" if len(finite) else "no values"
    console.print(Text(f"{view.title} · range {span} (scale {lo:g} to {hi:g})", style="bold"))
    coloured = use_colour(console)
    for row in rows(text, values, max(console.width, 8)):
        line = Text()
        for g, v, i in row:
            mark = marks is not None and bool(marks[i])
            line.append(g, style_for(v, lo, hi, mark) if coloured else None)
        console.print(line, no_wrap=True, overflow="ignore", crop=False)
        if not coloured:
            console.print(Text("".join(block(v, lo, hi) * cell_len(g) for g, v, _ in row)),
                          no_wrap=True, overflow="ignore", crop=False)
    console.print()


def correlation_table(ranked: list[tuple[int, int, float]]) -> Table:
    table = Table()
    table.add_column("rank", justify="right")
    table.add_column("layer", justify="right")
    table.add_column("cell", justify="right")
    table.add_column("correlation r", justify="right")
    for rank, (layer, cell, r) in enumerate(ranked, 1):
        table.add_row(str(rank), str(layer), str(cell), f"{r:+.3f}")
    return table


def saturation_table(rows_: list[tuple[int, str, float, float]]) -> Table:
    table = Table()
    for name, justify in (("layer", "right"), ("gate", "left"), ("left-saturated", "right"),
                          ("right-saturated", "right"), ("in between", "right")):
        table.add_column(name, justify=justify)
    for layer, gate, left, right in rows_:
        table.add_row(str(layer), gate, f"{left:.1%}", f"{right:.1%}",
                      f"{1 - left - right:.1%}")
    return table


def features(console: Console, learned, top: int) -> None:
    """`charrnn features`' listing: the `top` features of a learned dictionary by how often they
    fire, each with its three strongest contexts painted and the probe it follows best."""
    text, acts, frequency, labels = (learned.text, learned.acts, learned.frequency,
                                     learned.labels)
    alive = [f for f in sorted(range(len(frequency)), key=lambda f: -frequency[f])
             if frequency[f] > 0]
    for f in alive[:top]:
        name, r = labels[f]
        console.print(Text(f"feature {f}: fires on {frequency[f]:.1%} of characters; "
                           f"follows probe {name} best (r = {r:+.2f})", style="bold"))
        for at in acts[:, f].argsort(kind="stable")[::-1][:3]:
            lo, hi = max(int(at) - 30, 0), min(int(at) + 10, len(text))
            heatmap(console, View(f"  at character {int(at):,}", acts[lo:hi, f], 0.0,
                                  float(acts[:, f].max()) or 1.0), text[lo:hi])
    dead = acts.shape[1] - len(alive)
    if dead:
        console.print(Text(f"{dead} feature(s) never fire on this text"))
