"""What `charrnn eval` and `charrnn info` show: the loss table and the facts of a run, as Rich
renderables and lines of plain text (a stranger's names and paths made printable first)."""

from __future__ import annotations

import math
import shlex
from pathlib import Path

from rich.table import Table
from rich.text import Text

from charrnn.engine.distributed import resume_command
from charrnn.errors import printable


def eval_table(result: dict) -> Table:
    """The model's loss beside the baselines, one row each; what the rows mean below."""
    from rich import box

    table = Table(title=printable(f"loss per character on {result['characters']:,} characters "
                                  f"of {result['text']}"), box=box.SIMPLE_HEAD,
                  caption=EVAL_CAPTION.format(result["training_characters"]),
                  caption_justify="left")
    for column in ("model", "nats", "bits", "perplexity", "training", "adapts"):
        table.add_column(column, no_wrap=column == "model",
                         justify="right" if column in ("nats", "bits", "perplexity") else "left")
    for r in result["rows"]:
        table.add_row(Text(printable(f"{r['name']} ({r['about']})" if r["about"] else
                                     r["name"])), f"{r['nats']:.4f}", f"{r['bits']:.4f}",
                      f"{r['perplexity']:.3f}" if r["perplexity"] < 1e6 else
                      f"{r['perplexity']:.3g}", "seen" if r["uses_training_text"] else "-",
                      "yes" if r["adapts"] else "-")
    return table


EVAL_CAPTION = ("training: the row learned from the run's training text ({:,} characters); "
                "adapts: it learns from the text as it reads it, each character predicted "
                "first. + counts: mixed with the counts of the training text (adapting: also "
                "with the counts and the match model of the text read so far, and the network "
                "as trained); n-grams: interpolated Kneser-Ney; bz2, lzma, zlib: the text "
                "alone, compressed.")


def info_lines(facts: dict, run: Path) -> list[str]:
    """What `charrnn info` says of a run, a line per fact (the loss curves are drawn apart)."""
    m, p, c = facts["model"], facts["progress"], facts["corpus"]
    steps = f"{p['step']:,}" + (f" of {p['planned_steps']:,} planned" if p["planned_steps"]
                                else "")
    state = ("finished" if p["finished"] else
             "stopped early (interrupted, or still training): continue with "
             f"`{resume_command(run, p['processes'])}`")
    best = facts["best_val_loss"]
    elapsed = p["elapsed_s"]
    lines = [
        f"run          {run}",
        f"model        {m['layers']}x{m['hidden_size']} {m['model']}, embedding "
        f"{m['embedding_size']}, dropout {m['dropout']:g}; {m['parameters']:,} parameters",
        f"corpus       {c['source'] or c['name']} ({c['characters']:,} characters, "
        f"{facts['vocabulary']} distinct) at {c['path']}",
        f"chosen       {facts['choice'].get('reason') or 'as given'}",
        "settings     " + ", ".join(f"{k}={v}" for k, v in facts["train"].items()
                                    if k not in ("include", "exclude") or v),
        f"steps        {steps}; {state}",
        *plan_lines(facts, run),
        *([f"processes    {p['processes']} (torchrun), when last saved"]
          if p["processes"] > 1 else []),
        f"epochs       {p['epochs']:.2f}" if p["epochs"] is not None else "epochs       -",
        f"time         {elapsed:.0f} s" if elapsed is not None and math.isfinite(elapsed)
        else "time         -",
        (f"best         validation loss {best:.4f} nats/char ({facts['best_val_bpc']:.3f} "
         "bits/char): the network as trained, `charrnn eval`'s first row; eval adds it "
         "adapting and mixed") if best is not None else "best         no evaluation yet",
        "checkpoints  " + ", ".join(f"{k} ({v / 1e6:,.1f} MB)" if v >= 1e5 else
                                    f"{k} ({v / 1e3:,.1f} KB)"
                                    for k, v in facts["checkpoints"].items()),
    ]
    if p["state_error"]:
        lines.append(f"warning      {p['state_error']}")
    return lines + [f"warning      {w}" for w in facts["warnings"]]


def plan_lines(facts: dict, run: Path) -> list[str]:
    """What `charrnn info` says of a run's plan and speed, and how to repeat it."""
    plan, speed, lines = facts["plan"], facts["speed"], []
    if plan:
        replans = plan.get("replans") or []
        end = replans[-1]["steps"] if replans else plan.get("steps", 0)
        line = f"plan         {plan.get('seconds', 0):g} s as {end:,} steps"
        if replans:
            line += (f" (planned again at {len(replans)} evaluation"
                     f"{'s' if len(replans) != 1 else ''}, from {plan.get('steps', 0):,})")
        if plan.get("repeat"):
            line += ", repeated from another run"
        lines.append(line)
    rates = [(f"planned {speed['planned_train']:,.0f}" if speed["planned_train"] else ""),
             (f"measured {speed['measured_train']:,.0f}" if speed["measured_train"] else "")]
    if any(rates):
        evals = (f"; validating {speed['measured_eval']:,.0f}" if speed["measured_eval"]
                 else "")
        lines.append(f"speed        {', '.join(r for r in rates if r)} chars/s training{evals}")
    lines.append(f"repeat       charrnn train --plan-from {shlex.quote(str(run))} --out NEW   "
                 "(the same model, settings, seed and steps)")
    return lines
