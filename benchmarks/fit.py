"""Fit the rule behind charrnn's automatic choice to the grid that benchmarks/grid.py measured.

    python benchmarks/fit.py          # print the fit and its residuals, write grid/fit.json

The model is the scaling law L = E_corpus + A / P^alpha + B / D^beta, with P the recurrent
layers' parameters and D the characters trained on; passes over the corpus after the first count
as less than new text (charrnn.autosize.effective_chars, with REPEAT_DECAY chosen here too).
alpha, beta and REPEAT_DECAY are searched on a grid; E (one per corpus), A and B are then a
linear least-squares fit. Only points without dropout enter; the dropout points are printed
beside the rule's choice of dropout for them. The choice needs A, alpha, B and beta only: E is
the corpus's floor, the same for every size.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from charrnn import autosize  # noqa: E402
from charrnn.config import ModelConfig  # noqa: E402

GRID = ROOT / "benchmarks" / "grid" / "grid.jsonl"
OUT = ROOT / "benchmarks" / "grid" / "fit.json"


def params(p: dict) -> int:
    return autosize.parameters(ModelConfig(vocab_size=65, layers=p["layers"],
                                           hidden_size=p["hidden_size"], embedding_size=64))


def unique_chars(p: dict) -> float:
    return p["corpus_chars"] * 0.9  # the training split


def design(points, alpha, beta, decay):
    corpora = sorted({p["corpus"] for p in points})
    rows = []
    for p in points:
        d = effective(p["chars_seen"], unique_chars(p), decay)
        rows.append([float(p["corpus"] == c) for c in corpora]
                    + [params(p) ** -alpha, d ** -beta])
    return np.array(rows), corpora


def effective(seen, unique, decay):
    if seen <= unique:
        return seen
    return unique * (1 + decay * (1 - np.exp(-(seen / unique - 1) / decay)))


def fit(points):
    y = np.array([p["best_val_loss"] for p in points])
    best = None
    for alpha, beta, decay in itertools.product(np.arange(0.05, 1.01, 0.025),
                                                np.arange(0.05, 1.01, 0.025),
                                                (1.0, 2.0, 4.0, 8.0, 16.0, 1e9)):
        X, corpora = design(points, alpha, beta, decay)
        coef, *_ = np.linalg.lstsq(X, y, rcond=None)
        if coef[-1] <= 0 or coef[-2] <= 0:
            continue
        rmse = float(np.sqrt(np.mean((X @ coef - y) ** 2)))
        if best is None or rmse < best["rmse"]:
            best = {"rmse": rmse, "alpha": round(float(alpha), 3),
                    "beta": round(float(beta), 3), "repeat_decay": decay,
                    "A": float(coef[-2]), "B": float(coef[-1]),
                    "E": dict(zip(corpora, map(float, coef[:-2])))}
    return best


def main() -> None:
    points = [json.loads(line) for line in GRID.read_text().splitlines() if line.strip()]
    plain = [p for p in points if p["dropout"] == 0]
    result = fit(plain)
    result["points"] = len(plain)
    X, corpora = design(plain, result["alpha"], result["beta"], result["repeat_decay"])
    coef = [result["E"][c] for c in corpora] + [result["A"], result["B"]]
    print(f"fit over {len(plain)} points: rmse {result['rmse']:.4f} nats/char")
    print(json.dumps({k: v for k, v in result.items() if k != "rmse"}, indent=1))
    print(f"{'corpus':<16}{'D':>6}{'hidden':>8}{'measured':>10}{'fitted':>9}")
    for p, fitted in sorted(zip(plain, X @ coef), key=lambda t: (t[0]["corpus"],
                                                                  t[0]["chars_seen"],
                                                                  t[0]["hidden_size"])):
        print(f"{p['corpus']:<16}{p['chars_seen'] / 1e6:>5.2f}M{p['hidden_size']:>8}"
              f"{p['best_val_loss']:>10.3f}{fitted:>9.3f}")
    print("\nbest measured size for each D, and the fit's choice among the measured sizes:")
    for corpus in corpora:
        for d in sorted({p["chars_seen"] for p in plain if p["corpus"] == corpus}):
            row = [p for p in plain if p["corpus"] == corpus and p["chars_seen"] == d]
            measured = min(row, key=lambda p: p["best_val_loss"])
            X_row, _ = design(row, result["alpha"], result["beta"], result["repeat_decay"])
            chosen = row[int(np.argmin(X_row[:, -2:] @ coef[-2:]))]
            print(f"  {corpus:<16}{d / 1e6:>5.2f}M  measured best {measured['hidden_size']:>4} "
                  f"({measured['best_val_loss']:.3f})  fit picks {chosen['hidden_size']:>4} "
                  f"({chosen['best_val_loss']:.3f})")
    dropped = [p for p in points if p["dropout"] > 0]
    if dropped:
        print("\ndropout points (the rule's dropout for them in brackets):")
        for p in sorted(dropped, key=lambda p: (p["chars_seen"], p["hidden_size"], p["dropout"])):
            base = [q for q in plain if (q["corpus"], q["chars_seen"], q["hidden_size"]) ==
                    (p["corpus"], p["chars_seen"], p["hidden_size"])]
            rule = autosize.dropout_for(p["chars_seen"], unique_chars(p))
            print(f"  {p['corpus']:<16}{p['chars_seen'] / 1e6:>5.2f}M {p['hidden_size']:>4} "
                  f"dropout {p['dropout']:.1f}: {p['best_val_loss']:.3f}  (no dropout: "
                  f"{base[0]['best_val_loss'] if base else float('nan'):.3f}; rule {rule})")
    OUT.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
