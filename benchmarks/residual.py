"""Training against the count model: does a network that adds to the counts' log-probabilities
(and so learns only what counting misses) beat the plain network mixed with the counts, for the
same CPU time?

    python benchmarks/residual.py       # about 10 minutes on a 2-core CPU

On tiny Shakespeare (../shared/corpora), two networks of the same size, trained by the same loop
for the same wall-clock budget, which for the residual one includes counting the 10-gram model
and writing out its distribution at every training character:
- plain: the usual cross-entropy; then mixed with the counts by charrnn's gate (fitted on the
  first half of the validation text, scored on the second);
- residual: the cross-entropy of softmax(network's logits + log p_counts).
Both scored on the second half of the validation text. Writes benchmarks/results/residual.json.
(Tiny Shakespeare only: the distribution at every character of a 10 MB code base would need
about 9 GB.)
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results import write_results  # noqa: E402

from charrnn import adapt  # noqa: E402
from charrnn.config import ModelConfig  # noqa: E402
from charrnn.evaluation import mixing, ngram  # noqa: E402
from charrnn.evaluation.mixture import fit  # noqa: E402
from charrnn.evaluation.novelty import Hashes  # noqa: E402
from charrnn.model import CharRNN  # noqa: E402
from charrnn.vocab import Vocab  # noqa: E402

TINYSHAKESPEARE = ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"
ORDER = 9
CHUNK = 65_536  # positions whose whole distributions are built at a time


def dense_log(model: ngram.Model, ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """(N - 1, V) float32: the log of the counts' whole distribution before each character
    1 .. N - 1, built level by level over chunks of positions (numpy, no loop per character)."""
    h = Hashes(ids)
    out = np.empty((len(ids) - 1, vocab_size), dtype=np.float32)
    for lo in range(1, len(ids), CHUNK):
        positions = np.arange(lo, min(lo + CHUNK, len(ids)))
        p = np.full((len(positions), vocab_size), 1.0 / vocab_size)
        for k in range(1, len(model.discounts) + 1):
            start = positions - k + 1
            ok = np.flatnonzero(start >= 0)
            rank, seen = model._find(h.windows(k - 1)[start[ok]] ^ model.salts[k - 1])
            ok, rank = ok[seen], rank[seen]
            if not len(ok):
                break
            p[ok] *= model.freed[rank][:, None]
            lengths = model.types[rank].astype(np.int64)
            ends = lengths.cumsum()
            rows = np.arange(int(ends[-1])) + np.repeat(model.starts[rank] - (ends - lengths),
                                                        lengths)
            p[np.repeat(ok, lengths), model.chars[rows]] += model.values[rows]
        out[positions - 1] = np.log(p)
    return out


def train(ids: np.ndarray, prior: np.ndarray | None, vocab_size: int, seconds: float,
          hidden: int, batch: int, seq: int, lr: float) -> tuple[CharRNN, int]:
    """A 2xH LSTM trained by a plain TBPTT loop for `seconds` (AdamW, warm-up, cosine decay
    over the fraction of the time spent), with the counts' log-probabilities added to its
    logits when `prior` is given."""
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=vocab_size, hidden_size=hidden, dropout=0.0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99),
                                  weight_decay=0.01)
    per = (len(ids) - 1) // batch
    streams = torch.from_numpy(ids[: batch * per + 1].astype(np.int64))
    index = torch.arange(batch)[:, None] * per
    hidden_state, start, step = None, time.perf_counter(), 0
    while (spent := time.perf_counter() - start) < seconds:
        at = (step * seq) % (per - seq)
        if at < seq:
            hidden_state = None
        where = index + at + torch.arange(seq)  # (B, T)
        x, y = streams[where], streams[where + 1]
        logits, hidden_state = model(x, hidden_state)
        if prior is not None:
            logits = logits + torch.from_numpy(prior[where.numpy()])
        loss = F.cross_entropy(logits.reshape(-1, vocab_size), y.reshape(-1))
        fraction = spent / seconds
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 50) * (0.05 + 0.95 * 0.5 * (
                1 + math.cos(math.pi * fraction)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        hidden_state = tuple(s.detach() for s in hidden_state)
        step += 1
    return model.eval(), step


@torch.no_grad()
def residual_p(model: CharRNN, ids: np.ndarray, prior: np.ndarray) -> np.ndarray:
    logits, _ = model(torch.from_numpy(ids[:-1].astype(np.int64))[None])
    logp = torch.log_softmax(logits[0].double() + torch.from_numpy(prior).double(), -1)
    return logp.gather(1, torch.from_numpy(ids[1:].astype(np.int64))[:, None])[:, 0].exp() \
        .numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=240.0)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" /
                        "residual.json")
    args = parser.parse_args()
    if not TINYSHAKESPEARE.exists():
        sys.exit(f"{TINYSHAKESPEARE} is not here")
    torch.set_num_threads(2)
    text = TINYSHAKESPEARE.read_text(encoding="utf-8")
    vocab = Vocab(tuple(sorted(set(text))))
    ids = vocab.encode(text).astype(np.int64)
    cut = int(len(ids) * 0.9)
    train_ids, val = ids[:cut], ids[cut:]
    half = len(val) // 2
    V, settings = len(vocab), {"hidden": 128, "batch": 32, "seq": 64, "lr": 4e-3}
    results = {"settings": settings, "seconds": args.seconds, "order": ORDER}

    plain, steps = train(train_ids, None, V, args.seconds, **settings)
    results["plain_steps"] = steps
    started = time.perf_counter()
    counts_model = ngram.kneser_ney(*ngram.count(train_ids, ORDER), ORDER)
    prior = dense_log(counts_model, train_ids, V)
    results["counting_seconds"] = time.perf_counter() - started
    residual, steps = train(train_ids, prior, V, args.seconds - results["counting_seconds"],
                            **settings)
    results["residual_steps"] = steps
    del prior

    fit_part, scored = val[: half + 1], val[half:]
    r_fit = mixing.Readings(adapt.static(plain, fit_part),
                            ngram.score(counts_model, fit_part, V))
    r = mixing.Readings(adapt.static(plain, scored), ngram.score(counts_model, scored, V))
    gate = fit(*r_fit.inputs("static"))
    loss = lambda p: float(-np.log(p).mean())  # noqa: E731
    results["plain_nats"] = loss(r.static.p)
    results["counts_nats"] = loss(r.counts.p)
    results["plain_mixed_nats"] = loss(gate.mix(*r.inputs("static")))
    results["residual_nats"] = loss(residual_p(residual, scored, dense_log(counts_model, scored,
                                                                           V)))
    results["residual_wins"] = results["residual_nats"] < results["plain_mixed_nats"]
    print(results, flush=True)
    write_results(args.json, results)


if __name__ == "__main__":
    main()
