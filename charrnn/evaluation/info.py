"""What a run is and what happened to it, read from its directory: the model, the corpus, the
settings and how they were chosen, how far it got, its checkpoints, and its loss curves (for
`charrnn info`). Reads only: config.json, metrics.jsonl, and the size-checked training state.
"""

from __future__ import annotations

import math
from pathlib import Path

from charrnn import checkpoint
from charrnn.config import LN2
from charrnn.errors import CharrnnError
from charrnn.fileio import MAX_RECORD_BYTES, loads_json, read_regular


def _number(value) -> float:
    """A JSON number as a float (NaN for anything else)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def gather(run: Path) -> dict:
    """Everything `charrnn info` says about a run, as plain JSON values."""
    run = Path(run)
    config = checkpoint.read_config(run)
    mc, vocab = checkpoint.model_config(config, run)
    _check_fields(config, run / checkpoint.CONFIG)
    train = config.get("train", {})
    plan = config.get("plan") or {}
    damaged, warnings = [], []
    try:
        curves = read_metrics(run / checkpoint.METRICS, damaged)
    except CharrnnError as e:  # a link, a FIFO, a huge file: said, and the rest shown
        curves, warnings = [], [str(e)]
    if damaged:
        warnings.append(f"{run / checkpoint.METRICS}: {len(damaged)} damaged line"
                        f"{'s' if len(damaged) != 1 else ''} left out of the curves")
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
    replans = plan.get("replans") if isinstance(plan.get("replans"), list) else []
    planned = ((replans[-1].get("steps") if replans and isinstance(replans[-1], dict) else None)
               or plan.get("steps") or train.get("max_steps"))
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
        "warnings": warnings,
    }


def _check_fields(config: dict, path: Path) -> None:
    """The parts of a config.json that `info` shows, checked: a stranger's may hold anything."""
    from charrnn.budget.plan import Plan

    def bad(field: str, value) -> CharrnnError:
        return CharrnnError(f"{path} is corrupted ({field} is {str(value)[:40]!r}); train the "
                            "run again")
    corpus = config["corpus"]
    for key in ("name", "source", "path", "digest"):
        if corpus.get(key) is not None and not isinstance(corpus[key], str):
            raise bad(f"corpus.{key}", corpus[key])
    chars = corpus.get("characters")
    if isinstance(chars, bool) or not isinstance(chars, int) or chars < 0:
        raise bad("corpus.characters", chars)
    best = config.get("best_val_loss")
    if best is not None and not 0 <= _number(best) < math.inf:
        raise bad("best_val_loss", best)
    choice = config.get("choice") or {}
    if not isinstance(choice, dict) or not isinstance(choice.get("reason", ""), str):
        raise bad("choice", choice)
    if config.get("plan"):
        try:
            Plan.from_dict(config["plan"])
        except (TypeError, KeyError, ValueError, AttributeError):
            raise bad("plan", config["plan"]) from None
    step = config.get("step", 0)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise bad("step", step)


def _speeds(plan: dict, measured) -> dict:
    """The training and validation speeds the run was planned with, and the ones it measured of
    itself (chars/s; None where unknown)."""
    from charrnn.budget.speed import speed_value

    def number(d, key):
        try:
            return speed_value(d.get(key) if isinstance(d, dict) else None)
        except ValueError:
            return None  # (missing, or past any machine: a float's edge overflows the figures)
    return {"planned_train": number(plan, "chars_per_sec"),
            "planned_eval": number(plan, "eval_chars_per_sec"),
            "measured_train": number(measured, "train"), "measured_eval": number(measured, "eval")}


MAX_FIGURE = 1e9  # a loss or an epoch past this is damage: 1e308 would overflow the plot


def read_metrics(path: Path, damaged: list | None = None) -> list[dict]:
    """The evaluations in metrics.jsonl (step, epoch, train and validation loss), in step order;
    lines cut short or damaged are left out (and counted in `damaged`, if given)."""
    if not path.exists() and not path.is_symlink():
        return []
    rows = {}
    damaged = [] if damaged is None else damaged
    text = read_regular(path, MAX_RECORD_BYTES).decode("utf-8", "replace")
    for line in text.splitlines():
        try:
            r = loads_json(line)
            row = {k: _number(r[k]) for k in ("train_loss", "val_loss", "epoch")}
            row["step"], row["elapsed"] = r["step"], _number(r.get("elapsed", math.nan))
        except (ValueError, KeyError, TypeError):
            damaged.append(line)
            continue
        if isinstance(row["step"], int) and not isinstance(row["step"], bool) and \
                0 <= row["step"] < 2**62 and all(0 <= row[k] <= MAX_FIGURE
                                                  for k in ("train_loss", "val_loss", "epoch")):
            rows[row["step"]] = row  # a resumed run rewrites later steps: the last one wins
        else:
            damaged.append(line)
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
