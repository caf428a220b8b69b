"""`charrnn inspect-cells` and `charrnn features`: what the cells and features of a run do."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from charrnn import threads
from charrnn.cli.base import (
    LengthOpt,
    OffsetOpt,
    PrimeOpt,
    RunArg,
    TextOpt,
    app,
    command,
    inspect_request,
    stderr_console,
    stdout_console,
)
from charrnn.config import InspectConfig, SampleConfig
from charrnn.errors import CharrnnError, printable

# besides its own options below, the inspection settings (declared on InspectConfig's fields)
# and the two of sampling that a --prime's continuation uses
INSPECT_OPTIONS = ("state", "layer", "cells", "top", "lang", "probes", "regexes", "gates",
                   "surprisal", "feature", "match", "ablate", "max_memory", "device", "threads")


@command((InspectConfig, INSPECT_OPTIONS), (SampleConfig, ("temperature", "seed")),
         name="inspect-cells")
def inspect_cells(
    run: RunArg,
    text: TextOpt = None,
    prime: PrimeOpt = None,
    length: LengthOpt = 1000,
    offset: OffsetOpt = 0,
    list_probes: Annotated[bool, typer.Option("--list-probes", help="List the probes and "
                                              "exit.")] = False,
    html_out: Annotated[Optional[Path], typer.Option("--html", help="Also write the views to "
                                                     "this self-contained HTML file.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --html "
                                        "file.")] = False,
    color: Annotated[str, typer.Option("--color", help="auto, always or never.")] = "auto",
    **values,
):
    """Paint each character of a text by what a hidden cell does there; find cells by probes."""
    from charrnn import api
    from charrnn.device import pick_device
    from charrnn.fileio import atomic_write_text, check_new_file
    from charrnn.interp import probes, views
    from charrnn.output import to_stdout

    console = stdout_console(color)
    if list_probes:
        with to_stdout():
            views.list_probes(console, probes.PROBES.values())
        return
    request, temperature, seed = inspect_request("inspect-cells", values)
    if html_out is not None:
        check_new_file(html_out, "--html", force)
    threads.configure(request.threads)
    ins = api.load(run, pick_device(request.device)).inspect(
        text_file=text, prime=prime, length=length, offset=offset,
        temperature=temperature, seed=seed, max_memory=request.max_memory,
        ask=request)
    built = views.build(ins, request)
    with to_stdout():
        views.show(console, built, ins)
    if html_out is not None:
        check_new_file(html_out, "--html", force)  # again: the inspection took a while
        atomic_write_text(html_out, views.html(f"charrnn inspect-cells {shlex.quote(str(run))}",
                                               built, ins))
        stderr_console().print(Text(f"wrote {printable(str(html_out))}"))


@app.command("features")
def features_(
    run: RunArg,
    layer: Annotated[Optional[int], typer.Option("--layer", help="Layer, counted from 1. "
                                                 "[default: the last]", show_default=False)]
    = None,
    state: Annotated[str, typer.Option("--state", help="h (hidden state), or c (an LSTM's "
                                       "cell state, as tanh(c)).")] = "h",
    chars: Annotated[int, typer.Option("--chars", help="Characters of the training text to "
                                       "learn from.")] = 50_000,
    count: Annotated[Optional[int], typer.Option(
        "--features", help="How many features to learn. [default: 4 per cell]",
        show_default=False)] = None,
    steps: Annotated[int, typer.Option("--steps", help="Training steps of the dictionary.")]
    = 3000,
    top: Annotated[int, typer.Option("--top", help="Features to list.")] = 10,
    color: Annotated[str, typer.Option("--color", help="auto, always or never.")] = "auto",
):
    """Learn a sparse dictionary (a sparse autoencoder) of a layer's states over the training
    text, save it in the run directory, and list its features by how often they fire, each with
    its top contexts painted and a label from the probe it follows best."""
    from charrnn import checkpoint
    from charrnn.interp import features
    from charrnn.interp import terminal as render
    from charrnn.output import to_stdout

    console = stdout_console(color)
    if chars < 100 or steps < 1 or top < 1:
        raise CharrnnError("--chars must be 100 or more, and --steps and --top 1 or more")
    threads.configure()  # (CHARRNN_THREADS, or chosen for the load)
    model, vocab, config = checkpoint.load(run)
    layer = layer if layer is not None else model.config.layers
    say = stderr_console()
    learned = features.learn(run, model, vocab, config, layer, state, chars, count, steps,
                             lambda line: say.print(Text(printable(line))))
    say.print(Text(printable(f"saved {learned.path}; paint one with `charrnn inspect-cells "
                             f"{shlex.quote(str(run))} --layer {layer} --state {state} "
                             "--feature N`")))
    with to_stdout():
        render.features(console, learned, top)


