"""Named corpora: recipes (data, in the repository's corpora/recipes.toml, shipped as
charrnn.corpora) say where each corpus comes from, pinned to an immutable version, how it is
built from the download, and the sha256 of the finished corpus. `get` downloads, builds and
verifies a corpus into the user data folder, atomically: a corpus that is there is whole and
checked; a failed download leaves nothing behind.

A recipe whose checksum could not be checked against a real copy has `sha256 = ""`: its first
download's checksum is recorded (checksums.json in the data folder), and a later download that
differs is said.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import json
import os
import shutil
import sys
import sysconfig
import tarfile
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
import zipfile
from contextlib import nullcontext
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

from charrnn.data.concat import Tally, concatenate, folder_files, read_folder, selected
from charrnn.errors import CharrnnError, describe_os_error
from charrnn.fileio import atomic_write, atomic_write_text, read_json_object, user_folder

BLOCK = 1 << 20  # bytes read from the network at a time
TIMEOUT = 30  # seconds without a byte before a download is given up
C_HEADERS = Path("/usr/include")


@dataclass(frozen=True)
class Recipe:
    name: str
    about: str  # what it is, in a few words
    source: str  # who made it and where it lives
    licence: str
    build: str  # file | zip | tree | python-stdlib | c-headers (see `build`)
    url: str = ""  # pinned to an immutable version; "" for corpora built offline
    size: int = 0  # bytes of the finished corpus (0: depends on the machine)
    sha256: str = ""  # of the finished corpus; "": not checked against a real copy
    member: str = ""  # zip: the member that is the corpus
    include: tuple[str, ...] = ()  # tree: the files, as patterns (see concat.selected)
    note: str = ""  # anything a user should know before training on it

    @property
    def offline(self) -> bool:
        return not self.url


def load(text: str | None = None) -> dict[str, Recipe]:
    """The recipes, by name: corpora/recipes.toml, or `text` in its format."""
    if text is None:
        text = (resources.files("charrnn.corpora") / "recipes.toml").read_text(encoding="utf-8")
    table = tomllib.loads(text)
    return {name: Recipe(name=name, **{k: tuple(v) if isinstance(v, list) else v
                                       for k, v in entry.items()})
            for name, entry in table.items()}


def data_dir() -> Path:
    """Where downloaded corpora live: $CHARRNN_DATA_DIR, else the user data folder."""
    return user_folder("CHARRNN_DATA_DIR", "data")


def path_of(recipe: Recipe) -> Path:
    """Where the finished corpus lives (python-stdlib: one per Python version, as each has its
    own library)."""
    if recipe.build == "python-stdlib":
        v = sys.version_info
        return data_dir() / "corpora" / f"{recipe.name}-{v.major}.{v.minor}.{v.micro}.txt"
    return data_dir() / "corpora" / f"{recipe.name}.txt"


def python_stdlib(dest: Path) -> None:
    """The running Python's standard library source, tests excluded, in sorted path order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in skip)
        files += [Path(folder, n) for n in sorted(names) if n.endswith(".py")]
    with open(dest, "wb") as out:
        for f in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
            text = f.read_bytes().decode("utf-8", "replace")
            out.write(f"# {f.relative_to(root).as_posix()}\n{text.rstrip()}\n\n".encode(
                "utf-8", "surrogateescape"))


# ---------------------------------------------------------------------------------------------
# Building a corpus from what was downloaded (or found on this machine)


SIZE_MARGIN = 0.05  # a build may be this much larger than its recipe's size, and no more


class Bounded:
    """A file written no further than `most` bytes: a build that would outgrow its recipe (an
    archive that claims a corpus's name and expands to much more) stops before it does."""

    def __init__(self, f, most: int | None, recipe: Recipe):
        self.f, self.most, self.recipe, self.written = f, most, recipe, 0

    def write(self, data: bytes) -> int:
        self.written += len(data)
        if self.most is not None and self.written > self.most:
            raise CharrnnError(f"the build of {self.recipe.name} grew past {self.most:,} bytes, "
                               f"more than its recipe's {self.recipe.size:,}: the download is "
                               "not the corpus its recipe names; nothing was kept")
        return self.f.write(data)


def build(recipe: Recipe, download: Path | None, out: Path, warn: Callable[[str], None]) -> None:
    """Write the finished corpus of `recipe` to `out`, from `download` (the fetched file):
    file: the download is the corpus; zip: one member of a zip is; tree: the files of a zip or
    tar archive (or, for c-headers, of /usr/include) that match `include`, concatenated. A
    recipe with a size is never built past it (and SIZE_MARGIN)."""
    most = int(recipe.size * (1 + SIZE_MARGIN)) if recipe.size else None
    if recipe.build in ("file", "zip"):
        with zipfile.ZipFile(download) if recipe.build == "zip" else nullcontext() as z, \
                (z.open(recipe.member) if z else open(download, "rb")) as src, \
                open(out, "wb") as f:
            shutil.copyfileobj(src, Bounded(f, most, recipe), BLOCK)
    elif recipe.build == "tree":
        with open(out, "wb") as f:
            tally = concatenate(archive_files(download, recipe.include, out.parent),
                                Bounded(f, most, recipe))
        _say_skipped(tally, warn)
    elif recipe.build == "c-headers":
        paths = folder_files(C_HEADERS, recipe.include) if C_HEADERS.is_dir() else []
        if not paths:
            raise CharrnnError(f"this machine has no system C headers in {C_HEADERS}, so "
                               "c-headers cannot be built; install them (on Debian and Ubuntu: "
                               "apt install libc6-dev) or train on another corpus")
        with open(out, "wb") as dst:
            tally = concatenate(read_folder(C_HEADERS, paths), dst)
        _say_skipped(tally, warn)
    elif recipe.build == "python-stdlib":
        python_stdlib(out)
    else:
        raise CharrnnError(f"recipe {recipe.name} has an unknown build {recipe.build!r}")


def archive_files(path: Path, include: tuple[str, ...], scratch: Path):
    """(path inside the archive's top folder, opener) of the matching regular files, sorted.
    A tar archive streams in its own order: each chosen member is copied to a file in
    `scratch` as it passes, one block at a time, and read back in sorted order."""
    def inner(name: str) -> str:  # GitHub and kernel.org archives hold one top folder
        return name.split("/", 1)[1] if "/" in name else name

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            members = sorted((inner(i.filename), i) for i in z.infolist() if not i.is_dir())
            for rel, info in members:
                if selected(rel, include, ()):
                    yield rel, functools.partial(z.open, info)
        return
    with tarfile.open(path) as t, tempfile.TemporaryDirectory(dir=scratch,
                                                              prefix=".get-members-") as tmp:
        chosen = {}
        for info in t:
            rel = inner(info.name)
            if info.isfile() and selected(rel, include, ()):
                chosen[rel] = Path(tmp) / str(len(chosen))
                with t.extractfile(info) as src, open(chosen[rel], "wb") as dst:
                    shutil.copyfileobj(src, dst, BLOCK)
        for rel in sorted(chosen):
            yield rel, functools.partial(open, chosen[rel], "rb")


def _say_skipped(tally: Tally, warn) -> None:
    if tally.skipped():
        warn(tally.skipped())


# ---------------------------------------------------------------------------------------------
# Getting a corpus


def get(recipe: Recipe, *, source: Path | None = None, warn=None, progress=None) -> Path:
    """The finished corpus of `recipe` in the data folder: built offline, copied from
    `source` (a file the user downloaded), or downloaded; checked before it is kept."""
    from filelock import FileLock

    warn = warn or (lambda line: print(f"warning: {line}", file=sys.stderr))
    dest = path_of(recipe)
    clean_leftovers()
    if dest.exists() and source is None:
        return dest  # already here, and it was checked when it was kept
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        # one get at a time in this folder: while it runs, its temporary files are not litter
        with FileLock(dest.parent / LOCK), \
                tempfile.TemporaryDirectory(dir=dest.parent, prefix=".get-") as tmp:
            download = None
            if source is not None:
                if not Path(source).is_file():
                    raise CharrnnError(f"--from {source} is not a file; give the file you "
                                       f"downloaded from {recipe.url or 'the source'}")
                download = Path(source)
            elif not recipe.offline:
                download = Path(tmp) / "download"
                fetch(recipe.url, download, progress)
            atomic_write(dest, lambda out: _build_checked(recipe, download, out, warn))
    except OSError as e:
        raise CharrnnError(f"{describe_os_error(e, 'write', advice=False)} while getting "
                           f"{recipe.name}; nothing was kept") from None
    return dest


LOCK = ".lock"  # held by a `corpus get` while it works in the data folder


def clean_leftovers() -> None:
    """Remove what a killed `corpus get` left in the data folder (its temporary folders and
    file), unless another get is running now."""
    from filelock import FileLock, Timeout

    folder = data_dir() / "corpora"
    if not folder.is_dir():
        return
    lock = FileLock(folder / LOCK, timeout=0)
    try:
        lock.acquire()
    except (Timeout, OSError):
        return
    try:
        for left in [*folder.glob(".get-*"), *folder.glob(".*.tmp")]:
            if left.is_dir() and not left.is_symlink():
                shutil.rmtree(left, ignore_errors=True)
            else:
                left.unlink(missing_ok=True)
    finally:
        lock.release()


def _build_checked(recipe: Recipe, download: Path | None, out: Path, warn) -> None:
    try:
        build(recipe, download, out, warn)
    except (zipfile.BadZipFile, tarfile.TarError, KeyError, EOFError) as e:
        raise CharrnnError(f"the download for {recipe.name} is not the archive its recipe "
                           f"expects ({e}); nothing was kept") from None
    digest = sha256_of(out)
    if recipe.sha256:
        if digest != recipe.sha256:
            raise CharrnnError(f"{recipe.name} does not match its pinned checksum (sha256 "
                               f"{digest[:16]}..., expected {recipe.sha256[:16]}...): the "
                               "download is damaged or not the pinned version; nothing was kept")
    elif not recipe.offline and recipe.size and out.stat().st_size != recipe.size:
        warn(f"{recipe.name} is {out.stat().st_size:,} bytes, not its recipe's "
             f"{recipe.size:,}: kept, but its checksum is not recorded as the first download's")
    elif not recipe.offline:
        first_seen(recipe, digest, warn)


def first_seen(recipe: Recipe, digest: str, warn) -> None:
    """Trust on first use, for a recipe with no pinned checksum: record the first download's,
    and say when a later one differs."""
    path = data_dir() / "checksums.json"
    seen = read_json_object(path)
    if recipe.name in seen and seen[recipe.name] != digest:
        warn(f"{recipe.name} differs from its first download (sha256 {digest[:16]}..., first "
             f"{str(seen[recipe.name])[:16]}...); its recipe has no pinned checksum, so charrnn "
             "cannot tell which is right")
    seen.setdefault(recipe.name, digest)
    atomic_write_text(path, json.dumps(seen, indent=1, sort_keys=True) + "\n")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            h.update(block)
    return h.hexdigest()


def fetch(url: str, dest: Path, progress=None) -> None:
    """Download `url` to `dest`; any failure is one line that says how to place it by hand."""
    manual = (f"with no network, download {url} elsewhere and place it with `charrnn corpus get "
              "NAME --from FILE`")
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response, open(dest, "wb") as f:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while block := response.read(BLOCK):
                f.write(block)
                done += len(block)
                if progress is not None:
                    progress(done, total)
            if total and done != total:
                raise CharrnnError(f"the download of {url} was cut short ({done:,} of "
                                   f"{total:,} bytes); nothing was kept; try again, or {manual}")
    except urllib.error.HTTPError as e:
        raise CharrnnError(f"cannot download {url}: HTTP {e.code} {e.reason}; nothing was kept; "
                           f"{manual}") from None
    except urllib.error.URLError as e:
        reason = getattr(e.reason, "strerror", None) or e.reason
        raise CharrnnError(f"cannot download {url} ({reason}); nothing was kept; "
                           f"{manual}") from None
    except (ConnectionError, TimeoutError, http.client.HTTPException) as e:
        raise CharrnnError(f"the download of {url} was cut short ({type(e).__name__}); nothing "
                           f"was kept; try again, or {manual}") from None


# ---------------------------------------------------------------------------------------------
# Progress, for `charrnn corpus get` and `charrnn train NAME`


class Progress:
    """A Rich progress bar on a terminal; a plain line every 10% (or 5 s) elsewhere."""

    def __init__(self, name: str, console=None):
        from rich.console import Console

        from charrnn.errors import printable

        self.name = printable(name)
        self.console = console or Console(stderr=True, highlight=False)
        self.bar = None
        self.last = (0.0, -1)

    def __call__(self, done: int, total: int) -> None:
        from rich.text import Text

        if self.console.is_terminal:
            if self.bar is None:
                from rich.progress import BarColumn, DownloadColumn, TransferSpeedColumn
                from rich.progress import Progress as Bar
                self.bar = Bar("[progress.description]{task.description}", BarColumn(),
                               DownloadColumn(), TransferSpeedColumn(), console=self.console)
                self.bar.start()
                self.task = self.bar.add_task(f"downloading {self.name}", total=total or None)
            self.bar.update(self.task, completed=done)
            return
        now, tenth = time.monotonic(), (10 * done // total if total else -1)
        if tenth != self.last[1] or now - self.last[0] >= 5:
            self.last = (now, tenth)
            of = f" of {total / 1e6:,.1f} MB" if total else ""
            self.console.print(Text(f"downloading {self.name}: {done / 1e6:,.1f} MB{of}"))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()

