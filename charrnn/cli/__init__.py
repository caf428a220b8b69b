"""The command line: an argument surface over the library, one module per group of commands.

    charrnn train corpus.txt                        learn a character model of any text
    charrnn sample runs/corpus --temp 0.8           stream new text from it
    charrnn inspect-cells runs/corpus               see what its hidden cells track
"""

from __future__ import annotations

import os
import sys
import time
from typing import NoReturn

from charrnn.cli import base, corpus, explore, inspect, report, sample, serve, train  # noqa: F401
from charrnn.cli.base import app
from charrnn.errors import os_reason, printable
from charrnn.output import silence_stdout

__all__ = ["app", "main"]


def _streams_that_cannot_fail_on_text() -> None:
    """A terminal or pipe whose encoding cannot hold every character (PYTHONIOENCODING=ascii, a
    C locale) gets those it cannot as escapes (\\xe9), not a traceback."""
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        if stream is not None and not encoding.startswith("utf") and \
                hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def main() -> None:
    base.STARTED = time.monotonic()
    _streams_that_cannot_fail_on_text()
    try:
        app()
        code = 0
    except SystemExit as e:
        code = e.code
    try:  # what is still buffered (--help, --version) is written now, where a failure is ours
        if sys.stdout is not None:
            sys.stdout.flush()
    except OSError as e:
        silence_stdout()
        print(f"charrnn: error: cannot write to stdout: {printable(os_reason(e))}",
              file=sys.stderr)
        code = code or 1
    leave(code)


def leave(code) -> NoReturn:
    """Exit with `code` as sys.exit would, but without Python's teardown of every module: the
    command's files are written and closed by now, and unloading torch alone took 0.4 s more
    on a 2-core AMD EPYC (0.7 s after a run), which every command would wait for and a time
    budget would overrun."""
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("message"): the message, and 1
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
