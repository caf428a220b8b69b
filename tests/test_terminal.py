"""The live display on a real terminal: `charrnn train` run under a pseudo-terminal, its output
read through a terminal emulator (pyte), the screen checked as a person would see it."""

import fcntl
import os
import pty
import select
import struct
import sys
import termios
import time

import pyte
import pytest

COLUMNS, LINES = 110, 40
TEXT = "It was the best of times, it was the worst of times, it was the age of wisdom.\n" * 200


def run_in_a_terminal(args: list[str], env: dict, timeout: float = 120):
    """Run `python -m charrnn ARGS` with a pseudo-terminal as its stdin, stdout and stderr;
    yield the screen's lines each time output arrives, until it exits; return the exit code."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: a terminal of a known size, then charrnn
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", LINES, COLUMNS, 0, 0))
        os.execve(sys.executable, [sys.executable, "-m", "charrnn", *args], env)
    screen = pyte.Screen(COLUMNS, LINES)
    stream = pyte.ByteStream(screen)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if not ready:
                continue
            try:
                data = os.read(fd, 65536)
            except OSError:  # the child closed the terminal: it has exited
                break
            if not data:
                break
            stream.feed(data)
            yield [line.rstrip() for line in screen.display]
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status


@pytest.mark.slow
def test_the_live_display_redraws_one_bar_in_place_and_ends_clean(tmp_path, cache_dir):
    corpus = tmp_path / "dickens.txt"
    corpus.write_text(TEXT)
    env = {**os.environ, "CHARRNN_CACHE_DIR": str(cache_dir), "TERM": "xterm-256color",
           "COLUMNS": str(COLUMNS), "LINES": str(LINES)}
    env.pop("NO_COLOR", None)
    args = ["train", str(corpus), "--out", str(tmp_path / "run"), "--max-steps", "200",
            "--eval-every", "50", "--hidden-size", "64", "--layers", "1", "--seed", "1"]
    screens = list(run_in_a_terminal(args, env))
    live = [s for s in screens if not any(line.startswith("stopped at step") for line in s)]
    bars = [[line for line in s if line.startswith("train ")] for s in live]
    shown = [b[0] for b in bars if b]
    assert len(shown) > 2, screens[-1]  # the bar was redrawn as the run went
    assert all(len(b) <= 1 for b in bars)  # one bar, redrawn in place, never scrolled
    figures = [s[s.index(b[0]) + 1] for s, b in zip(live, bars) if b]  # the line below it
    assert all("…" not in line for line in shown)  # nothing of the bar cut short
    assert any(line.startswith("  step ") and "chars/s" in line for line in figures)
    percents = [int(line.split("%")[0].split()[-1]) for line in shown]
    assert percents == sorted(percents) and percents[-1] > percents[0]

    final = screens[-1]
    text = "\n".join(final)
    assert "\x1b" not in text  # every escape sequence was one the terminal understood
    starts = [i for i, line in enumerate(final) if line.startswith("training 1x64 lstm")]
    evals = [i for i, line in enumerate(final) if " val loss " in line]
    stop = [i for i, line in enumerate(final) if line.startswith("stopped at step 200 ")]
    assert len(starts) == 1 and len(evals) == 4 and len(stop) == 1, text
    assert starts[0] < evals[0] and evals[-1] < stop[0]  # in the order they happened
    bar = [i for i, line in enumerate(final) if line.startswith("train ")]
    assert len(bar) == 1 and "100%" in final[bar[0]], text  # it stays, finished, above the end
    assert final[bar[0] + 1].startswith("  step 200 · epoch ")
    assert final[stop[0] + 1].startswith("sample from it with:  charrnn sample ")
