"""Many text files as one corpus: in sorted path order, each headed by its path in a comment of
its own language, binary and undecodable files left out and counted. Folders (`charrnn train
src/`), `c-headers`, and the corpora built from archives (the Stacks project's LaTeX, the Linux
source) all go through `concatenate`, so they read alike.
"""

from __future__ import annotations

import codecs
import fnmatch
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

BINARY_SNIFF_BYTES = 8192  # a NUL byte this early means a binary file (the test git and grep use)
_COMMENT = {
    "// {}": (".c", ".h", ".cc", ".cpp", ".cxx", ".hh", ".hpp", ".hxx", ".m", ".java", ".js",
              ".ts", ".go", ".rs", ".swift", ".kt", ".cs", ".scala", ".dart", ".zig"),
    "% {}": (".tex", ".sty", ".cls", ".bib", ".dtx", ".m4"),
    "-- {}": (".sql", ".lua", ".hs", ".elm"),
    "<!-- {} -->": (".html", ".htm", ".xml", ".md", ".svg"),
    "; {}": (".lisp", ".el", ".clj", ".scm", ".asm", ".s", ".ini"),
}
_HEADER = {ext: fmt for fmt, exts in _COMMENT.items() for ext in exts}


def header(path: str) -> str:
    """The line that heads a file: its path in a comment of its language (# by default)."""
    return _HEADER.get(os.path.splitext(path)[1].lower(), "# {}").format(path)


@dataclass
class Tally:
    """What `concatenate` kept and left out."""

    kept: int = 0
    binary: list[str] = field(default_factory=list)
    undecodable: list[str] = field(default_factory=list)

    def skipped(self) -> str | None:
        """One line on the files left out, or None."""
        parts = [f"{len(v)} {what}" for what, v in (("binary", self.binary),
                                                    ("not UTF-8", self.undecodable)) if v]
        if not parts:
            return None
        examples = ", ".join((self.binary + self.undecodable)[:3])
        return f"left out {' and '.join(parts)} file(s) (for example {examples})"


def selected(path: str, include: Iterable[str], exclude: Iterable[str]) -> bool:
    """Whether a relative path passes --include (any; none given: all) and --exclude (none).
    A pattern matches the whole relative path or the file's name."""
    name = path.rsplit("/", 1)[-1]
    match = lambda pattern: fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(name, pattern)  # noqa: E731
    include = list(include)
    return (not include or any(map(match, include))) and not any(map(match, exclude))


Opener = Callable[[], BinaryIO]  # opens one file to read, from its start
CHUNK = 1 << 20  # bytes read at a time: a file of any size is never held whole


def _is_utf8(open_file: Opener) -> bool:
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    try:
        with open_file() as f:
            while block := f.read(CHUNK):
                decoder.decode(block)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def concatenate(files: Iterable[tuple[str, Opener]], out: BinaryIO) -> Tally:
    """Write (relative path, opener) pairs, in the order given, as one UTF-8 text to `out`:
    each file headed by its path, its trailing whitespace dropped. A file is read in chunks,
    twice (to know it is UTF-8 before any of it is written), never held whole."""
    tally = Tally()
    for path, open_file in files:
        with open_file() as f:
            binary = b"\0" in f.read(BINARY_SNIFF_BYTES)
        if binary:
            tally.binary.append(path)
            continue
        if not _is_utf8(open_file):
            tally.undecodable.append(path)
            continue
        # a file name that is not UTF-8 is written with escapes: the corpus stays UTF-8
        out.write(f"{header(path)}\n".encode("utf-8", "backslashreplace"))
        decoder, pending = codecs.getincrementaldecoder("utf-8-sig")(), ""
        with open_file() as f:
            while True:
                block = f.read(CHUNK)
                text = pending + decoder.decode(block, final=not block)
                kept = text.rstrip()  # whitespace at a chunk's end waits: it may be the file's
                pending = text[len(kept):]
                out.write(kept.encode("utf-8"))
                if not block:
                    break
        out.write(b"\n\n")
        tally.kept += 1
    return tally


def folder_files(root: Path, include: Iterable[str] = (), exclude: Iterable[str] = ()
                 ) -> list[str]:
    """The regular files under `root` (relative POSIX paths, sorted), selected. Links to
    folders are not followed, so a symlink loop cannot trap the walk; links to files are read."""
    found = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        dirs[:] = [d for d in dirs if not d.startswith(".")]  # .git, .venv and the like
        for name in names:
            full = Path(folder, name)
            rel = full.relative_to(root).as_posix()
            if not name.startswith(".") and full.is_file() and selected(rel, include, exclude):
                found.append(rel)
    return sorted(found)


def read_folder(root: Path, paths: list[str]) -> Iterator[tuple[str, Opener]]:
    for rel in paths:
        yield rel, functools.partial(open, root / rel, "rb")
