"""Raw text to stdout, streamed: model text is written as it is, never through Rich markup."""

from __future__ import annotations

import io
import os
import sys
import time
import unicodedata
from contextlib import contextmanager
from typing import TextIO

from rich.cells import cell_len

from charrnn.errors import CharrnnError, os_reason


def visible(ch: str) -> str:
    """A character as --safe shows it: newlines and tabs as they are, every other control or
    invisible character (ESC, NUL, bidi overrides, lone surrogates) as a visible symbol."""
    return ch if ch in "\n\t" else glyph(ch)


def glyph(ch: str, leading: bool = False) -> str:
    """How a character is drawn: control and invisible characters become visible symbols."""
    if ch == "\n":
        return "↵"
    if ch == "\t":
        return "→"
    if ch == " ":
        return "·" if leading else " "  # indentation is shown; other spaces by their colour
    cp = ord(ch)
    if cp < 0x20:
        return chr(0x2400 + cp)  # ␀ ␁ ... ␟ control pictures
    if cp == 0x7F:
        return "␡"
    category = unicodedata.category(ch)
    if category in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
        return "�"  # C1 controls, bidi overrides, lone surrogates: never sent raw
    if category.startswith("M"):
        return "◌" + ch  # a combining mark alone gets a base to sit on
    if cell_len(ch) == 0:
        return "�"
    return ch


class TextOut:
    """Write generated text as it comes; flush at once on a terminal, every 50 ms elsewhere.

    By default the text is written raw, exactly as the model made it. With `safe`, control
    characters are shown as symbols, so text from an untrusted model cannot drive the terminal.
    """

    def __init__(self, stream: TextIO | None, interval: float = 0.05, safe: bool = False):
        if stream is None:  # Python's stdout when file descriptor 1 was closed
            raise CharrnnError("stdout is closed; send it somewhere (a file, or /dev/null)")
        self.safe = safe
        self._shown: dict[str, str] = {}
        self.buffer = getattr(stream, "buffer", None)
        self.stream = stream
        self.encoding = getattr(stream, "encoding", None) or "utf-8"
        self.interval = 0.0 if _isatty(stream) else interval
        self._last = time.monotonic()

    def isatty(self) -> bool:
        return _isatty(self.stream)

    def write(self, text: str) -> None:
        if self.safe:
            text = "".join(self._shown.get(ch) or self._shown.setdefault(ch, visible(ch))
                           for ch in text)
        if self.buffer is not None:
            # a lone surrogate (from an odd corpus) is written escaped rather than crashing
            self.buffer.write(text.encode(self.encoding, "backslashreplace"))
        else:
            self.stream.write(text)
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self.flush()

    def flush(self) -> None:
        (self.buffer or self.stream).flush()


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@contextmanager
def to_stdout():
    """Turn a failed write to stdout (full disk, closed descriptor) into one clear line; a
    closed pipe passes through, for the command line to end quietly."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as e:
        silence_stdout()
        raise CharrnnError(f"cannot write to stdout: {os_reason(e)}") from None


def silence_stdout() -> None:
    """Point stdout at the null device, so Python's flush at exit has nothing left to fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass
