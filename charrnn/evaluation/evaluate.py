"""`charrnn eval`: a run's loss on a text, beside what a user could have without the network.

Rows, each in nats per character of the same text:
- the network as trained, and the network learning from the text as it reads it (dynamic
  evaluation, charrnn/adapt.py);
- the network mixed with the counts of its training text, and the adapting network mixed with
  those, with the counts of the text read so far and with its match model
  (charrnn/evaluation/mixing.py);
- interpolated Kneser-Ney n-gram models counted on the run's training text (the comparison the
  paper makes: Karpathy, Johnson and Fei-Fei 2015, Table 2), and the uniform distribution;
- the general-purpose compressors of Python's standard library over the evaluated text alone.
Each row says whether it saw the training text and whether it adapts as it reads. The
baselines' losses are cached in the run directory (eval-cache.json), keyed by both texts'
digests; the count model and the mixtures' gates in the cache (charrnn/evaluation/counts.py).
"""

from __future__ import annotations

import bz2
import hashlib
import json
import lzma
import math
import zlib
from pathlib import Path

import numpy as np

from charrnn import adapt, checkpoint, rundir, threads
from charrnn.config import LN2
from charrnn.errors import CharrnnError
from charrnn.evaluation import counts, mixing, ngram
from charrnn.fileio import atomic_write, atomic_write_text, read_json_object, read_text
from charrnn.model import CharRNN
from charrnn.vocab import Vocab

ORDERS = tuple(range(10))  # characters of context: 0 is the unigram model
MAX_TEXT = 1 << 26  # characters of FILE read at most (64M)
CACHE = rundir.EVAL_CACHE
CACHE_FORMAT = 2  # 2: numbers only
COMPRESSORS = {"bz2": lambda b: bz2.compress(b, 9),
               "lzma": lambda b: lzma.compress(b, preset=9 | lzma.PRESET_EXTREME),
               "zlib": lambda b: zlib.compress(b, 9)}


def evaluate(run: Path, text_file: Path | None = None, adapting: bool = True, orders=ORDERS,
             say=None, warn=None) -> dict:
    """Every row of the table on FILE or the run's validation text (`adapting`: with the rows
    that learn as they read); plus each character's probability under the network as trained
    (`per_char`)."""
    run = Path(run)
    model, vocab, config = checkpoint.load(run)
    train_ids, val_ids = counts.training_ids(config, vocab)  # the run's own text, checked
    if text_file is not None:
        ids, what = _file_ids(text_file, vocab), str(text_file)
    else:
        ids, what = val_ids, "the run's validation text"
    if len(ids) < 2:
        raise CharrnnError(f"{what} has fewer than 2 characters; there is nothing to predict")
    workers = threads.configure().count  # streams read side by side, a thread each
    baselines, counted = _baselines(run, train_ids, ids, len(vocab), orders, say)
    counted_model = counts.of_run(config, vocab, train_ids, say, warn, counted)
    if say is not None and adapting:
        say(f"reading {len(ids):,} characters as the model learns from them")
    readings = mixing.read(model, ids, counted_model, len(vocab), adapting, workers)
    rows = [_row("charrnn", _name(model), readings.static.p, False)]
    kinds = ("static", "reading") if adapting else ("static",)
    if adapting:
        rows.append(_row("charrnn, adapting", "", readings.adapting.p, True))
    for kind in kinds:
        if text_file is None:  # the validation text: scored with gates fitted on its other half
            p = mixing.crossed(readings, kind)
        else:
            gate = mixing.gate(kind, model, config, vocab, counted_model, val_ids, workers)
            p = mixing.mixed(readings, kind, gate)
        rows.append(_row(*MIXTURES[kind], p, kind != "static"))
    rows += baselines
    rows.append({"name": "uniform", "about": f"1/{len(vocab)}", "nats": math.log(len(vocab)),
                 "bits": math.log(len(vocab)) / LN2, "perplexity": float(len(vocab)),
                 "adapts": False, "uses_training_text": False})
    rows += _compressed(vocab.decode(ids), len(ids))
    return {"run": str(run), "text": what, "characters": int(len(ids) - 1),
            "training_characters": int(len(train_ids)), "rows": rows,
            "per_char": (ids, readings.static.p, vocab)}


MIXTURES = {"static": ("charrnn + counts", ""), "reading": ("charrnn + counts, adapting", "")}


def _name(model: CharRNN) -> str:
    c = model.config
    return f"{c.layers}x{c.hidden_size} {c.model}"


def _file_ids(text_file: Path, vocab: Vocab) -> np.ndarray:
    text, more = read_text(text_file, "FILE", MAX_TEXT)
    if more:
        raise CharrnnError(f"{text_file} holds more than {MAX_TEXT:,} characters; evaluate "
                           "on a part of it (head -c 50000000 FILE > part.txt)")
    problem = vocab.describe_unknown(text)
    if problem is not None:
        raise CharrnnError(f"{text_file} has {problem}; the model gives them no "
                           "probability, so evaluate on text made of the run's characters")
    return vocab.encode(text).astype(np.int64)


def _compressed(text: str, characters: int) -> list[dict]:
    """The compressors' rows: what each needs for the text alone, per character."""
    data = text.encode("utf-8", "surrogatepass")
    rows = []
    for name, compress in COMPRESSORS.items():
        nats = len(compress(data)) * 8 * LN2 / characters
        rows.append({"name": name, "about": "", "nats": nats,
                     "bits": nats / LN2, "perplexity": math.exp(min(nats, 700)),
                     "adapts": True, "uses_training_text": False})
    return rows


def model_probabilities(model: CharRNN, ids: np.ndarray) -> np.ndarray:
    """P(ids[i] | ids[:i]) under the model for i = 1 .. len(ids) - 1, fed in blocks."""
    return adapt.static(model, ids).p


def _row(name: str, about: str, p: np.ndarray, adapts: bool) -> dict:
    nats = ngram.loss(p)
    return {"name": name, "about": about, "nats": nats, "bits": nats / LN2,
            "perplexity": math.exp(nats), "adapts": adapts, "uses_training_text": True}


def _baselines(run: Path, train_ids, ids, vocab_size, orders, say):
    """(the n-gram rows, and the counts when they had to be counted: (raw, continuation))"""
    key = hashlib.blake2b(
        b"|".join([str(CACHE_FORMAT).encode(), np.ascontiguousarray(train_ids).tobytes(),
                   np.ascontiguousarray(ids).tobytes(), repr(tuple(orders)).encode(),
                   str(vocab_size).encode()]), digest_size=16).hexdigest()
    path = run / CACHE
    # the cache holds numbers only, one per order, each checked: a stranger's run may bring a
    # cache of its own, whose names and figures would otherwise be shown as measured
    cached = read_json_object(path).get(key)
    if isinstance(cached, list) and len(cached) == len(orders) and all(
            isinstance(v, float) and 0 <= v < 1e4 for v in cached):
        return [_named(order, nats) for order, nats in zip(orders, cached)], None
    if say is not None:
        say(f"counting n-grams of orders {min(orders)} to {max(orders)} on "
            f"{len(train_ids):,} training characters (cached in {path} afterwards)")
    raw, continuation = ngram.count(train_ids, max(orders))
    losses = [ngram.loss(ngram.probabilities(ngram.kneser_ney(raw, continuation, order), ids,
                                             vocab_size)) for order in orders]
    try:
        atomic_write_text(path, json.dumps({key: losses}) + "\n")  # the latest text only
    except OSError:
        pass  # a cache we cannot write costs the next call its counting, nothing else
    return [_named(order, nats) for order, nats in zip(orders, losses)], (raw, continuation)


def _named(order: int, nats: float) -> dict:
    name = "unigram" if order == 0 else f"{order + 1}-gram"
    return {"name": name, "about": "", "nats": nats,
            "bits": nats / LN2, "perplexity": math.exp(nats), "adapts": False,
            "uses_training_text": True}


def write_per_char(path: Path, ids: np.ndarray, p: np.ndarray, vocab: Vocab) -> None:
    """One JSON line per predicted character: its position, the character, its probability."""
    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            for i, (c, prob) in enumerate(zip(ids[1:], p), start=1):
                f.write(json.dumps({"i": i, "char": vocab.chars[c], "p": float(prob)}) + "\n")
    atomic_write(Path(path), write)
