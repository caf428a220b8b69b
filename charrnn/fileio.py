"""Atomic file writes: a reader (or a crash) only ever sees the old file or the complete new one."""

from __future__ import annotations

import errno
import json
import math
import os
import stat
import tempfile
from pathlib import Path
from typing import Callable

from charrnn.errors import CharrnnError, os_reason

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: Path, write: Callable[[Path], None], private: bool = False) -> None:
    """Call `write(tmp)` to fill a temporary file beside `path`, flush it to disk, rename it.
    `private`: readable by this user alone (a cache copy of a user's own files, which may be
    private, is never more readable than they are)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:  # named as the file the user asked for, not charrnn's temporary one
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None
    if hasattr(os, "fchmod") and not private:  # mkstemp makes 0600; else the usual permissions
        os.fchmod(fd, 0o666 & ~_UMASK)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename in (None, tmp):
            # a write through a file object names no file: name the one the user knows
            raise OSError(e.errno, e.strerror or str(e), str(path)) from None
        raise
    _fsync_dir(path.parent)


def user_folder(env: str, kind: str) -> Path:
    """A folder of charrnn's: $`env` when set, else the platform's user `kind` folder ("cache"
    or "data", by platformdirs)."""
    if os.environ.get(env):
        return Path(os.environ[env]).expanduser()  # "~/c" from a quoted shell line
    import platformdirs

    return Path(getattr(platformdirs, f"user_{kind}_dir")("charrnn"))


def check_new_file(path: Path, option: str, force: bool) -> None:
    """Refuse to write `option`'s PATH unless it is new, or a regular file and `force` is given:
    never replace a folder, a device, a pipe or a symbolic link (a rename would swap the link
    itself, or turn /dev/null into a file)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        if e.errno == errno.ENOTDIR:
            raise CharrnnError(f"cannot write {option} {path}: a part of the path is a file, "
                               "not a folder") from None
        raise
    if stat.S_ISLNK(st.st_mode):
        raise CharrnnError(f"{option} {path} is a symbolic link; give the path of a new or "
                           "regular file")
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise CharrnnError(f"{option} {path} is {kind}; give the path of a new file")
    if not force:
        raise CharrnnError(f"{option} {path} already exists; pass --force to replace it, or "
                           "give another path")


def _fsync_dir(folder: Path) -> None:
    # the rename itself is durable only once the directory entry is on disk
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8", "surrogatepass"))


# ---------------------------------------------------------------------------------------------
# Reading and appending to the files of a run or a cache, which may come from anyone: never
# through a symbolic link (in or out of the run), never a FIFO or a device (which could hang,
# or never end), never more than a bound.

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a FIFO opens at once, to be refused, not waited on


class UnsafeFile(CharrnnError):
    """A file of a run or a cache that is a link, not a regular file, or too large."""


def _checked_fd(path: Path, flags: int, most: int | None) -> int:
    try:
        fd = os.open(path, flags | _NOFOLLOW | _NONBLOCK, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP or (e.errno == errno.EMLINK and _NOFOLLOW):
            raise UnsafeFile(f"{path} is a symbolic link; charrnn never reads or writes a "
                             "file of a run or a cache through a link (remove it, or put the "
                             "file itself there)") from None
        if e.errno == errno.ENXIO:  # a FIFO with no reader, opened to write
            raise UnsafeFile(f"{path} is not a regular file; remove it") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(f"{path} is not a regular file (a "
                             f"{'folder' if stat.S_ISDIR(st.st_mode) else 'FIFO or device'}); "
                             "remove it")
        if most is not None and st.st_size > most:
            raise UnsafeFile(f"{path} holds {st.st_size:,} bytes, far more than charrnn ever "
                             f"writes there ({most:,} at most); it is not charrnn's: remove it")
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_regular(path: Path, most: int | None = None):
    """A binary file object reading `path`, a regular file of at most `most` bytes."""
    return os.fdopen(_checked_fd(Path(path), os.O_RDONLY, most), "rb")


def read_regular(path: Path, most: int) -> bytes:
    """The bytes of `path`, a regular file of at most `most` bytes (not a link)."""
    with open_regular(path, most) as f:
        return f.read(most + 1)[:most]


def open_append(path: Path):
    """A text file object appending to `path` (created if absent), never through a link."""
    fd = _checked_fd(Path(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, None)
    return os.fdopen(fd, "a", encoding="utf-8", errors="surrogateescape")


def check_regular(path: Path, most: int | None = None) -> None:
    """Refuse `path` unless it is a regular file (not a link) of at most `most` bytes."""
    os.close(_checked_fd(Path(path), os.O_RDONLY, most))


def loads_json(data: bytes | str):
    """JSON as a stranger may write it: nesting too deep for Python, or NaN and Infinity
    (which JSON has not), is a ValueError like any other damage."""
    def no_constants(name):
        raise ValueError(f"{name} is not a JSON number")
    try:
        return json.loads(data, parse_constant=no_constants)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def positive_number(value) -> float:
    """A positive, finite number from JSON, or ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(value)
    value = float(value)
    if not 0 < value < math.inf:
        raise ValueError(value)
    return value


MAX_RECORD_BYTES = 64 << 20  # a cache or record file of charrnn's is far smaller


def read_json_object(path: Path, most: int = MAX_RECORD_BYTES) -> dict:
    """A JSON object from a file of ours (a cache, a record); a missing or damaged file, one
    that holds something else, a link or a FIFO, reads as empty, to be written again."""
    try:
        value = loads_json(read_regular(path, most).decode("utf-8"))
    except (OSError, ValueError, UnsafeFile):
        return {}
    return value if isinstance(value, dict) else {}


def read_text(path: Path, option: str, most: int, skip: int = 0) -> tuple[str, bool]:
    """At most `most` characters of a UTF-8 file, pipe or device named by `option`, after the
    first `skip` (read past a chunk at a time, never held), and whether there was more: never
    an unbounded read."""
    try:
        with open(path, encoding="utf-8") as f:
            while skip > 0:
                gone = len(f.read(min(skip, 1 << 20)))
                if not gone:
                    break
                skip -= gone
            text = f.read(most)
            more = bool(f.read(1))
    except FileNotFoundError:
        raise CharrnnError(f"cannot read {option} {path}: it does not exist") from None
    except UnicodeDecodeError as e:
        raise CharrnnError(f"cannot read {option} {path}: it is not UTF-8 text ({e.reason}); "
                           "give a UTF-8 text file") from None
    except OSError as e:
        raise CharrnnError(f"cannot read {option} {path}: {os_reason(e)}; give a UTF-8 text "
                           "file") from None
    return text, more
