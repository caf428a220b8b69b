"""What a run directory holds besides its checkpoints, and who may change it: the one writer's
lock, what a run makes (and --overwrite removes, safely), and the logs a run appends to
(metrics.jsonl, samples.txt), trimmed when it resumes. Every file is opened without following a
link, and bounded (charrnn/fileio.py)."""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

from charrnn.checkpoint import BOARD, CONFIG, LOCK, METRICS, RUN_FILES, SAMPLES, is_run
from charrnn.errors import CharrnnError, describe_os_error
from charrnn.fileio import (
    MAX_RECORD_BYTES,
    atomic_write_bytes,
    atomic_write_text,
    loads_json,
    open_append,
    read_regular,
)

EVAL_CACHE = "eval-cache.json"  # `charrnn eval`'s n-gram counts
FEATURES = re.compile(r"features-l\d+-[a-z]+\.(safetensors|json)")  # `charrnn features`
TRASH = ".overwritten-"  # an old run's files on their way out (see clear_run)


def check_out(out: Path | None, overwrite: bool) -> Path | None:
    """The run directory to write, checked: a new or empty folder, or (with --overwrite) an
    old run; never a folder of the user's other files, nor one whose config.json is another
    program's. None: named after the corpus, later."""
    if out is None:
        return None
    if not str(out).strip():
        raise CharrnnError("--out is empty; give the folder to write the run to")
    run = Path(out)
    if is_run(run):
        if not overwrite:
            raise CharrnnError(f"{run} already holds a run; pass --resume "
                               f"{shlex.quote(str(run))} to continue it, --overwrite to replace "
                               "it, or --out elsewhere")
        return run
    if run.exists() and not run.is_dir():
        raise CharrnnError(f"--out {run} is a file; give a folder for the run")
    above = next((p for p in run.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise CharrnnError(f"--out {run} is inside {above}, which is a file; give a folder for "
                           "the run")
    if run.is_dir():
        names = {p.name for p in run.iterdir()}
        if CONFIG in names or (run / CONFIG).is_symlink():
            raise CharrnnError(f"--out {run} holds a {CONFIG} that is not a charrnn run's (or is "
                               "damaged), so it is not a run: nothing in it is replaced; give a "
                               "new or empty folder")
        # a run killed before its config.json was written is still a run, for --overwrite
        ours = all(made_by_run(n) for n in names)
        if names and not (overwrite and ours):
            raise CharrnnError(f"--out {run} is a folder of other files, not a charrnn run; "
                               "give a new or empty folder")
    return run


def made_by_run(name: str) -> bool:
    """Whether a file of this name in a run folder is one a run (or a command on it) makes."""
    return (name in RUN_FILES or name in (LOCK, BOARD, EVAL_CACHE) or
            FEATURES.fullmatch(name) is not None or name.startswith(TRASH) or
            (name.startswith(".") and name.endswith(".tmp")))


class RunLock:
    """One writer per run directory: an exclusive lock on RUN/.lock, held while training
    (from the set-up to the loop's end, hence acquire and release; `with` works too).

    The lock is the operating system's (flock on POSIX, a locked byte range on Windows, by way
    of the filelock package), so it goes with its process however that ends: a crashed or
    killed run never leaves a run directory locked. The file itself holds nothing.
    """

    def __init__(self, run: Path):
        self.run = Path(run)
        self.lock = None

    def acquire(self) -> RunLock:
        from filelock import FileLock, Timeout

        self.run.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.run / LOCK, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise CharrnnError(f"{self.run} is being trained by another charrnn process; wait "
                               "for it to finish, or train into another --out") from None
        self.lock = lock
        remove_partial_writes(self.run)  # the run is ours now: what a crash left is litter
        return self

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class NoLock:
    """What a torchrun job's ranks other than 0 hold: they never write the run directory."""

    def acquire(self) -> NoLock:
        return self

    def release(self) -> None:
        pass


def remove_partial_writes(run: Path) -> None:
    """Delete what a killed writer left: temporary files, and an old run on its way out (only
    ever called under the run's lock)."""
    import shutil

    for tmp in Path(run).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
    for trash in Path(run).glob(f"{TRASH}*"):
        if trash.is_dir() and not trash.is_symlink():
            shutil.rmtree(trash, ignore_errors=True)


def clear_run(run: Path) -> None:
    """Remove everything a previous run made (for --overwrite): its checkpoints and records,
    features, eval cache, TensorBoard events; never a file of anyone else's, never through a
    link (a link is removed itself). Each is first moved aside, in one folder, by renames: a
    failure puts back what was moved, so the old run is whole or gone, never half."""
    import secrets
    import shutil

    run = Path(run)
    trash = run / f"{TRASH}{secrets.token_hex(4)}"
    trash.mkdir()
    moved = []
    try:
        for entry in sorted(run.iterdir()):
            if entry.name == LOCK or entry.name.startswith(TRASH) or \
                    not made_by_run(entry.name):
                continue
            os.rename(entry, trash / entry.name)  # the entry itself: a link is not followed
            moved.append(entry.name)
    except OSError as e:
        for name in reversed(moved):
            try:
                os.rename(trash / name, run / name)
            except OSError:
                pass
        try:
            trash.rmdir()
        except OSError:
            pass
        raise CharrnnError(f"cannot remove the old run in {run} ({describe_os_error(e)}); it "
                           "is left as it was") from None
    shutil.rmtree(trash, ignore_errors=True)  # (rmtree removes links, never what they name)


def trim_metrics(run: Path, step: int) -> int:
    """Keep the evaluations up to `step` (a resumed run writes the later ones again); return
    how many lines were damaged, and left out (a last line cut short by a crash is not
    counted: that is what a crash leaves)."""
    path = Path(run) / METRICS
    if not path.exists() and not path.is_symlink():
        return 0
    text = read_regular(path, MAX_RECORD_BYTES).decode("utf-8", "replace")
    lines = text.splitlines()
    kept, damaged = [], 0
    for n, line in enumerate(lines):
        try:
            record = loads_json(line)
            at = record.get("step") if isinstance(record, dict) else None
            if not isinstance(at, int) or isinstance(at, bool):
                raise ValueError("no step")
        except ValueError:
            cut = n == len(lines) - 1 and not text.endswith("\n")
            damaged += not cut
            continue
        if at <= step:
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))
    return damaged


SAMPLE_HEADER = "--- step {} ---"


def append_sample(run: Path, step: int, text: str) -> None:
    with open_append(Path(run) / SAMPLES) as f:
        f.write(f"{SAMPLE_HEADER.format(step)}\n{text}\n\n")


def trim_samples(run: Path, step: int) -> None:
    """Keep the samples up to `step` (a resumed run writes the later ones again)."""
    path = Path(run) / SAMPLES
    if not path.exists() and not path.is_symlink():
        return
    kept, keep = [], True
    text = read_regular(path, MAX_RECORD_BYTES).decode("utf-8", "surrogateescape")
    for line in text.splitlines(True):
        if line.startswith("--- step ") and line.rstrip().endswith(" ---"):
            try:
                keep = int(line.split()[2]) <= step
            except (ValueError, IndexError):
                pass
        if keep:
            kept.append(line)
    atomic_write_bytes(path, "".join(kept).encode("utf-8", "surrogateescape"))


def append_metrics(run: Path, record: dict) -> None:
    with open_append(Path(run) / METRICS) as f:
        f.write(json.dumps(record) + "\n")
