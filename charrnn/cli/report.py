"""`charrnn eval` and `charrnn info`: how good a run is, and what it is."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from charrnn import threads
from charrnn.cli import options
from charrnn.cli.base import app, stderr_console, stdout_console
from charrnn.errors import printable


@app.command("eval")
def eval_(
    run: options.RunArg,
    text: Annotated[Optional[Path], typer.Argument(
        help="A UTF-8 text to evaluate on. [default: the run's validation text]",
        show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The table as JSON.")] = False,
    per_char: Annotated[Optional[Path], typer.Option(
        "--per-char", help="Also write each character's probability under the model to this "
        "JSON-lines file (a new file; --force replaces one).", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --per-char "
                                        "file.")] = False,
    no_adapt: Annotated[bool, typer.Option("--no-adapt", help="Leave out the rows that learn "
                                           "from the text as they read it (faster).")] = False,
):
    """The run's loss on a text (nats and bits per character, perplexity), beside what could be
    had without the network. Rows: the network as trained; the network learning from the text
    as it reads it (dynamic evaluation); both mixed with the counts of the training text (and,
    adapting, with the counts and the match model of the text read so far); interpolated
    Kneser-Ney n-gram models (one discount per order, Chen and Goodman 1998) with 0 to 9
    characters of context, counted on the run's training text; uniform; and bz2, lzma and zlib
    over the text alone. Each row says whether it saw the training text and whether it adapts
    as it reads. The counts are cached."""
    import json

    from charrnn.evaluation import evaluate, summary
    from charrnn.fileio import check_new_file
    from charrnn.output import to_stdout

    if per_char is not None:
        check_new_file(per_char, "--per-char", force)
    threads.configure()  # (CHARRNN_THREADS, or chosen for the load)
    def say(line: str) -> None:
        stderr_console().print(Text(printable(line)), soft_wrap=True)

    result = evaluate.evaluate(run, text, adapting=not no_adapt, say=say,
                               warn=lambda line: say(f"warning: {line}"))
    ids, p, vocab = result.pop("per_char")
    if per_char is not None:
        evaluate.write_per_char(per_char, ids, p, vocab)
    with to_stdout():
        if as_json:
            sys.stdout.write(json.dumps(result, indent=2) + "\n")
            return
        stdout_console("auto").print(summary.eval_table(result))


@app.command()
def info(
    run: options.RunArg,
    as_json: Annotated[bool, typer.Option("--json", help="Everything as one JSON object, the "
                                          "loss curves included.")] = False,
    color: options.Color = "auto",
):
    """What a run is (model, corpus, settings and how they were chosen), how far it got, its
    checkpoints, and its training and validation loss curves."""
    import json

    from charrnn.evaluation import summary
    from charrnn.evaluation.info import gather, plot
    from charrnn.output import to_stdout

    facts = gather(run)
    console = stdout_console(color)
    with to_stdout():
        if as_json:
            sys.stdout.write(json.dumps(facts, indent=2) + "\n")
            return
        lines = summary.info_lines(facts, run)
        for line in lines:
            console.print(Text(printable(line)), soft_wrap=True)
        if len(facts["curves"]) >= 2:
            colour = console.color_system is not None and not console.no_color
            chart = plot(facts["curves"], console.width, colour)
            console.print(Text.from_ansi(chart) if colour else Text(chart), soft_wrap=True)
        else:
            console.print(Text("(the loss curves need two evaluations or more)"))

