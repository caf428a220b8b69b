"""What a run is and what happened to it, read from its directory: the model, the corpus, the
settings and how they were chosen, how far it got, its checkpoints, and its loss curves (for
`charrnn info`). Reads only: config.json, metrics.jsonl, and the size-checked training state.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from charrnn import checkpoint
from charrnn.config import LN2

MAX_METRICS_BYTES = 64 << 20  # far more evaluations than any run makes


def gather(run: Path) -> dict:
    """Everything `charrnn info` says about a run, as plain JSON values."""
    run = Path(run)
    config = checkpoint.read_config(run)
    mc, vocab = checkpoint.model_config(config, run)
    train = config.get("train", {})
    plan = config.get("plan") or {}
    curves = read_metrics(run / checkpoint.METRICS)
    state = {}
    if (run / checkpoint.LATEST).exists():
        try:
            s = checkpoint.load_state(run, checkpoint.state_limit(
                mc, train.get("batch_size") or 1, train.get("eval_every")))
            state = {"step": int(s["step"]), "epoch": int(s["epoch"]),
                     "elapsed": float(s["elapsed"]),
                     "processes": int(s.get("world_size", 1))}  # (more under torchrun)
        except Exception as e:  # noqa: BLE001 - a damaged state is reported, not fatal
            state = {"error": str(e).splitlines()[0][:200]}
    planned = plan.get("steps") or train.get("max_steps")
    step = state.get("step", curves[-1]["step"] if curves else 0)
    best = config.get("best_val_loss")
    return {
        "run": str(run),
        "model": {**mc.to_dict(), "parameters": checkpoint.parameter_count(mc)},
        "corpus": {k: config["corpus"].get(k) for k in ("name", "source", "path", "characters",
                                                        "digest")},
        "vocabulary": len(vocab),
        "train": train,
        "choice": config.get("choice") or {},
        "plan": plan,
        "progress": {"step": step, "planned_steps": planned,
                     "finished": bool(planned) and step >= planned,
                     "epochs": curves[-1]["epoch"] if curves else None,
                     "elapsed_s": state.get("elapsed", curves[-1].get("elapsed") if curves
                                            else None),
                     "processes": state.get("processes", 1),
                     "state_error": state.get("error")},
        "speed": _speeds(plan, config.get("speed")),
        "best_val_loss": best,
        "best_val_bpc": best / LN2 if isinstance(best, (int, float)) else None,
        "checkpoints": {name: (run / name).stat().st_size for name in checkpoint.RUN_FILES
                        if (run / name).exists()},
        "versions": {"charrnn": config.get("charrnn_version"),
                     "torch": config.get("torch_version")},
        "curves": curves,
    }


def _speeds(plan: dict, measured) -> dict:
    """The training and validation speeds the run was planned with, and the ones it measured of
    itself (chars/s; None where unknown)."""
    def number(d, key):
        value = d.get(key) if isinstance(d, dict) else None
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return float(value) if ok and 0 < value < math.inf else None
    return {"planned_train": number(plan, "chars_per_sec"),
            "planned_eval": number(plan, "eval_chars_per_sec"),
            "measured_train": number(measured, "train"), "measured_eval": number(measured, "eval")}


def read_metrics(path: Path) -> list[dict]:
    """The evaluations in metrics.jsonl (step, epoch, train and validation loss), in step order;
    lines cut short or damaged are left out."""
    if not path.exists() or path.stat().st_size > MAX_METRICS_BYTES:
        return []
    rows = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            r = json.loads(line)
            row = {k: float(r[k]) for k in ("train_loss", "val_loss", "epoch")}
            row["step"], row["elapsed"] = int(r["step"]), float(r.get("elapsed", math.nan))
        except (ValueError, KeyError, TypeError):
            continue
        if all(math.isfinite(row[k]) for k in ("train_loss", "val_loss")):
            rows[row["step"]] = row  # a resumed run rewrites later steps: the last one wins
    return [rows[k] for k in sorted(rows)]


def plot(curves: list[dict], width: int, colour: bool) -> str:
    """The training and validation loss curves, drawn by plotext."""
    import plotext as plt

    plt.clear_figure()
    plt.theme("pro" if colour else "clear")
    steps = [r["step"] for r in curves]
    plt.plot(steps, [r["train_loss"] for r in curves], label="train")
    plt.plot(steps, [r["val_loss"] for r in curves], label="validation")
    plt.title("loss, nats per character")
    plt.xlabel("step")
    plt.plotsize(max(min(width, 100), 40), 18)
    text = plt.build()
    return text if colour else plt.uncolorize(text)
