"""`charrnn explore`: look inside a run interactively, on the full terminal."""

from __future__ import annotations

import os
import shlex
import sys

import typer
from rich.text import Text

from charrnn.cli import options
from charrnn.cli.base import app, check_color, inspect_request, stderr_console
from charrnn.errors import CharrnnError

EXTRA = "pip install 'charrnn[explore]'"


@app.command()
def explore(
    ctx: typer.Context,
    run: options.RunArg,
    text: options.TextFile = None,
    prime: options.PrimeText = None,
    length: options.StretchLength = 10_000,
    offset: options.Offset = 0,
    color: options.Color = "auto",
    state: options.State = None, probes: options.Probes = None, lang: options.Lang = None,
    max_memory: options.MaxMemory = None, device: options.InspectDevice = None,
    threads: options.Threads = None, temperature: options.Temperature = None,
    seed: options.Seed = None,
):
    """A full-screen view of one pass of a text through the model: move through cells, layers
    and states, rank cells by a probe, select a stretch to see which cells behave differently
    there and where else they do, and read what the model predicted at the cursor. Needs the
    `explore` extra (Textual)."""
    from charrnn import api
    from charrnn.device import pick_device

    check_color(color)
    try:
        from charrnn.interp import explore_app
    except ImportError as e:
        missing = (e.name or "textual").split(".")[0]
        raise CharrnnError(f"charrnn explore needs Textual ({missing} is not installed): "
                           f"{EXTRA}") from None
    from charrnn.interp import views
    from charrnn.interp.explorer import Explorer

    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise CharrnnError("charrnn explore needs a terminal; for a text report use "
                           "`charrnn inspect-cells`")
    request, temperature, seed = inspect_request(ctx.params)
    from charrnn.threads import configure

    configure(request.threads)
    stderr_console().print(Text("running the text through the model once (every state of "
                                "every cell kept)..."))
    ins = api.load(run, pick_device(request.device)).inspect(
        text_file=text, prime=prime, length=length, offset=offset,
        temperature=temperature, seed=seed, max_memory=request.max_memory)
    explorer = Explorer(ins, _source(text, prime, length, offset))
    if request.state:
        ins.check(request.state)
        explorer.state = request.state
    if request.lang:
        explorer.lang = request.lang
    if request.probes:
        explorer.set_probe(request.probes[0])
    colour = color == "always" or (color == "auto" and not os.environ.get("NO_COLOR"))
    name = shlex.quote(str(run))
    app = explore_app.ExploreApp(explorer, name, colour,
                                 html=lambda x: views.explorer_page(x, name))
    app.run()
    if app.return_code:  # ended by a signal (128 + its number), the terminal given back
        raise typer.Exit(app.return_code)


def _source(text, prime, length: int, offset: int) -> list[str]:
    """The inspect-cells arguments that give the same text."""
    source = (["--text", str(text)] if text is not None else
              ["--prime", prime] if prime is not None else [])
    return source + ["--length", str(length)] + (["--offset", str(offset)] if offset else [])
