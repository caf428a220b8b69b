"""`charrnn explore`: the explorer (charrnn/interp/explorer.py) on a full screen, with Textual.

The text is painted as `inspect-cells` paints it (the same colour scale and glyphs; with no
colour, a row of block glyphs under each row of text), and only the rows on screen are drawn:
moving to another cell repaints what is visible, whatever the text's length. Every character
of the text reaches the screen as a glyph (charrnn/output.py), never as a control sequence.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import numpy as np
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, OptionList

from charrnn.errors import CharrnnError
from charrnn.interp import probes
from charrnn.interp.explore_pane import Says, TextPane
from charrnn.interp.explorer import Explorer
from charrnn.output import glyph


class ExploreApp(App):
    """Full screen: the painted text on the left, the probe and the selection on the right, what
    the model said at the cursor below; a line for typing when a key asks for one."""

    CSS = """
    #left { width: 1fr; }
    #side { width: 40; border-left: solid $primary; padding: 0 1; }
    #panel { height: 1fr; }
    #title { height: 1; background: $boost; }
    #cursor { height: 3; border-top: solid $primary; }
    #status { height: 1; }
    #probes { height: 14; display: none; }
    #ask { display: none; }
    """
    BINDINGS = [
        Binding("q", "quit", "quit"),
        Binding("n", "cell(1)", "next cell"), Binding("b", "cell(-1)", "previous cell"),
        Binding("right_square_bracket", "layer(1)", "next layer"),
        Binding("left_square_bracket", "layer(-1)", "previous layer"),
        Binding("s", "state(1)", "next state"), Binding("S", "state(-1)", "previous state"),
        Binding("g", "ask('cell')", "go to cell"), Binding("slash", "ask('search')", "search"),
        Binding("full_stop", "search_again", "search again"),
        Binding("p", "probes", "probe"), Binding("r", "ask('regex')", "regex probe"),
        Binding("x", "clear_probe", "no probe"),
        Binding("v", "mark", "select"), Binding("escape", "unselect", "clear selection"),
        Binding("e", "ask('html')", "export HTML"), Binding("c", "command", "command line"),
    ]

    def __init__(self, explorer: Explorer, run: str, colour: bool = True, html=None):
        super().__init__()
        self.explorer, self.run_name, self.colour = explorer, run, colour
        self.html = html  # (explorer) -> the page, as `--html` writes it
        self.asking: str | None = None
        self.last_search = ""
        self.mark: int | None = None
        self.said = ""  # the status line: a message, or the keys

    def compose(self) -> ComposeResult:
        with Horizontal():
            with Vertical(id="left"):
                yield Says(id="title")
                yield TextPane(self.explorer, self.colour, id="text")
                yield Says(id="cursor")
            with Vertical(id="side"):
                yield OptionList(*probes.PROBES, id="probes", markup=False)
                yield Says(id="panel")
        yield Input(id="ask")
        yield Says(id="status")

    def on_mount(self) -> None:
        # killed (SIGTERM, a closed terminal's SIGHUP), it leaves as on q: the terminal given
        # back as it was, out of the alternate screen, mouse tracking off, the cursor shown
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, self.exit, None, 128 + signum)
        self.pane.focus()
        self.changed("n/b cell · [/] layer · s state · p probe · / search · v select · "
                     "e HTML · c command · q quit")

    @property
    def pane(self) -> TextPane:
        return self.query_one("#text", TextPane)

    # -- what the screen shows ---------------------------------------------------------------

    def changed(self, said: str | None = None) -> None:
        """Redraw the title, the side panel and the cursor's line (and the visible rows)."""
        if said is not None:
            self.said = said
        x = self.explorer
        self.title_text = x.title()
        self.panel_text = self._panel()
        self.cursor_text = self._cursor_lines()
        for name, text in (("title", self.title_text), ("panel", self.panel_text),
                           ("cursor", self.cursor_text), ("status", self.said)):
            self.query_one(f"#{name}", Says).say(text)
        self.pane.show_cursor()

    def _panel(self) -> str:
        x, lines = self.explorer, []
        if x.probe is not None:
            lines.append(f"probe {x.probe} ({x.lang})")
            lines += [f"{'>' if (r.layer, r.cell) == (x.layer, x.cell) else ' '} "
                      f"{r.layer}:{r.cell:<5} r {r.score:+.3f}" for r in x.ranking[:12]]
            if not x.ranking:
                lines.append("  the same all through this text")
        else:
            lines.append("no probe: p to choose one, r for a regex")
        if x.selection is not None:
            a, b = x.selection
            lines += ["", f"selection {a:,}-{b:,}: cells apart", *[
                f"  {r.layer}:{r.cell:<5} {r.score:+.2f} sd" for r in x.selected[:8]],
                "like it:", *[f"  at {m.start:,} (distance {m.distance:.2f})"
                              for m in x.matches]]
        return "\n".join(lines)

    def _cursor_lines(self) -> str:
        at = self.explorer.at_cursor()
        p = "" if at["probability"] is None else f", p {at['probability']:.3f}"
        nxt = "  ".join(f"{glyph(ch)} {q:.2f}" for ch, q in at["next"])
        states = "  ".join(f"{s} {v:+.2f}" for s, v in at["states"].items())
        return (f"at {at['index']:,}: {glyph(at['char'])}{p} · next: {nxt}\n"
                f"cell {self.explorer.layer}:{self.explorer.cell}: {states}")

    # -- keys --------------------------------------------------------------------------------

    def action_cell(self, step: int) -> None:
        self.explorer.move_cell(step)
        self.changed()

    def action_layer(self, step: int) -> None:
        self.explorer.move_layer(step)
        self.changed()

    def action_state(self, step: int) -> None:
        self.explorer.move_state(step)
        self.changed()

    def action_move(self, step: int) -> None:
        x = self.explorer
        x.cursor = int(np.clip(x.cursor + step, 0, len(x.ins.text) - 1))
        self.changed()

    def action_move_row(self, step: int) -> None:
        pane, x = self.pane, self.explorer
        row = int(np.clip(pane.row_of(x.cursor) + step, 0, len(pane.starts) - 1))
        start, end = pane.row_span(row)
        x.cursor = min(start + (x.cursor - pane.row_span(pane.row_of(x.cursor))[0]),
                       max(end - 1, start))
        self.changed()

    def action_to(self, where: int) -> None:
        self.explorer.cursor = where % len(self.explorer.ins.text)
        self.changed()

    def action_mark(self) -> None:
        x = self.explorer
        if self.mark is None:
            self.mark = x.cursor
            self.changed(f"selecting from {x.cursor:,}: move, then v again")
            return
        start, end, self.mark = min(self.mark, x.cursor), max(self.mark, x.cursor) + 1, None
        self.select(start, end)

    def select(self, start: int, end: int) -> None:
        try:
            self.explorer.select(start, end)
        except CharrnnError as e:
            self.changed(str(e))
            return
        self.changed(f"selected {start:,} to {end:,}")

    def action_unselect(self) -> None:
        self.mark = None
        self.explorer.clear_selection()
        self.query_one("#probes", OptionList).display = False
        self._close_ask()
        self.changed("")

    def action_probes(self) -> None:
        picker = self.query_one("#probes", OptionList)
        picker.display = True
        picker.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.option_list.display = False
        self._probe(str(event.option.prompt))

    def _probe(self, name: str) -> None:
        """Rank the cells by a probe: its feature worked out in a thread (a user's pattern may
        run for seconds, and the screen, q and Ctrl-C go on answering meanwhile)."""
        self.changed(f"probe {name}: working it out over the text...")
        self.run_worker(lambda: self._feature(name), thread=True, exclusive=True,
                        group="probe")

    def _feature(self, name: str) -> None:  # (in the worker's thread)
        try:
            feature = self.explorer.feature_of(name)
        except CharrnnError as e:
            self.call_from_thread(self.changed, str(e))
            return
        self.call_from_thread(self._ranked, name, feature)

    def _ranked(self, name: str, feature) -> None:
        self.explorer.rank(name, feature)
        self.pane.focus()
        self.changed(f"probe {name}: n and b go through its cells by |r|")

    def action_clear_probe(self) -> None:
        self.explorer.clear_probe()
        self.changed("no probe: n and b go by cell number")

    def action_search_again(self) -> None:
        found = self.explorer.search(self.last_search)
        self.changed("" if found else f"{self.last_search!r} is not in the text")

    def action_command(self) -> None:
        self.changed(self.explorer.command(self.run_name))

    def action_ask(self, what: str) -> None:
        ask = self.query_one("#ask", Input)
        ask.placeholder = {"cell": "cell (17, or 2:17)", "search": "search the text",
                           "regex": "a regular expression", "html": "HTML file to write"}[what]
        ask.value = "explore.html" if what == "html" else ""
        self.asking = what
        ask.display = True
        ask.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        what, value = self.asking, event.value
        self._close_ask()
        try:
            if what == "cell":
                self.explorer.jump(value)
                self.changed("")
            elif what == "search":
                self.last_search = value
                self.action_search_again()
            elif what == "regex":
                self._probe("regex:" + value)
            elif what == "html":
                self._export(Path(value))
        except CharrnnError as e:
            self.changed(str(e))

    def _close_ask(self) -> None:
        ask = self.query_one("#ask", Input)
        ask.display = False
        self.asking = None
        self.pane.focus()

    def _export(self, path: Path) -> None:
        from charrnn.errors import describe_os_error
        from charrnn.fileio import atomic_write_text, check_new_file

        if path.is_file() and not path.is_symlink():
            raise CharrnnError(f"{path} already exists; give another name")
        check_new_file(path, "the page", force=False)
        try:
            atomic_write_text(path, self.html(self.explorer))
        except OSError as e:
            raise CharrnnError(describe_os_error(e, "write")) from None
        self.changed(f"wrote {path}; the same view: {self.explorer.command(self.run_name)}")
