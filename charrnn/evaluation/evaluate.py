"""`charrnn eval`: a run's loss on a text, beside n-gram baselines on the same text.

The baselines are counted on the run's own training text (the corpus it was trained on, its
training part), so the comparison is the one the paper makes (Karpathy, Johnson and Fei-Fei
2015, Table 2): how much does the network know beyond the last n characters? The baselines'
results are cached in the run directory (eval-cache.json), keyed by both texts' digests.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import torch

from charrnn import checkpoint, rundir
from charrnn.config import LN2
from charrnn.errors import CharrnnError
from charrnn.evaluation import ngram
from charrnn.fileio import atomic_write, atomic_write_text, read_json_object, read_text
from charrnn.interp.inspection import run_corpus
from charrnn.model import CharRNN
from charrnn.vocab import Vocab

ORDERS = tuple(range(10))  # characters of context: 0 is the unigram model
MAX_TEXT = 1 << 26  # characters of FILE read at most (64M)
NGRAM_CHARS = 20_000_000  # training characters the baselines count at most (about 2 GB)
BLOCK = 4096  # characters per call of the model
CACHE = rundir.EVAL_CACHE
CACHE_FORMAT = 2  # 2: numbers only


def evaluate(run: Path, text_file: Path | None = None, orders=ORDERS, say=None) -> dict:
    """Every row of the table: the model's loss and each baseline's, on FILE or the run's
    validation text; plus each character's probability under the model (`per_char`)."""
    run = Path(run)
    model, vocab, config = checkpoint.load(run)
    corpus = run_corpus(config)  # the text the run was trained on, checked by its digest
    train, val = corpus.split(config.get("train", {}))
    train_ids = vocab.remap(np.asarray(train[:NGRAM_CHARS]), corpus.vocab).astype(np.int64)
    if text_file is not None:
        text, more = read_text(text_file, "FILE", MAX_TEXT)
        if more:
            raise CharrnnError(f"{text_file} holds more than {MAX_TEXT:,} characters; evaluate "
                               "on a part of it (head -c 50000000 FILE > part.txt)")
        problem = vocab.describe_unknown(text)
        if problem is not None:
            raise CharrnnError(f"{text_file} has {problem}; the model gives them no "
                               "probability, so evaluate on text made of the run's characters")
        ids = vocab.encode(text).astype(np.int64)
        what = str(text_file)
    else:
        ids = vocab.remap(np.asarray(val), corpus.vocab).astype(np.int64)
        what = "the run's validation text"
    if len(ids) < 2:
        raise CharrnnError(f"{what} has fewer than 2 characters; there is nothing to predict")
    p_model = model_probabilities(model, ids)
    rows = [_row("charrnn", f"{model.config.layers}x{model.config.hidden_size} "
                 f"{model.config.model}", p_model)]
    rows.append({"name": "uniform", "about": f"1/{len(vocab)}", "nats": math.log(len(vocab)),
                 "bits": math.log(len(vocab)) / LN2, "perplexity": float(len(vocab))})
    rows += _baselines(run, train_ids, ids, len(vocab), orders, say)
    return {"run": str(run), "text": what, "characters": int(len(ids) - 1),
            "training_characters": int(len(train_ids)), "rows": rows,
            "per_char": (ids, p_model, vocab)}


@torch.no_grad()
def model_probabilities(model: CharRNN, ids: np.ndarray) -> np.ndarray:
    """P(ids[i] | ids[:i]) under the model for i = 1 .. len(ids) - 1, fed in blocks."""
    model.eval()
    device = next(model.parameters()).device
    x = torch.from_numpy(ids)
    out, state = [], None
    for start in range(0, len(ids) - 1, BLOCK):
        block = x[start: min(start + BLOCK, len(ids) - 1)]
        logits, state = model(block[None].to(device), state)
        logp = torch.log_softmax(logits[0].double(), dim=-1)
        targets = x[start + 1: start + 1 + len(block)].to(device)
        out.append(logp.gather(1, targets[:, None])[:, 0].exp().cpu().numpy())
    return np.concatenate(out)


def _row(name: str, about: str, p: np.ndarray) -> dict:
    nats = ngram.loss(p)
    return {"name": name, "about": about, "nats": nats, "bits": nats / LN2,
            "perplexity": math.exp(nats)}


def _baselines(run: Path, train_ids, ids, vocab_size, orders, say) -> list[dict]:
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
        return [_named(order, nats) for order, nats in zip(orders, cached)]
    if say is not None:
        say(f"counting n-grams of orders {min(orders)} to {max(orders)} on "
            f"{len(train_ids):,} training characters (cached in {path} afterwards)")
    raw, continuation = ngram.count(train_ids, max(orders))
    losses = [ngram.loss(ngram.probabilities(ngram.levels(raw, continuation, order), ids,
                                             vocab_size)) for order in orders]
    try:
        atomic_write_text(path, json.dumps({key: losses}) + "\n")  # the latest text only
    except OSError:
        pass  # a cache we cannot write costs the next call its counting, nothing else
    return [_named(order, nats) for order, nats in zip(orders, losses)]


def _named(order: int, nats: float) -> dict:
    name = "unigram" if order == 0 else f"{order + 1}-gram"
    return {"name": name, "about": f"Kneser-Ney, context {order}", "nats": nats,
            "bits": nats / LN2, "perplexity": math.exp(nats)}


def write_per_char(path: Path, ids: np.ndarray, p: np.ndarray, vocab: Vocab) -> None:
    """One JSON line per predicted character: its position, the character, its probability."""
    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            for i, (c, prob) in enumerate(zip(ids[1:], p), start=1):
                f.write(json.dumps({"i": i, "char": vocab.chars[c], "p": float(prob)}) + "\n")
    atomic_write(Path(path), write)
