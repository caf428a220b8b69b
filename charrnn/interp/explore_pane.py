"""The painted text of `charrnn explore`: only the rows on screen are drawn, each character as a
glyph (charrnn/output.py) on the colour of the cell's value there, as `inspect-cells` paints
it; with no colour, a row of block glyphs under each row of text. And the few lines of plain
text around it, redrawn alone when they change."""

from __future__ import annotations

import numpy as np
from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widget import Widget

from charrnn.errors import printable
from charrnn.interp.explorer import Explorer
from charrnn.interp.terminal import block, style_for
from charrnn.output import glyph

LEVELS = 64  # colour steps of the scale: styles are made once per step, not per character
CURSOR = Style(reverse=True, bold=True)


class TextPane(ScrollView, can_focus=True):
    """The text, painted by the explorer's cell; a cursor, and a selection underlined."""

    # the keys that would scroll a scroll view move the cursor instead (the view follows it)
    BINDINGS = [
        Binding("left", "app.move(-1)", show=False), Binding("right", "app.move(1)", show=False),
        Binding("up", "app.move_row(-1)", show=False),
        Binding("down", "app.move_row(1)", show=False),
        Binding("pageup", "app.move_row(-20)", show=False),
        Binding("pagedown", "app.move_row(20)", show=False),
        Binding("home", "app.to(0)", show=False), Binding("end", "app.to(-1)", show=False),
    ]

    def __init__(self, explorer: Explorer, colour: bool, **kw):
        super().__init__(**kw)
        self.explorer, self.colour = explorer, colour
        text = explorer.ins.text
        self.glyphs = [glyph(ch, leading=lead) for ch, lead in zip(text, _leading(text))]
        self.widths = np.array([cell_len(g) for g in self.glyphs], dtype=np.int32)
        self.starts = np.array([0], dtype=np.int64)  # where each row of text begins
        self._styles: dict[tuple[int, bool], Style] = {}
        self._laid_for = -1
        self.anchor: int | None = None  # where a selection being made began

    # -- layout: rows of at most the pane's width, a new row after each newline -------------

    def layout_rows(self, width: int) -> None:
        if width == self._laid_for or width < 4:
            return
        text, starts, used = self.explorer.ins.text, [0], 0
        for i, w in enumerate(self.widths.tolist()):
            if used + w > width and i > starts[-1]:
                starts.append(i)
                used = 0
            used += w
            if text[i] == "\n" and i + 1 < len(text):
                starts.append(i + 1)
                used = 0
        self.starts = np.array(starts, dtype=np.int64)
        self._laid_for = width
        per_row = 1 if self.colour else 2
        self.virtual_size = Size(width, len(starts) * per_row)

    def on_resize(self) -> None:
        self.layout_rows(self.size.width)
        self.refresh()

    def row_of(self, index: int) -> int:
        return int(np.searchsorted(self.starts, index, side="right")) - 1

    def row_span(self, row: int) -> tuple[int, int]:
        end = int(self.starts[row + 1]) if row + 1 < len(self.starts) else len(self.glyphs)
        return int(self.starts[row]), end

    # -- painting: only the rows on screen ---------------------------------------------------

    def render_line(self, y: int) -> Strip:
        self.layout_rows(self.size.width)
        per_row = 1 if self.colour else 2
        line = self.scroll_offset.y + y
        row, blocks = divmod(line, per_row)
        if row >= len(self.starts):
            return Strip.blank(self.size.width)
        start, end = self.row_span(row)
        values = self.explorer.values()[start:end]
        lo, hi = self.explorer.value_range()
        sel = self.explorer.selection
        segments = []
        for i, v in zip(range(start, end), values.tolist()):
            g = self.glyphs[i]
            if blocks:
                segments.append(Segment(block(v, lo, hi) * int(self.widths[i])))
                continue
            marked = sel is not None and sel[0] <= i < sel[1]
            style = self._style(v, lo, hi, marked)
            if i == self.explorer.cursor and self.has_focus:
                style = style + CURSOR if style else CURSOR
            segments.append(Segment(g, style))
        return Strip(segments).crop(0, self.size.width)

    def _style(self, value: float, lo: float, hi: float, marked: bool) -> Style | None:
        if not self.colour:
            return Style(underline=True) if marked else None
        step = int(round((np.clip(value, lo, hi) - lo) / (hi - lo) * (LEVELS - 1))) \
            if np.isfinite(value) else -1
        key = (step, marked)
        if key not in self._styles:
            at = lo + (hi - lo) * step / (LEVELS - 1) if step >= 0 else float("nan")
            self._styles[key] = style_for(at, lo, hi, underline=marked)
        return self._styles[key]

    def show_cursor(self) -> None:
        per_row = 1 if self.colour else 2
        row = self.row_of(self.explorer.cursor) * per_row
        top, height = self.scroll_offset.y, self.size.height
        if not top <= row < top + height - per_row + 1:
            self.scroll_to(y=max(row - height // 3, 0), animate=False)
        self.refresh()

    # -- the mouse: a click moves the cursor, a drag selects ---------------------------------

    def index_at(self, x: int, y: int) -> int | None:
        per_row = 1 if self.colour else 2
        row = (self.scroll_offset.y + y) // per_row
        if not 0 <= row < len(self.starts):
            return None
        start, end = self.row_span(row)
        edges = np.cumsum(self.widths[start:end])
        return min(start + int(np.searchsorted(edges, x, side="right")), max(end - 1, start))

    def on_mouse_down(self, event) -> None:
        self.focus()
        at = self.index_at(event.x, event.y)
        if at is not None:
            self.anchor = at
            self.explorer.cursor = at
            self.app.changed()

    def on_mouse_up(self, event) -> None:
        at = self.index_at(event.x, event.y)
        if at is not None and self.anchor is not None and abs(at - self.anchor) >= 1:
            self.app.select(min(self.anchor, at), max(self.anchor, at) + 1)
        self.anchor = None


class Says(Widget):
    """A few lines of plain text, redrawn alone when they change: no layout of the screen."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.text = ""

    def say(self, text: str) -> None:
        if text != self.text:
            self.text = text
            self.refresh()

    def render(self) -> Text:
        # each line made safe by itself: the lines stay lines, not a literal \n
        return Text("\n".join(printable(line) for line in self.text.split("\n")),
                    no_wrap=True, overflow="ellipsis")


def _leading(text: str) -> list[bool]:
    """For each character, whether it is indentation (spaces at the start of a line)."""
    out, lead = [], True
    for ch in text:
        lead = lead and ch in " \t"
        out.append(lead)
        if ch == "\n":
            lead = True
    return out
