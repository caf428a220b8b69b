"""`charrnn explore`: the explorer's answers on planted states, the app driven by Textual's own
test harness, hostile text on screen, and the app run as a person runs it in a terminal."""

import asyncio
import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import invoke, train_run

from charrnn.errors import CharrnnError
from charrnn.interp.explorer import Explorer
from charrnn.interp.inspection import Inspection
from charrnn.vocab import Vocab

pytest.importorskip("textual", reason="the explore extra (Textual) is not installed")

C_TEXT = "".join(f"int f{i}(int x) {{ /* add {i} to it */ return x + {i}; }}\n"
                 for i in range(300))


def planted(text: str, layers: int = 2, hidden: int = 8, seed: int = 0) -> Inspection:
    """An inspection whose layer 2, cell 3 is on inside "<...>" and noise elsewhere."""
    rng = np.random.default_rng(seed)
    n = len(text)
    on = np.zeros(n)
    depth = 0
    for i, ch in enumerate(text):  # (a test may loop; the product never does)
        depth += ch == "<"
        on[i] = depth > 0
        depth -= ch == ">"
    states = {s: rng.normal(scale=0.3, size=(layers, n, hidden)).astype(np.float32)
              for s in ("c", "h", "input", "forget", "candidate", "output")}
    states["c"][1, :, 3] = np.where(on > 0, 0.9, -0.9)
    vocab = Vocab(sorted(set(text)))
    probs = rng.random((n, len(vocab))).astype(np.float32)
    return Inspection(text, vocab, "lstm", states, probs / probs.sum(1, keepdims=True))


TEXT = "alpha <beta> gamma delta <epsilon> zeta\n" * 20


def test_a_selection_ranks_the_cell_that_behaves_differently_there_first_and_matches():
    x = Explorer(planted(TEXT), [])
    start = TEXT.index("<beta>")
    x.select(start, start + len("<beta>"))
    assert (x.selected[0].layer, x.selected[0].cell) == (2, 3) and x.selected[0].score > 1
    assert x.selected[0].score > 1.3 * abs(x.selected[1].score)  # the noise cells behind
    # the other stretches most alike on those cells: inside the other bracketed words
    inside = planted(TEXT).states["c"][1, :, 3] > 0
    assert len(x.matches) == 5 and all(inside[m.start] for m in x.matches)
    assert all(abs(m.start - start) >= 6 for m in x.matches)  # not the selection itself
    x.clear_selection()
    assert x.selection is None and x.selected == []
    with pytest.raises(CharrnnError, match="2 characters or more"):
        x.select(5, 6)


def test_cells_layers_and_states_move_and_wrap():
    x = Explorer(planted(TEXT), [])
    assert (x.layer, x.cell, x.state) == (2, 0, "c")
    x.move_cell(-1)
    assert (x.layer, x.cell) == (1, 7)  # back from the first cell of layer 2: layer 1's last
    x.move_cell(1)
    x.move_layer(1)
    assert (x.layer, x.cell) == (1, 0)
    x.move_state(1)
    assert x.state == "h"
    x.move_state(-2)
    assert x.state == "output"
    x.jump("2:3")
    assert (x.layer, x.cell) == (2, 3)
    with pytest.raises(CharrnnError, match="cells are numbered 0 to 7"):
        x.jump("9")
    with pytest.raises(CharrnnError, match="not a cell"):
        x.jump("three")


def test_a_regex_probe_ranks_the_planted_cell_first_and_n_follows_the_ranking():
    x = Explorer(planted(TEXT), [])
    x.set_probe("regex:<[^>]*>")
    assert (x.layer, x.cell) == (2, 3) and x.ranking[0].score > 0.9
    rs = [abs(r.score) for r in x.ranking]
    assert rs == sorted(rs, reverse=True)
    x.move_cell(1)
    assert (x.layer, x.cell) == (x.ranking[1].layer, x.ranking[1].cell)
    x.move_cell(-1)
    assert "#1 for regex <[^>]*>" in x.title()


def test_the_cursor_says_what_the_model_predicted_and_search_finds_text():
    ins = planted(TEXT)
    x = Explorer(ins, [])
    assert x.search("gamma") and x.cursor == TEXT.index("gamma")
    assert x.search("gamma") and x.cursor == TEXT.index("gamma", TEXT.index("gamma") + 1)
    assert not x.search("omega")
    at = x.at_cursor()
    i = x.cursor
    assert at["char"] == "g"
    assert at["probability"] == pytest.approx(ins.next_probs[i - 1, ins.vocab.chars.index("g")])
    assert [q for _, q in at["next"]] == sorted(ins.next_probs[i], reverse=True)[:5]
    assert at["states"]["forget"] == pytest.approx(ins.states["forget"][1, i, 0])


@pytest.fixture(scope="module")
def c_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("explore")
    (folder / "code.c").write_text(C_TEXT)
    train_run(folder / "code.c", folder / "run", model={"hidden_size": 32, "layers": 2},
              max_steps=150, lr=1e-2, batch_size=16, seq_len=64, eval_every=150)
    (folder / "page.c").write_text(C_TEXT[:3000])
    return folder


def app_for(c_run, text="page.c", colour=True):
    from charrnn import api
    from charrnn.interp import views
    from charrnn.interp.explore_app import ExploreApp

    ins = api.load(c_run / "run").inspect(text_file=c_run / text, length=3000)
    x = Explorer(ins, ["--text", str(c_run / text), "--length", "3000"])
    return ExploreApp(x, str(c_run / "run"), colour,
                      html=lambda e: views.explorer_page(e, str(c_run / "run")))


def screen(pane) -> list[str]:
    return [pane.render_line(y).text for y in range(pane.size.height)]


@pytest.mark.slow
def test_the_app_finds_the_comment_cell_from_the_probe_panel_and_paints_it(c_run, tmp_path,
                                                                          monkeypatch):
    from charrnn.interp import probes, views

    monkeypatch.chdir(tmp_path)
    app = app_for(c_run)

    async def drive():
        async with app.run_test(size=(120, 36)) as pilot:
            await pilot.press("p")  # the probe picker, in --list-probes order
            for _ in range(list(probes.PROBES).index("comment")):
                await pilot.press("down")
            await pilot.press("enter")
            await app.workers.wait_for_complete()  # (the probe is worked out in a thread)
            await pilot.pause()
            chosen = (app.explorer.layer, app.explorer.cell)
            title, panel = app.title_text, app.panel_text
            painted = screen(app.pane)
            await pilot.press("n")
            second = (app.explorer.layer, app.explorer.cell)
            await pilot.press("b", "right_square_bracket", "s")
            moved = (app.explorer.layer, app.explorer.state)
            await pilot.press("slash", *"return", "enter")
            found = app.explorer.cursor
            await pilot.press("c")
            command = app.said
            await pilot.press("e", "enter")  # export, to the default explore.html
            await pilot.pause()
            await pilot.press("q")
        return chosen, title, panel, painted, second, moved, found, command

    chosen, title, panel, painted, second, moved, found, command = asyncio.run(drive())
    best = views.probe_answer(app.explorer.ins, "comment", "c")["cells"]
    assert chosen == best[0][:2] and second == best[1][:2]
    assert title.startswith(f"layer {chosen[0]} cell {chosen[1]} ") and "#1 for comment" in title
    assert panel.startswith("probe comment (c)") and f"> {chosen[0]}:{chosen[1]}" in panel
    assert painted[0].startswith("int·f0(int·x)·{·/*·add·0") or \
        painted[0].startswith("int f0(int x) { /* add 0")
    assert moved == (1 if chosen[0] == 2 else 2, "h")
    assert found == C_TEXT.index("return")
    assert command.startswith(f"charrnn inspect-cells {c_run / 'run'} --text ")
    page = (tmp_path / "explore.html").read_text()
    assert page.lower().startswith("<!doctype html") and "charrnn inspect-cells" in page


@pytest.mark.slow
def test_selecting_with_keys_ranks_cells_and_the_command_paints_the_same_cell(c_run):
    app = app_for(c_run)

    async def drive():
        async with app.run_test(size=(120, 36)) as pilot:
            await pilot.press("slash", *"/*", "enter", "v")
            for _ in range(12):
                await pilot.press("right")
            await pilot.press("v")
            await pilot.pause()
            return app.explorer.selection, list(app.explorer.selected), app.panel_text, \
                app.explorer.command(str(c_run / "run"))

    selection, selected, panel, command = asyncio.run(drive())
    start = C_TEXT.index("/*")
    assert selection == (start, start + 13) and len(selected) == 10
    assert f"selection {start:,}-{start + 13:,}: cells apart" in panel
    painted = invoke(*command.split()[1:], "--color", "never")
    assert painted.exit_code == 0, painted.output
    assert "layer 2 cell 0 · tanh(c), cell state" in painted.stdout


def test_a_click_moves_the_cursor_and_a_drag_selects():
    from charrnn.interp.explore_app import ExploreApp

    x = Explorer(planted(TEXT), [])
    app = ExploreApp(x, "run", True, html=lambda e: "")

    async def drive():
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.click("#text", offset=(4, 1))  # the second row, fifth character
            clicked = x.cursor
            await pilot.mouse_down("#text", offset=(6, 0))
            await pilot.mouse_up("#text", offset=(11, 0))
            await pilot.pause()
            return clicked, x.selection, app.panel_text

    clicked, selection, panel = asyncio.run(drive())
    assert clicked == TEXT.index("\n") + 1 + 4
    assert selection == (6, 12) and TEXT[6:12] == "<beta>"
    assert "selection 6-12: cells apart" in panel and "2:3" in panel


def test_hostile_text_keeps_the_layout_and_never_reaches_the_terminal_raw():
    from charrnn.interp.explore_app import ExploreApp

    text = ("plain \x1b[31mred\x1b[0m \x07bell 漢字の幅 e\u0301 \u202eevil\n"
            + "x" * 10_000 + "\nend\n")
    x = Explorer(planted(text), [])
    for colour in (True, False):
        app = ExploreApp(x, "run", colour, html=lambda e: "")

        async def drive(app=app):
            async with app.run_test(size=(80, 24)) as pilot:
                await pilot.press("down", "down", "end")
                await pilot.pause()
                pane = app.pane
                return [pane.render_line(y) for y in range(pane.size.height)], pane.size.width

        strips, width = asyncio.run(drive())
        assert all(s.cell_length <= width for s in strips)
        assert not any(ch in seg.text for s in strips for seg in s for ch in "\x1b\x07\u202e")
        if not colour:  # a row of blocks under each row of text
            assert any(set(s.text.strip()) <= set(" ▁▂▃▄▅▆▇█") and s.text.strip()
                       for s in strips)


@pytest.mark.slow
@pytest.mark.parametrize("end", ["q", "SIGTERM"])
def test_explore_runs_in_a_real_terminal_and_gives_it_back_as_it_was(c_run, cache_dir, end):
    """Left with q, or killed with SIGTERM: the alternate screen left, mouse tracking off, the
    cursor shown, the terminal's modes as they were."""
    import pyte

    master, slave = os.openpty()
    before = termios.tcgetattr(slave)
    env = {**os.environ, "TERM": "xterm-256color", "CHARRNN_CACHE_DIR": str(cache_dir),
           "COLUMNS": "100", "LINES": "30"}
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "charrnn", "explore", str(c_run / "run"),
                             "--text", str(c_run / "page.c"), "--length", "2000"],
                            stdin=slave, stdout=slave, stderr=slave, env=env,
                            start_new_session=True)
    screen = pyte.Screen(100, 30)
    stream = pyte.ByteStream(screen)
    raw = b""

    def read_until(done, timeout=90):
        nonlocal raw
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not done():
            if select.select([master], [], [], 0.1)[0]:
                data = os.read(master, 65536)
                raw += data
                stream.feed(data)
        return done()

    try:
        def shown():
            lines = screen.display
            return any("layer 2 cell 0" in line for line in lines) and any(
                "int f0(int x)" in line or "int·f0(int·x)" in line for line in lines)

        assert read_until(shown), "\n".join(screen.display)
        os.write(master, b"n")
        assert read_until(lambda: any("layer 2 cell 1" in line for line in screen.display))
        if end == "q":
            os.write(master, b"q")
        else:
            proc.send_signal(signal.SIGTERM)
        assert read_until(lambda: proc.poll() is not None, timeout=30)  # reading as it ends
        read_until(lambda: False, timeout=0.3)
        after = termios.tcgetattr(slave)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
        os.close(slave)
    assert proc.returncode == (0 if end == "q" else 128 + signal.SIGTERM)
    assert b"\x1b[?1049h" in raw and raw.rfind(b"\x1b[?1049l") > raw.rfind(b"\x1b[?1049h")
    assert raw.rfind(b"\x1b[?1000l") > raw.rfind(b"\x1b[?1000h")  # mouse tracking off
    assert raw.rfind(b"\x1b[?25h") > raw.rfind(b"\x1b[?25l")  # the cursor shown
    assert after == before  # the terminal's modes, as they were


def test_explore_without_a_terminal_or_the_extra_is_one_line(c_run, monkeypatch):
    result = invoke("explore", c_run / "run", catch_exceptions=True)
    assert result.exit_code == 1
    assert result.stderr.strip() == ("charrnn: error: charrnn explore needs a terminal; for a "
                                     "text report use `charrnn inspect-cells`")
    for name in [m for m in sys.modules if m == "textual" or m.startswith("textual.")]:
        monkeypatch.setitem(sys.modules, name, None)  # as if the extra were not installed
    monkeypatch.delitem(sys.modules, "charrnn.interp.explore_app", raising=False)
    import charrnn.interp

    monkeypatch.delattr(charrnn.interp, "explore_app", raising=False)
    result = invoke("explore", c_run / "run", catch_exceptions=True)
    assert result.exit_code == 1 and result.stderr.strip() == (
        "charrnn: error: charrnn explore needs Textual (textual is not installed): "
        "pip install 'charrnn[explore]'")


def test_the_command_passes_its_probe_state_and_language_to_the_explorer(c_run, monkeypatch):
    """`charrnn explore --probe P --state S --lang L` opens on that probe's ranking, in that
    state, reading the text as that language (the app itself is left out: its screen is
    tested above)."""
    import io

    from charrnn.interp import explore_app

    opened = {}

    def run(app):
        opened.update(probe=app.explorer.probe, state=app.explorer.state,
                      lang=app.explorer.lang)

    monkeypatch.setattr(explore_app.ExploreApp, "run", run)
    tty = type("Tty", (io.StringIO,), {"isatty": lambda s: True})
    from charrnn.cli import explore  # (the runner swaps sys.stdin and stdout for its own)
    monkeypatch.setattr(explore, "sys", SimpleNamespace(stdin=tty(), stdout=tty()))
    result = invoke("explore", c_run / "run", "--text", c_run / "page.c", "--probe", "comment",
                    "--state", "h", "--lang", "python", "--length", 2000)
    assert result.exit_code == 0, result.output
    assert opened["state"] == "h" and opened["lang"] == "python"
    assert opened["probe"] is not None and "comment" in str(opened["probe"])


@pytest.mark.slow
def test_a_pattern_that_backtracks_leaves_the_screen_answering_and_ends_in_one_line(
        monkeypatch):
    """A regex probe like (a|aa)+$ runs beside the screen, which answers keys meanwhile, and
    is stopped at its time limit with one line; the panels show their lines as lines."""
    from charrnn.interp import probes
    from charrnn.interp.explore_app import ExploreApp
    from charrnn.interp.explore_pane import Says

    monkeypatch.setattr(probes, "PATTERN_SECONDS", 1.5)
    app = ExploreApp(Explorer(planted("a" * 33 + "b\n" + "<x> y\n" * 20), []), "run", True,
                     html=lambda e: "")

    async def drive():
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("r", *"(a|aa)+$", "enter")
            await pilot.pause()
            began = time.monotonic()
            await pilot.press("n")  # while the pattern runs
            moved, answered = app.explorer.cell, time.monotonic() - began
            await app.workers.wait_for_complete()
            await pilot.pause()
            said = app.said
            await pilot.press("r", *"<[^>]*>", "enter")
            await app.workers.wait_for_complete()
            await pilot.pause()
            panels = [app.query_one(f"#{name}", Says).render().plain
                      for name in ("panel", "cursor")]
            return moved, answered, said, panels

    moved, answered, said, panels = asyncio.run(drive())
    assert moved == 1 and answered < 1.0
    assert "did not finish within 1.5 s" in said
    for panel in panels:
        assert "\\n" not in panel and len(panel.split("\n")) >= 2, panel
