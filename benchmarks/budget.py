"""A time budget on a real machine: does `--time T` end at T, and what does the clock cost?

    python benchmarks/budget.py          # about 25 minutes on a 2-core CPU, nothing else running
    python benchmarks/budget.py --seeds 1 2 3 --json benchmarks/results/budget-seeds.json

For tiny Shakespeare with --time 2m and --time 4m, and 400 KB of C (this machine's system
headers, as the c-headers corpus builds them) with --time 45s, each run as a user runs it
(`charrnn train FILE --time T`, nothing else given, one calibration cache for all):
- the wall time of the command against T, the step it ended at against its last plan, how it
  stopped, and the speeds: calibrated, at each re-plan, and over the whole run;
- the final learning rate against the schedule's last (lr * min_lr_frac, after any decays);
- the run repeated with `--plan-from`: the validation loss at every evaluation, against the
  original's;
- the same model, settings and steps with `--max-steps` instead of `--time` (a plain cosine
  over the steps, no re-plans): its best validation loss beside the time run's.
With --seeds, the last pair once for each seed, and beside it the --max-steps run one step
longer: what a pair differs by when its learning-rate paths differ by almost nothing.
Writes benchmarks/results/budget.json; docs/performance.md renders its table from it.
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

from results import write_results  # noqa: E402

TINYSHAKESPEARE = ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"
C_CHARS = 400_000
TARGET = (0.97, 1.02)  # of T, the command's wall time


def charrnn(*args, env=None) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "charrnn", *map(str, args)], env=env,
                          capture_output=True, text=True, check=True)
    return time.perf_counter() - start, done.stderr


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def one(corpus: Path, seconds: float, folder: Path, env: dict) -> dict:
    run = folder / f"{corpus.stem}-{seconds:g}"
    wall, said = charrnn("train", corpus, "--time", f"{seconds:g}s", "--out", run, env=env)
    config = json.loads((run / "config.json").read_text())
    plan, cfg, m = config["plan"], config["train"], config["model"]
    end = plan["replans"][-1]["steps"] if plan["replans"] else plan["steps"]
    evals = metrics(run)
    stopped = next(line for line in said.splitlines() if line.startswith("stopped at step"))
    import torch

    scale = torch.load(run / "latest.pt", weights_only=True)["schedule"]["scale"]  # (decays)
    last_lr = evals[-1]["lr"]
    schedule_last = cfg["lr"] * cfg["min_lr_frac"]
    row = {"corpus": corpus.name, "seconds": seconds, "wall_s": wall, "ratio": wall / seconds,
           "model": f"{m['layers']}x{m['hidden_size']} {m['model']}", "steps": config["step"],
           "planned_end": end, "stopped": stopped.split("(")[1].split(")")[0],
           "calibrated_chars_per_s": plan["chars_per_sec"],
           "replanned_chars_per_s": [r["chars_per_sec"] for r in plan["replans"]],
           "measured_chars_per_s": (config.get("speed") or {}).get("train"),
           "replans": len(plan["replans"]), "last_lr": last_lr,
           "schedule_last_lr": schedule_last * scale, "lr_decays_scale": scale,
           "best_val_loss": config["best_val_loss"]}
    # repeated from its plan: the same losses at every evaluation
    again = folder / f"{run.name}-again"
    charrnn("train", "--plan-from", run, "--out", again, env=env)
    row["plan_from_same_losses"] = ([(e["step"], e["val_loss"]) for e in metrics(again)] ==
                                    [(e["step"], e["val_loss"]) for e in evals])
    row["max_steps_best_val_loss"] = as_steps(corpus, run, folder / f"{run.name}-steps", env)
    print(row, flush=True)
    return row


def as_steps(corpus: Path, run: Path, out: Path, env: dict, more: int = 0) -> float:
    """The same model, settings, seed and steps as `run` (and `more`), with --max-steps instead
    of --time (a plain cosine over steps known from the start, no clock, no re-plan): its best
    loss."""
    config = json.loads((run / "config.json").read_text())
    m, cfg, plan = config["model"], config["train"], config["plan"]
    charrnn("train", corpus, "--max-steps", config["step"] + more, "--out", out,
            *[x for k in ("layers", "hidden_size", "embedding_size", "dropout")
              for x in (f"--{k.replace('_', '-')}", m[k])],
            *[x for k in ("batch_size", "seq_len", "lr", "seed")
              for x in (f"--{k.replace('_', '-')}", cfg[k])],
            "--eval-chars", plan["eval_chars"], env=env)
    return json.loads((out / "config.json").read_text())["best_val_loss"]


def seeds(corpus: Path, seconds: float, folder: Path, env: dict, chosen: list[int]) -> list:
    """The --time run against the same plan as --max-steps, once for each seed: what a single
    pair differs by, and whether one side is better the other. Beside it what two --max-steps
    runs differ by when nothing but one step more sets them apart (its cosine a step longer):
    how far any small change to a run's learning-rate path moves its loss, either way."""
    pairs = []
    for seed in chosen:
        run = folder / f"{corpus.stem}-{seconds:g}-seed{seed}"
        charrnn("train", corpus, "--time", f"{seconds:g}s", "--seed", seed, "--out", run,
                env=env)
        config = json.loads((run / "config.json").read_text())
        pairs.append({"seed": seed, "steps": config["step"],
                      "time_best_val_loss": config["best_val_loss"],
                      "max_steps_best_val_loss": as_steps(corpus, run, folder / f"{run.name}-s",
                                                          env),
                      "one_step_more_best_val_loss": as_steps(
                          corpus, run, folder / f"{run.name}-s1", env, more=1)})
        print(pairs[-1], flush=True)
    return pairs


def c_text(folder: Path, env: dict) -> Path:
    """The first C_CHARS characters of this machine's system headers, as charrnn builds them."""
    charrnn("corpus", "get", "c-headers", env=env)
    built = next((Path(env["CHARRNN_DATA_DIR"]) / "corpora").glob("c-headers*.txt"))
    part = folder / "c-headers-400k.txt"
    part.write_text(built.read_text(encoding="utf-8", errors="replace")[:C_CHARS],
                    encoding="utf-8")
    return part


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" /
                        "budget.json")
    parser.add_argument("--seeds", type=int, nargs="*", default=None,
                        help="only the 400 KB of C at 45 s, --time against --max-steps once "
                        "for each of these seeds (with --json benchmarks/results/"
                        "budget-seeds.json)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env = {**os.environ, "CHARRNN_CACHE_DIR": str(folder / "cache"),
               "CHARRNN_DATA_DIR": str(folder / "data")}
        cases = [(c_text(folder, env), 45.0)]
        if args.seeds:
            write_results(args.json, {"pairs": seeds(*cases[0], folder, env, args.seeds),
                                      "corpus": cases[0][0].name, "seconds": cases[0][1]})
            return
        if TINYSHAKESPEARE.exists():
            cases += [(TINYSHAKESPEARE, 120.0), (TINYSHAKESPEARE, 240.0)]
        for corpus, seconds in cases:
            rows.append(one(corpus, seconds, folder, env))
    write_results(args.json, {"rows": rows, "target": TARGET})


if __name__ == "__main__":
    main()
