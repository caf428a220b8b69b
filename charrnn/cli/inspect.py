"""`charrnn inspect-cells` and `charrnn features`: what the cells and features of a run do."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from charrnn.cli import options
from charrnn.cli.base import app, inspect_request, stderr_console, stdout_console
from charrnn.errors import CharrnnError, printable


@app.command("inspect-cells")
def inspect_cells(
    ctx: typer.Context,
    run: options.RunArg,
    text: options.TextFile = None,
    prime: options.PrimeText = None,
    length: options.StretchLength = 1000,
    offset: options.Offset = 0,
    list_probes: Annotated[bool, typer.Option("--list-probes", help="List the probes and "
                                              "exit.")] = False,
    html_out: Annotated[Optional[Path], typer.Option("--html", help="Also write the views to "
                                                     "this self-contained HTML file.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --html "
                                        "file.")] = False,
    color: options.Color = "auto",
    # what to ask of the pass: the inspection settings
    state: options.State = None, layer: options.Layer = None, cells: options.Cells = None,
    top: options.Top = None, lang: options.Lang = None, probes: options.Probes = None,
    regexes: options.Regexes = None, gates: options.Gates = False,
    surprisal: options.Surprisal = False, feature: options.Feature = None,
    match: options.Match = None, ablate: options.Ablate = None,
    max_memory: options.MaxMemory = None, device: options.InspectDevice = None,
    threads: options.Threads = None,
    # and the two of sampling that a --prime's continuation uses
    temperature: options.Temperature = None, seed: options.Seed = None,
):
    """Paint each character of a text by what a hidden cell does there; find cells by probes."""
    from charrnn import api
    from charrnn.device import pick_device
    from charrnn.fileio import atomic_write_text, check_new_file
    from charrnn.interp import probes, views
    from charrnn.output import to_stdout
    from charrnn.threads import configure

    console = stdout_console(color)
    if list_probes:
        with to_stdout():
            views.list_probes(console, probes.PROBES.values())
        return
    request, temperature, seed = inspect_request(ctx.params)
    if html_out is not None:
        check_new_file(html_out, "--html", force)
    configure(request.threads)
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
    run: options.RunArg,
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
    color: options.Color = "auto",
):
    """Learn a sparse dictionary (a sparse autoencoder) of a layer's states over the training
    text, save it in the run directory, and list its features by how often they fire, each with
    its top contexts painted and a label from the probe it follows best."""
    from charrnn import checkpoint, threads
    from charrnn.interp import features, terminal
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
        terminal.features(console, learned, top)


