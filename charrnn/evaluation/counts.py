"""The count model of a run's training text, kept in the cache (never in the run folder, which a
run's owner may share), keyed by what it was counted from: the corpus's digest, its decoding,
the run's split and vocabulary, the order.

    CACHE/counts/KEY.safetensors   the Kneser-Ney tables (numbers only, no pickle)

About 16 bytes per training character (at most NGRAM_CHARS are counted), so a 10 MB code base
takes about 160 MB; deleting the folder only costs the next `eval` or `sample --mix` its
counting. A file is checked as it is read (size, shapes, order, ranges): a damaged or planted
one is one line, and counted again where the training text is here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from charrnn.data.corpus import cache_dir
from charrnn.errors import CharrnnError, first_line
from charrnn.evaluation import ngram
from charrnn.fileio import UnsafeFile, atomic_write, check_regular
from charrnn.vocab import Vocab

FORMAT = 1
ORDER = 9  # characters of context of the count model a run mixes in
NGRAM_CHARS = 20_000_000  # training characters counted at most (about 2 GB while counting)
MAX_BYTES = 40 * NGRAM_CHARS + (1 << 20)  # a file of ours is smaller (about 16 per character)


class DamagedCounts(CharrnnError):
    """A counts file of the cache that is not one charrnn wrote (damaged, cut short, planted)."""


def key(config: dict, vocab: Vocab) -> str:
    """The cache key of a run's count model: everything the counts depend on."""
    corpus, train = config.get("corpus", {}), config.get("train", {})
    parts = [FORMAT, ORDER, NGRAM_CHARS, corpus.get("digest"), train.get("encoding", "utf-8"),
             train.get("errors", "strict"), train.get("val_frac", 0.1),
             train.get("test_frac", 0.0), "".join(vocab.chars)]
    text = json.dumps(parts, ensure_ascii=True)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def path_of(name: str) -> Path:
    return cache_dir() / "counts" / f"{name}.safetensors"


def save(name: str, levels: list[ngram.Table]) -> None:
    """Write the tables (a cache we cannot write costs the next call its counting, no more)."""
    from safetensors.numpy import save

    tensors = {}
    for k, t in enumerate(levels, start=1):
        tensors[f"{k}.contexts"] = t.contexts.astype(np.uint64)
        tensors[f"{k}.types"] = np.diff(t.starts).astype(np.uint32)
        tensors[f"{k}.chars"] = t.chars.astype(np.uint32)
        tensors[f"{k}.counts"] = t.counts.astype(np.uint32)
    meta = {"format": str(FORMAT), "levels": str(len(levels)),
            "discounts": json.dumps([t.discount for t in levels])}
    data = save(tensors, metadata=meta)
    try:
        atomic_write(path_of(name), lambda tmp: tmp.write_bytes(data), private=True)
    except OSError:
        pass


def load(name: str, vocab_size: int) -> list[ngram.Table] | None:
    """The tables of a cache entry, checked; None where there is none; DamagedCounts where the
    file is not what charrnn writes."""
    path = path_of(name)
    if not path.exists() and not path.is_symlink():
        return None
    try:
        check_regular(path, MAX_BYTES)
        from safetensors import safe_open

        with safe_open(path, framework="numpy") as f:
            meta = f.metadata() or {}
            arrays = {k: f.get_tensor(k) for k in f.keys()}
        return _tables(arrays, meta, vocab_size)
    except UnsafeFile as e:
        raise DamagedCounts(f"{e}") from None
    except Exception as e:  # noqa: BLE001 - any failure to parse untrusted bytes is damage
        raise DamagedCounts(f"the counts file {path} is damaged ({first_line(e)[:100]}); "
                            "remove it, and `charrnn eval` counts the text again") from None


def _tables(arrays: dict, meta: dict, vocab_size: int) -> list[ngram.Table]:
    """The tables of a read file, each part checked against the others."""
    if meta.get("format") != str(FORMAT) or meta.get("levels") != str(ORDER + 1):
        raise ValueError("not a counts file of this charrnn")
    discounts = json.loads(meta.get("discounts", "null"))
    if not (isinstance(discounts, list) and len(discounts) == ORDER + 1 and all(
            isinstance(d, (int, float)) and 0 < d <= 1 for d in discounts)):
        raise ValueError("bad discounts")
    levels = []
    for k in range(1, ORDER + 2):
        contexts, types = arrays[f"{k}.contexts"], arrays[f"{k}.types"]
        chars, counts = arrays[f"{k}.chars"], arrays[f"{k}.counts"]
        if (contexts.dtype != np.uint64 or types.dtype != np.uint32 or chars.dtype != np.uint32
                or counts.dtype != np.uint32 or contexts.ndim != 1 or types.shape !=
                contexts.shape or chars.ndim != 1 or counts.shape != chars.shape):
            raise ValueError(f"level {k} has arrays of the wrong kind")
        starts = np.concatenate([[0], np.cumsum(types, dtype=np.int64)])
        if starts[-1] != len(chars) or (len(types) and types.min() == 0):
            raise ValueError(f"level {k}'s groups do not cover its rows")
        if np.any(contexts[1:] <= contexts[:-1]) or (len(chars) and (
                chars.max() >= vocab_size or counts.min() == 0)):
            raise ValueError(f"level {k} is out of order or out of range")
        table = ngram.Table(contexts, starts, chars.astype(np.int32),
                            counts.astype(np.float64), float(discounts[k - 1]))
        if np.any(np.diff(table.keys) <= 0):
            raise ValueError(f"level {k}'s characters are out of order")
        levels.append(table)
    if len(levels[0].contexts) != 1:
        raise ValueError("the first level is not the characters' own counts")
    return levels


def training_ids(config: dict, vocab: Vocab):
    """The run's training text as ids of its vocabulary (at most NGRAM_CHARS of it), and its
    validation text, from the corpus if it is here and is that text."""
    from charrnn.interp.inspection import run_corpus

    corpus = run_corpus(config)
    train, val = corpus.split(config.get("train", {}))
    train_ids = vocab.remap(np.asarray(train[:NGRAM_CHARS]), corpus.vocab).astype(np.int64)
    val_ids = vocab.remap(np.asarray(val), corpus.vocab).astype(np.int64)
    return train_ids, val_ids


def of_run(config: dict, vocab: Vocab, train_ids=None, say=None, warn=None, counted=None
           ) -> list[ngram.Table]:
    """The count model of a run's training text: from the cache, else from `counted` (the
    (raw, continuation) tables of `ngram.count` of the training text to ORDER or beyond, where
    the caller has them), else counted; kept in the cache. A damaged cache entry is said
    (`warn`) and counted again."""
    name = key(config, vocab)
    try:
        levels = load(name, len(vocab))
    except DamagedCounts as e:
        if warn is not None:
            warn(f"{e}; counting again")
        levels = None
    if levels is not None:
        return levels
    if counted is None:
        if train_ids is None:
            train_ids, _ = training_ids(config, vocab)
        if say is not None:
            say(f"counting the {ORDER + 1}-gram model of {len(train_ids):,} training "
                f"characters (once; cached in {path_of(name).parent})")
        counted = ngram.count(train_ids, ORDER)
    levels = ngram.levels(*counted, ORDER)
    save(name, levels)
    return levels
