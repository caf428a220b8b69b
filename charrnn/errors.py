"""The one exception type a user ever sees, and how anything else becomes one line for them."""

from __future__ import annotations

import errno
import re


class CharrnnError(Exception):
    """A user-facing error: the message says what is wrong and what to do about it."""


# C0 and C1 controls, DEL, and the bidirectional overrides and isolates that reorder a line
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` safe for one terminal line: every control character written as an escape, so a
    path or a corpus name from someone else cannot set a window title or colours."""
    def escape(m: re.Match) -> str:
        ch = m.group()
        return {"\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(ch) or f"\\u{ord(ch):04x}"
    # lone surrogates (from an undecodable file name) are escaped by the round trip
    return _UNPRINTABLE.sub(escape, text).encode("utf-8", "backslashreplace").decode("utf-8")


_ADVICE = {
    errno.ENOSPC: "free some space, or write somewhere else",
    errno.EDQUOT: "free some space, or write somewhere else",
    errno.EACCES: "check its permissions, or choose another path",
    errno.EPERM: "check its permissions, or choose another path",
    errno.EROFS: "choose a folder on a file system you can write to",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
    errno.EISDIR: "it is a folder; give the path of a file",
    errno.ENOENT: "check the path",
    errno.ENAMETOOLONG: "choose a shorter path",
    errno.EEXIST: "choose another path",
}


def first_line(e: BaseException, limit: int = 200) -> str:
    """The first line of what an exception says (its type's name when it says nothing)."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:limit]


def os_reason(e: OSError) -> str:
    """The operating system's words for an error, as a clause: "no space left on device"."""
    reason = (e.strerror or str(e) or type(e).__name__).rstrip(".")
    return reason[:1].lower() + reason[1:]


def describe_os_error(e: OSError, doing: str = "use", advice: bool = True) -> str:
    """One line for an operating-system error: what failed, where, and what to do."""
    where = f" {e.filename}" if e.filename is not None else ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        said = f"no space left on the device holding{where}" if where else "no space left"
    else:
        said = f"cannot {doing}{where}: {os_reason(e)}"
    if not advice:
        return said
    return f"{said}; {_ADVICE.get(e.errno, 'check the path and try again')}"
