"""Fit the rule behind charrnn's automatic choice to the grid that benchmarks/grid.py measured.

    python benchmarks/fit.py          # print the check of every candidate rule, write grid/fit.json

The rule (charrnn/budget/rule.py): the largest size that can train on at least k characters for
each recurrent parameter within the budget, where pass n over the corpus counts
exp(-(n - 1) / r) of new text. Its two constants are fitted here by what matters: for time
budgets on machines of several speeds, each candidate size trains on the characters its speed
allows, its loss is read off the grid (log-linear in D between measured points, and up to twice
past the last), and a rule is scored by its regret, the loss of its choice over the best size's.
Each k is scored by its mean regret over the cases where the grid can read the loss of every
k's choice (so that no k is scored on easier cases than another). The smallest k within
TOLERANCE of the best is written down: rules closer than that are the same to this grid, and the
smaller k picks the larger model, which is what did better where the grid cannot read the
choice (faster machines, longer budgets: a 2x384 with dropout beat a 2x256 at 15 minutes).

Dropout is fitted on the grid's points with dropout, each beside the same size and characters
without it: it helped exactly where the budget lets the model memorise its corpus, measured
as the passes over the corpus times the parameters per unique character (rule.memorising),
and from about 5 (benchmarks/grid/fit.json records where it helped and hurt).

r is not fitted: these runs have no dropout, and they cannot tell r apart (at k = 12 to 14 the
mean regret moves by under 0.01 nats from r = 2 to no decay at all), while
the rule adds dropout exactly when passes repeat, which makes a repeat worth more than here. It
is set to 16, near the value of Muennighoff et al.'s data-constrained scaling law (about 15);
the table below shows every r beside it.

The speeds are those calibrate.measure gave on the machine the grid ran on (below), scaled by
1/4 to 2 for slower and faster machines; budgets from 20 s to 4 minutes.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from charrnn.budget import rule  # noqa: E402
from charrnn.config import ModelConfig  # noqa: E402

GRID = ROOT / "benchmarks" / "grid" / "grid.jsonl"
OUT = ROOT / "benchmarks" / "grid" / "fit.json"
# Training speeds (chars/s, batch 32 x 64, no dropout) that calibrate.measure gave on the 2-core
# Intel Xeon the grid ran on (2 threads, nothing else running), the mean of three.
SPEEDS = {64: 230_000, 128: 95_000, 192: 53_000, 256: 33_000, 384: 16_400, 512: 9_900}
SCALES = (1 / 4, 1 / 3, 1 / 2, 1, 2)
BUDGETS = (20, 45, 90, 120, 240)
KS = (2, 3, 4, 5, 6, 8, 10, 12, 14, 16, 20)
RS = (2.0, 4.0, 8.0, 16.0, 1e9)
REPEAT_DECAY = 16.0
TOLERANCE = 0.01  # nats per character of mean regret


def params(hidden: int) -> int:
    return rule.parameters(ModelConfig(vocab_size=65, hidden_size=hidden))


def loss_at(points: list[dict], d: float) -> float | None:
    """The loss of one size at d characters, read off its measured points."""
    xs = sorted((p["chars_seen"], p["best_val_loss"]) for p in points)
    if len(xs) < 2:
        return None
    for (d0, l0), (d1, l1) in zip(xs, xs[1:]):
        if d0 <= d <= d1:
            return l0 + math.log(d / d0) / math.log(d1 / d0) * (l1 - l0)
    (d0, l0), (d1, l1) = xs[-2:]
    if d1 < d <= 2 * d1:
        return l0 + math.log(d / d0) / math.log(d1 / d0) * (l1 - l0)
    return None


def scenarios(plain: list[dict]) -> list[dict]:
    """Each corpus x machine speed x budget where the grid tells the loss of 3 sizes or more."""
    out = []
    for corpus in sorted({p["corpus"] for p in plain}):
        rows = [p for p in plain if p["corpus"] == corpus]
        unique = rows[0]["corpus_chars"] * 0.9  # the training split
        for scale in SCALES:
            for seconds in BUDGETS:
                chars = {h: r * scale * seconds * rule.TRAIN_SHARE for h, r in SPEEDS.items()}
                losses = {h: loss_at([p for p in rows if p["hidden_size"] == h], chars[h])
                          for h in SPEEDS}
                losses = {h: v for h, v in losses.items() if v is not None}
                if len(losses) >= 3:
                    out.append({"corpus": corpus, "scale": scale, "seconds": seconds,
                                "unique": unique, "chars": chars, "losses": losses})
    return out


def pick(s: dict, k: float, r: float) -> int:
    """The rule's choice, as charrnn.rule.choose makes it, with constants k and r."""
    fitting = [h for h in sorted(SPEEDS) if rule.enough_chars(params(h), s["chars"][h], s["unique"],
                                                          k, r)]
    return max(fitting, default=min(SPEEDS))


def score(cases: list[dict], k: float, r: float, common: list[dict]) -> dict:
    regrets, missed = [], sum(pick(s, k, r) not in s["losses"] for s in cases)
    for s in common:
        h = pick(s, k, r)
        regrets.append(s["losses"][h] - min(s["losses"].values()))
    return {"k": k, "r": r, "mean": sum(regrets) / len(regrets), "max": max(regrets),
            "missed": missed}


def dropout_table(points: list[dict], plain: list[dict]) -> list[dict]:
    """Each grid point with dropout, beside the same size and characters without it, and the
    rule's measure and dropout there."""
    rows = []
    for p in sorted(points, key=lambda p: (p["corpus"], p["chars_seen"], p["hidden_size"],
                                           p["dropout"])):
        none = [q["best_val_loss"] for q in plain if (q["corpus"], q["chars_seen"],
                q["hidden_size"]) == (p["corpus"], p["chars_seen"], p["hidden_size"])]
        if p["dropout"] == 0 or not none:
            continue
        unique = p["corpus_chars"] * 0.9  # the training split
        rows.append({"corpus": p["corpus"], "millions": p["chars_seen"] / 1e6,
                     "hidden_size": p["hidden_size"], "dropout": p["dropout"],
                     "loss": p["best_val_loss"], "none": none[0],
                     "gain": none[0] - p["best_val_loss"],
                     "memorising": rule.memorising(p["chars_seen"], unique,
                                                       params(p["hidden_size"])),
                     "rule": rule.dropout_for(p["chars_seen"], unique,
                                                  params(p["hidden_size"]))})
    return rows


def main() -> None:
    points = [json.loads(line) for line in GRID.read_text().splitlines() if line.strip()]
    plain = [p for p in points if p["dropout"] == 0]
    cases = scenarios(plain)
    common = [s for s in cases if all(pick(s, k, r) in s["losses"] for r in RS for k in KS)]
    scores = [score(cases, k, r, common) for r in RS for k in KS]
    fixed_r = [s for s in scores if s["r"] == REPEAT_DECAY]
    lowest = min(s["mean"] for s in fixed_r)
    best = min((s for s in fixed_r if s["mean"] <= lowest + TOLERANCE), key=lambda s: s["k"])
    print(f"{len(plain)} grid points without dropout, {len(cases)} budget scenarios, "
          f"{len(common)} where the grid reads every rule's choice (the regrets are over these)")
    print(f"{'k':>4}{'r':>6}{'mean regret':>13}{'max':>8}{'unreadable':>12}")
    for s in scores:
        mark = "  <- chosen" if s is best else ""
        print(f"{s['k']:>4g}{s['r']:>6.0g}{s['mean']:>13.4f}{s['max']:>8.3f}{s['missed']:>12}"
              f"{mark}")
    print(f"\nthe chosen rule, k = {best['k']:g}, r = {best['r']:g}, case by case:")
    for s in cases:
        h = pick(s, best["k"], best["r"])
        top = min(s["losses"], key=s["losses"].get)
        regret = (f"{s['losses'][h] - s['losses'][top]:.3f}" if h in s["losses"]
                  else "unreadable")
        print(f"  {s['corpus']:<16} speed x{s['scale']:.2f} {s['seconds']:>4} s: picks 2x{h:<4}"
              f" best 2x{top:<4} regret {regret}")
    dropout = dropout_table(points, plain)
    print("\ndropout against none at the same size and characters, by how far the budget lets the "
          "model memorise its corpus (passes x parameters per unique character):")
    for row in dropout:
        print(f"  {row['corpus']:<16}{row['millions']:>5.1f}M 2x{row['hidden_size']:<4} dropout "
              f"{row['dropout']:.1f}: {row['loss']:.4f} against {row['none']:.4f} "
              f"(gain {row['gain']:+.4f}); memorising {row['memorising']:.2f}, the rule's "
              f"dropout {row['rule']:g}")
    helped = [r["memorising"] for r in dropout if r["gain"] > 0 and r["dropout"] == 0.1]
    hurt = [r["memorising"] for r in dropout if r["gain"] <= 0 and r["dropout"] == 0.1]
    OUT.write_text(json.dumps({"chars_per_parameter": best["k"], "repeat_decay": best["r"],
                               "mean_regret": best["mean"], "max_regret": best["max"],
                               "scenarios": len(common), "grid_points": len(plain),
                               "dropout_from": rule.DROPOUT_FROM,
                               "dropout_helped_from": min(helped, default=None),
                               "dropout_hurt_below": max(hurt, default=None)},
                              indent=1) + "\n")
    print(f"\nwrote {OUT}")


if __name__ == "__main__":
    main()
