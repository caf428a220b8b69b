"""`charrnn explore`: look inside a run interactively, on the full terminal."""

from __future__ import annotations

import os
import shlex
import sys
from typing import Annotated

import typer
from rich.text import Text

from charrnn import threads
from charrnn.cli.base import (
    LengthOpt,
    OffsetOpt,
    PrimeOpt,
    RunArg,
    TextOpt,
    check_color,
    command,
    inspect_request,
    stderr_console,
)
from charrnn.config import InspectConfig, SampleConfig
from charrnn.errors import CharrnnError

# besides its own options below, these of inspect-cells (declared on InspectConfig's fields)
EXPLORE_OPTIONS = ("state", "probes", "lang", "max_memory", "device", "threads")
EXTRA = "pip install 'charrnn[explore]'"


@command((InspectConfig, EXPLORE_OPTIONS), (SampleConfig, ("temperature", "seed")),
         name="explore")
def explore(
    run: RunArg,
    text: TextOpt = None,
    prime: PrimeOpt = None,
    length: LengthOpt = 10_000,
    offset: OffsetOpt = 0,
    color: Annotated[str, typer.Option("--color", help="auto, always or never.")] = "auto",
    **values,
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
    request, temperature, seed = inspect_request("explore", values)
    threads.configure(request.threads)
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
    explore_app.ExploreApp(explorer, name, colour,
                           html=lambda x: views.explorer_page(x, name)).run()


def _source(text, prime, length: int, offset: int) -> list[str]:
    """The inspect-cells arguments that give the same text."""
    source = (["--text", str(text)] if text is not None else
              ["--prime", prime] if prime is not None else [])
    return source + ["--length", str(length)] + (["--offset", str(offset)] if offset else [])
