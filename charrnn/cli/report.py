"""`charrnn eval` and `charrnn info`: how good a run is, and what it is."""

from __future__ import annotations

import math
import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from charrnn import threads
from charrnn.cli.base import (
    RunArg,
    app,
    stderr_console,
    stdout_console,
)
from charrnn.errors import printable


@app.command("eval")
def eval_(
    run: RunArg,
    text: Annotated[Optional[Path], typer.Argument(
        help="A UTF-8 text to evaluate on. [default: the run's validation text]",
        show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The table as JSON.")] = False,
    per_char: Annotated[Optional[Path], typer.Option(
        "--per-char", help="Also write each character's probability under the model to this "
        "JSON-lines file (a new file; --force replaces one).", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --per-char "
                                        "file.")] = False,
):
    """The run's loss on a text (nats and bits per character, perplexity), beside baselines on
    the same text: uniform, and interpolated Kneser-Ney n-gram models (one discount per order,
    Chen and Goodman 1998) with 0 to 9 characters of context, counted on the run's training
    text. The counts are cached in the run directory."""
    import json

    from charrnn.evaluation import evaluate
    from charrnn.fileio import check_new_file
    from charrnn.output import to_stdout

    if per_char is not None:
        check_new_file(per_char, "--per-char", force)
    threads.configure()  # (CHARRNN_THREADS, or chosen for the load)
    result = evaluate.evaluate(run, text, say=lambda line: stderr_console().print(
        Text(printable(line)), soft_wrap=True))
    ids, p, vocab = result.pop("per_char")
    if per_char is not None:
        evaluate.write_per_char(per_char, ids, p, vocab)
    with to_stdout():
        if as_json:
            sys.stdout.write(json.dumps(result, indent=2) + "\n")
            return
        from rich.table import Table

        table = Table(title=printable(f"{result['characters']:,} characters of "
                                      f"{result['text']}; baselines counted on "
                                      f"{result['training_characters']:,} training characters"))
        for column in ("model", "", "nats/char", "bits/char", "perplexity"):
            table.add_column(column, justify="left" if column in ("model", "") else "right")
        for r in result["rows"]:
            table.add_row(Text(r["name"]), Text(printable(r["about"])), f"{r['nats']:.4f}",
                          f"{r['bits']:.4f}", f"{r['perplexity']:.3f}")
        stdout_console("auto").print(table)


@app.command()
def info(
    run: RunArg,
    as_json: Annotated[bool, typer.Option("--json", help="Everything as one JSON object, the "
                                          "loss curves included.")] = False,
    color: Annotated[str, typer.Option("--color", help="auto, always or never.")] = "auto",
):
    """What a run is (model, corpus, settings and how they were chosen), how far it got, its
    checkpoints, and its training and validation loss curves."""
    import json

    from charrnn.evaluation import info as runinfo
    from charrnn.output import to_stdout
    from charrnn.training.distributed import resume_command

    facts = runinfo.gather(run)
    console = stdout_console(color)
    with to_stdout():
        if as_json:
            sys.stdout.write(json.dumps(facts, indent=2) + "\n")
            return
        m, p, c = facts["model"], facts["progress"], facts["corpus"]
        steps = f"{p['step']:,}" + (f" of {p['planned_steps']:,} planned" if p["planned_steps"]
                                    else "")
        state = ("finished" if p["finished"] else
                 "stopped early (interrupted, or still training): continue with "
                 f"`{resume_command(run, p['processes'])}`")
        best = facts["best_val_loss"]
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
            *_plan_lines(facts, run),
            *([f"processes    {p['processes']} (torchrun), when last saved"]
              if p["processes"] > 1 else []),
            f"epochs       {p['epochs']:.2f}" if p["epochs"] is not None else "epochs       -",
            f"time         {p['elapsed_s']:.0f} s" if p["elapsed_s"] is not None and
            math.isfinite(p["elapsed_s"]) else "time         -",
            (f"best         validation loss {best:.4f} nats/char ({facts['best_val_bpc']:.3f} "
             "bits/char)") if best is not None else "best         no evaluation yet",
            "checkpoints  " + ", ".join(f"{k} ({v / 1e6:,.1f} MB)" if v >= 1e5 else
                                        f"{k} ({v / 1e3:,.1f} KB)"
                                        for k, v in facts["checkpoints"].items()),
        ]
        if p["state_error"]:
            lines.append(f"warning      {p['state_error']}")
        lines += [f"warning      {w}" for w in facts["warnings"]]
        for line in lines:
            console.print(Text(printable(line)), soft_wrap=True)
        if len(facts["curves"]) >= 2:
            colour = console.color_system is not None and not console.no_color
            chart = runinfo.plot(facts["curves"], console.width, colour)
            console.print(Text.from_ansi(chart) if colour else Text(chart), soft_wrap=True)
        else:
            console.print(Text("(the loss curves need two evaluations or more)"))


def _plan_lines(facts: dict, run: Path) -> list[str]:
    """What `charrnn info` says of a run's plan and speed, and how to repeat it."""
    plan, speed, lines = facts["plan"], facts["speed"], []
    if plan:
        line = f"plan         {plan.get('seconds', 0):g} s as {plan.get('steps', 0):,} steps"
        if plan.get("first_steps"):
            line += (f" (planned again at step {plan.get('checked_at'):,}, from "
                     f"{plan['first_steps']:,})")
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


