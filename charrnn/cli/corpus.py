"""`charrnn corpus list` and `charrnn corpus get`: the named corpora."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text
from typer.core import TyperGroup

from charrnn.cli.base import (
    app,
    stderr_console,
    stdout_console,
)
from charrnn.errors import CharrnnError, printable

corpus_app = typer.Typer(cls=TyperGroup, no_args_is_help=True,
                         help="The named corpora: list them, and get one onto this machine.")
app.add_typer(corpus_app, name="corpus")


@corpus_app.command("list")
def corpus_list():
    """Each named corpus: what it is, its size, where it comes from, its licence, and whether
    it is on this machine. A corpus whose sha256 is not pinned has its first download's
    checksum recorded, and a later download that differs is said."""
    from charrnn.data import recipes
    from charrnn.output import to_stdout

    console = stdout_console("auto")
    recipes.clean_leftovers()
    with to_stdout():
        for r in recipes.load().values():
            here = recipes.path_of(r)
            if r.offline:
                size, check = "built on this machine", ""
            else:
                size = f"{r.size / 1e6:,.1f} MB" if r.size else "size unknown"
                check = ", sha256 pinned" if r.sha256 else ", sha256 not pinned"
            where = f"here: {here}" if here.exists() else "not here yet"
            lines = [f"{r.name:<16} {size}{check}; {where}", f"  {r.about}",
                     f"  from {r.source}; licence: {r.licence}"]
            lines += [f"  note: {r.note}"] if r.note else []
            for line in lines:
                console.print(Text(printable(line)), soft_wrap=True)


@corpus_app.command("get")
def corpus_get(
    name: Annotated[str, typer.Argument(help="A corpus name (see `charrnn corpus list`).",
                                        show_default=False)],
    source: Annotated[Optional[Path], typer.Option(
        "--from", help="Use this file, downloaded by hand from the recipe's URL, instead of "
        "downloading; it is checked the same way.", show_default=False)] = None,
):
    """Download (or build) a named corpus into the user data folder, checked against its
    pinned sha256."""
    from charrnn.data import recipes

    known = recipes.load()
    if name not in known:
        raise CharrnnError(f"unknown corpus {name!r}; choose one of {', '.join(known)}")
    recipe = known[name]
    progress = recipes.Progress(name, stderr_console())
    try:
        path = recipes.get(recipe, source=source, progress=progress,
                           warn=lambda line: stderr_console().print(
                               Text("warning: " + printable(line))))
    finally:
        progress.close()
    checked = "checked against its pinned sha256" if recipe.sha256 else (
        "built on this machine" if recipe.offline else "its checksum recorded (none is pinned)")
    stderr_console().print(Text(printable(f"{name}: {path} ({path.stat().st_size:,} bytes, "
                                          f"{checked})")))


