"""The text a run trains on: its corpus loaded (one process of a machine at a time under
torchrun), a resumed run's found only where it is safe to look, and the split into training
and validation text."""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np

from charrnn import checkpoint
from charrnn.config import TrainConfig
from charrnn.data import corpus
from charrnn.data.corpus import Corpus, DigestMismatch
from charrnn.engine.distributed import SINGLE, World
from charrnn.errors import CharrnnError
from charrnn.training.progress import Reporter
from charrnn.vocab import Vocab


def load(corpus_arg: str | None, cfg: TrainConfig, reporter: Reporter,
         digest: str | None = None, run: Path | None = None, world: World = SINGLE,
         repeating: bool = False, characters: int | None = None) -> Corpus:
    """The corpus, encoded; with `digest` and `characters` (those `run` recorded: resumed, or
    `repeating` its plan), only if it is that same text."""
    how = "--plan-from" if repeating else "--resume"
    if not isinstance(corpus_arg, str) or not corpus_arg:
        raise CharrnnError(f"{run / checkpoint.CONFIG} names no corpus; give it: "
                           f"charrnn train CORPUS {how} {shlex.quote(str(run))}")
    try:
        with world.one_at_a_time(corpus.cache_dir()):
            found = corpus.load(corpus_arg, cfg.encoding, cfg.errors,
                                sniff_binary=cfg.encoding == "utf-8", digest=digest,
                                warn=reporter.warn, say=reporter.say, include=cfg.include,
                                exclude=cfg.exclude, characters=characters)
    except DigestMismatch as e:
        if repeating:
            raise CharrnnError(f"{e.path} is not the text {run} trained on (or it changed "
                               "since), so its plan cannot be repeated exactly; give that "
                               "text") from None
        raise CharrnnError(f"{e.path} is not the text {run} trained on (it changed since, or "
                           "it is another file), so the run cannot resume exactly; give that "
                           "text, or start a new run") from None
    if len(found.ids) < 2:
        raise CharrnnError(f"corpus {found.path} has {len(found.ids)} character; charrnn "
                           "needs at least 2 to learn anything (give a longer text)")
    return found


def recorded(stored: dict, corpus_arg: str | None, run: Path, cfg: TrainConfig,
             reporter: Reporter, world: World, repeating: bool = False) -> Corpus:
    """The text `run` trained on, to resume it (or, `repeating`, to repeat its plan). Given on
    the command line, it is the user's choice (built or fetched if need be, then checked).
    Taken from config.json, which may be anyone's, only a file already here is used, and only
    if it is that text: a folder is not read and built, nor a corpus fetched, on a config's
    word, and a file larger than the recorded text could be is not read through."""
    how = "--plan-from" if repeating else "--resume"
    info = stored["corpus"]
    digest, characters = info.get("digest"), info.get("characters")
    if corpus_arg:
        return load(corpus_arg, cfg, reporter, digest=digest, run=run, world=world,
                    repeating=repeating, characters=characters)
    source, path = info.get("source"), info.get("path")
    for candidate in (path, source):
        if isinstance(candidate, str) and candidate and Path(candidate).is_file() and \
                not Path(candidate).is_symlink():
            try:
                return load(candidate, cfg, reporter, digest=digest, run=run, world=world,
                            repeating=repeating, characters=characters)
            except CharrnnError:
                continue  # not that text: the next, or the line below
    named = source if isinstance(source, str) and source else path
    if not isinstance(named, str) or not named:
        raise CharrnnError(f"{run / checkpoint.CONFIG} names no corpus; give it: "
                           f"charrnn train CORPUS {how} {shlex.quote(str(run))}")
    doing = "repeat its plan" if repeating else "resume"
    raise CharrnnError(f"{run} trained on {named}, whose text is not here as it was (changed, "
                       f"moved, or a folder or corpus not built on this machine); give it "
                       f"yourself to {doing}: charrnn train {shlex.quote(named)} {how} "
                       f"{shlex.quote(str(run))}")


def ids_for(corpus: Corpus, vocab: Vocab) -> np.ndarray:
    """The corpus as ids of `vocab` (which, after --init-from, may be larger than its own)."""
    return corpus.ids if vocab == corpus.vocab else vocab.remap(corpus.ids, corpus.vocab)


def split(ids: np.ndarray, cfg: TrainConfig, reporter: Reporter | None = None):
    """(train, validation) as the run splits them (corpus.run_split), saying when the text is
    too small to keep a validation part of its own."""
    train_ids, val_ids, whole = corpus.run_split(ids, cfg.val_frac, cfg.test_frac)
    if whole and cfg.val_frac > 0 and reporter is not None:
        reporter.warn("the corpus is too small for a validation split; training and validating "
                      "on all of it")
    return train_ids, val_ids
