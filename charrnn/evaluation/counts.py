"""The count model of a run's training text, kept in the cache (never in the run folder, which a
run's owner may share), keyed by what it was counted from: the corpus's digest, its decoding,
the run's split and vocabulary, the order.

    CACHE/counts/KEY.safetensors        the Kneser-Ney model (numbers only, no pickle)
    CACHE/counts/KEY.gates.json         the mixtures' gates fitted on the run's validation text

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

FORMAT = 2  # 2: one packed model
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


def save(name: str, model: ngram.Model) -> None:
    """Write the model (a cache we cannot write costs the next call its counting, no more)."""
    from safetensors.numpy import save

    tensors = {"keys": model.keys.astype(np.uint64),
               "types": np.diff(model.starts).astype(np.uint32),
               "levels": model.levels_of.astype(np.uint8),
               "chars": model.chars.astype(np.uint32), "counts": model.counts.astype(np.uint32)}
    meta = {"format": str(FORMAT), "discounts": json.dumps(model.discounts.tolist())}
    data = save(tensors, metadata=meta)
    try:
        atomic_write(path_of(name), lambda tmp: tmp.write_bytes(data), private=True)
    except OSError:
        pass


def load(name: str, vocab_size: int) -> ngram.Model | None:
    """The count model of a cache entry, checked; None where there is none; DamagedCounts where
    the file is not what charrnn writes."""
    path = path_of(name)
    if not path.exists() and not path.is_symlink():
        return None
    try:
        check_regular(path, MAX_BYTES)
        from safetensors import safe_open

        with safe_open(path, framework="numpy") as f:
            meta = f.metadata() or {}
            arrays = {k: f.get_tensor(k) for k in f.keys()}
        return _model(arrays, meta, vocab_size)
    except UnsafeFile as e:
        raise DamagedCounts(f"{e}") from None
    except Exception as e:  # noqa: BLE001 - any failure to parse untrusted bytes is damage
        raise DamagedCounts(f"the counts file {path} is damaged ({first_line(e)[:100]}); "
                            "remove it, and `charrnn eval` counts the text again") from None


KINDS = {"keys": np.uint64, "types": np.uint32, "levels": np.uint8, "chars": np.uint32,
         "counts": np.uint32}


def _model(arrays: dict, meta: dict, vocab_size: int) -> ngram.Model:
    """The model of a read file, each part checked against the others."""
    if meta.get("format") != str(FORMAT) or set(arrays) != set(KINDS):
        raise ValueError("not a counts file of this charrnn")
    discounts = json.loads(meta.get("discounts", "null"))
    if not (isinstance(discounts, list) and len(discounts) == ORDER + 1 and all(
            isinstance(d, (int, float)) and 0 < d <= 1 for d in discounts)):
        raise ValueError("bad discounts")
    if any(arrays[k].dtype != kind or arrays[k].ndim != 1 for k, kind in KINDS.items()):
        raise ValueError("arrays of the wrong kind")
    keys, types, levels, chars, counts = (arrays[k] for k in KINDS)
    if not len(types) == len(levels) == len(keys) or len(counts) != len(chars):
        raise ValueError("arrays of different lengths")
    starts = np.concatenate([[0], np.cumsum(types, dtype=np.int64)])
    if starts[-1] != len(chars) or (len(types) and types.min() == 0):
        raise ValueError("the contexts do not cover the rows")
    if len(keys) == 0 or np.any(keys[1:] <= keys[:-1]) or levels.min() < 1 or \
            levels.max() > ORDER + 1 or chars.max() >= vocab_size or counts.min() == 0:
        raise ValueError("out of order or out of range")
    model = ngram.Model(keys, starts, levels, chars.astype(np.int32), counts.astype(np.float64),
                        discounts)
    ranks = np.repeat(np.arange(len(keys), dtype=np.int64), types)
    if np.any(np.diff((ranks << ngram.CHAR_BITS) | chars.astype(np.int64)) <= 0):
        raise ValueError("a context's characters are out of order")
    return model


def training_ids(config: dict, vocab: Vocab):
    """The run's training text as ids of its vocabulary (at most NGRAM_CHARS of it), and its
    validation text, from the corpus if it is here and is that text."""
    from charrnn.interp.inspection import run_corpus

    try:
        corpus = run_corpus(config)
    except CharrnnError as e:  # (its advice is inspect-cells')
        raise CharrnnError(str(e).split("; pass --text")[0]) from None
    train, val = corpus.split(config.get("train", {}))
    train_ids = vocab.remap(np.asarray(train[:NGRAM_CHARS]), corpus.vocab).astype(np.int64)
    val_ids = vocab.remap(np.asarray(val), corpus.vocab).astype(np.int64)
    return train_ids, val_ids


def of_run(config: dict, vocab: Vocab, train_ids=None, say=None, warn=None, counted=None
           ) -> ngram.Model:
    """The count model of a run's training text: from the cache, else from `counted` (the
    (raw, continuation) tables of `ngram.count` of the training text to ORDER or beyond, where
    the caller has them), else counted; kept in the cache. A damaged cache entry is said
    (`warn`) and counted again."""
    name = key(config, vocab)
    try:
        model = load(name, len(vocab))
    except DamagedCounts as e:
        if warn is not None:
            warn(f"{e}; counting again")
        model = None
    if model is not None:
        return model
    if counted is None:
        if train_ids is None:
            train_ids, _ = training_ids(config, vocab)
        if say is not None:
            say(f"counting the {ORDER + 1}-gram model of {len(train_ids):,} training "
                f"characters (once; cached in {path_of(name).parent})")
        counted = ngram.count(train_ids, ORDER)
    model = ngram.kneser_ney(*counted, ORDER)
    save(name, model)
    return model
