"""The measured grid behind charrnn's automatic choice of model size and dropout.

    python benchmarks/grid.py                 # run every missing point, append to grid.jsonl
    python benchmarks/grid.py --list          # show what is measured
    OMP_NUM_THREADS=1 python benchmarks/grid.py --shard 0/2 &   # two processes, one core each
    OMP_NUM_THREADS=1 python benchmarks/grid.py --shard 1/2

Each point trains one model for a fixed number of characters D (steps x batch x seq_len),
not for a fixed time: the best validation loss for (corpus, size, dropout, D) does not depend on
how fast the machine is, or on what else ran beside it. A machine's speed enters only at run
time, when the calibrated throughput turns a time budget into D for each candidate size
(charrnn/budget/calibrate.py). benchmarks/fit.py reads the file and fits the rule.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GRID = ROOT / "benchmarks" / "grid" / "grid.jsonl"
TINYSHAKESPEARE = ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"
STDLIB_SLICE = 3_000_000  # characters of python-stdlib: source code, a corpus seen ~once
BATCH, SEQ = 32, 64

# (corpus, characters seen in millions, hidden size, dropout), cheapest first. Sizes from
# 2x64 to 2x512 at D from 0.25M to 8M characters, leaving out the points that would take
# over four minutes on a 2-core CPU (big models at big D); then dropout where the corpus is
# seen many times over (tiny Shakespeare at 8M characters is eight epochs).
MILLIONS = (0.25, 0.5, 1, 2, 4, 8)
LARGEST_D = {64: 8, 128: 8, 192: 8, 256: 8, 384: 4, 512: 2}
POINTS = (
    [("tinyshakespeare", d, h, 0.0) for d in MILLIONS for h in LARGEST_D if d <= LARGEST_D[h]]
    + [("stdlib", d, h, 0.0) for d in MILLIONS[:-1] for h in (64, 128, 192, 256, 384)
       if d <= min(LARGEST_D[h], 2 if h == 384 else 4)]
    + [("tinyshakespeare", 8, h, p) for h, p in ((192, 0.1), (256, 0.1), (256, 0.2))]
    # small models at many passes, with and without dropout, and dropout on code seen a few
    # times: what the dropout rule is fitted to (benchmarks/fit.py)
    + [("tinyshakespeare", 16, h, p) for h in (64, 128, 192) for p in (0.0, 0.1)]
    + [("tinyshakespeare", 8, h, 0.1) for h in (64, 128)]
    + [("stdlib", 4, h, 0.1) for h in (128, 192)]
)


def stdlib_slice(folder: Path) -> Path:
    """The first 3M characters of python-stdlib: source code, a corpus of another nature."""
    from charrnn.data import corpus

    path = folder / "stdlib-slice.txt"
    if not path.exists():
        _, full = corpus.resolve("python-stdlib")
        path.write_text(full.read_text(encoding="utf-8")[:STDLIB_SLICE], encoding="utf-8")
    return path


def corpus_file(name: str, folder: Path) -> Path:
    return TINYSHAKESPEARE if name == "tinyshakespeare" else stdlib_slice(folder)


def key(p: dict) -> tuple:
    return (p["corpus"], p["chars_seen"], p["hidden_size"], p["dropout"])


def measure(corpus: str, millions: float, hidden: int, dropout: float, folder: Path) -> dict:
    steps = int(millions * 1e6) // (BATCH * SEQ)
    run = folder / "run"
    args = [sys.executable, "-m", "charrnn", "train", str(corpus_file(corpus, folder)),
            "--out", str(run), "--overwrite", "--layers", "2", "--hidden-size", str(hidden),
            "--embedding-size", "64", "--dropout", str(dropout), "--batch-size", str(BATCH),
            "--seq-len", str(SEQ), "--lr", "4e-3", "--max-steps", str(steps),
            "--eval-every", str(max(steps // 8, 1)), "--eval-chars", "200000",
            "--patience", "0", "--seed", "1337", "--sample-every", "0"]
    start = time.monotonic()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   cwd=ROOT)
    seconds = time.monotonic() - start
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    config = json.loads((run / "config.json").read_text())
    best = min(metrics, key=lambda m: m["val_loss"])
    return {"corpus": corpus, "chars_seen": int(steps * BATCH * SEQ),
            "corpus_chars": config["corpus"]["characters"], "layers": 2, "hidden_size": hidden,
            "dropout": dropout, "steps": steps, "best_val_loss": best["val_loss"],
            "best_step": best["step"], "final_val_loss": metrics[-1]["val_loss"],
            "seconds": round(seconds, 1)}


def load() -> list[dict]:
    if not GRID.exists():
        return []
    return [json.loads(line) for line in GRID.read_text().splitlines() if line.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--list", action="store_true", help="print the measured points and exit")
    ap.add_argument("--shard", default="0/1", help="K/N: run every Nth point from the Kth, so N "
                    "processes (one thread each) share a machine's cores")
    args = ap.parse_args()
    k, n = map(int, args.shard.split("/"))
    done = load()
    if args.list:
        for p in sorted(done, key=key):
            print(json.dumps(p))
        return
    have = {key(p) for p in done}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("CHARRNN_CACHE_DIR", str(Path(tmp) / "cache"))
        for corpus, millions, hidden, dropout in POINTS[k::n]:
            steps = int(millions * 1e6) // (BATCH * SEQ)
            if (corpus, steps * BATCH * SEQ, hidden, dropout) in have:
                continue
            if corpus == "tinyshakespeare" and not TINYSHAKESPEARE.exists():
                continue
            point = measure(corpus, millions, hidden, dropout, Path(tmp))
            print(json.dumps(point), flush=True)
            GRID.parent.mkdir(parents=True, exist_ok=True)
            with open(GRID, "a") as f:
                f.write(json.dumps(point) + "\n")


if __name__ == "__main__":
    main()
