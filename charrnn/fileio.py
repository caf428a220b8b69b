"""Atomic file writes: a reader (or a crash) only ever sees the old file or the complete new one."""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Callable

from charrnn.errors import CharrnnError, os_reason


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` to fill a temporary file beside `path`, flush it to disk, rename it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    if hasattr(os, "fchmod"):  # mkstemp makes 0600; give the file the usual permissions
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
        return Path(os.environ[env])
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


def read_json_object(path: Path) -> dict:
    """A JSON object from a file of ours (a cache, a record); a missing or damaged file, or
    one that holds something else, reads as empty, to be written again."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def read_text(path: Path, option: str, most: int) -> tuple[str, bool]:
    """At most `most` characters of a UTF-8 file, pipe or device named by `option`, and
    whether there was more: never an unbounded read."""
    try:
        with open(path, encoding="utf-8") as f:
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
