"""`charrnn serve`: the runs over HTTP, and a page to write with them (charrnn/serve/)."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from charrnn.cli.base import app, stderr_console
from charrnn.errors import CharrnnError, printable

EXTRA = "pip install 'charrnn[serve]'"


@app.command()
def serve(
    runs: Annotated[list[Path], typer.Argument(help="Run directories written by `charrnn "
                                               "train`; clients name them by folder name.",
                                               show_default=False)],
    host: Annotated[str, typer.Option("--host", help="The address to listen on; 0.0.0.0 "
                                      "opens the runs to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="The port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option("--workers", help="Threads that make text, each one "
                                         "request's slice at a time (more than one helps only "
                                         "where the work is in large matrix products: the "
                                         "rest holds Python's lock).")] = 1,
    capacity: Annotated[int, typer.Option("--capacity", help="Requests taken at once; the "
                                          "next gets a 503 until one ends.")] = 64,
):
    """Serve runs over HTTP: a JSON API (sample streamed as drawn, --beam, the page's
    completions, a text's cells; OpenAPI docs at /docs) and, at /, a page where Tab offers the
    model's continuation of what you write and a cell or probe is painted over it. Needs the
    `serve` extra (FastAPI, uvicorn). Ctrl-C or SIGTERM ends it."""
    try:
        import uvicorn

        from charrnn.serve.app import create_app, load_runs
    except ImportError as e:
        missing = (e.name or "fastapi").split(".")[0]
        raise CharrnnError(f"charrnn serve needs FastAPI and uvicorn ({missing} is not "
                           f"installed): {EXTRA}") from None
    import torch

    if not 1 <= port <= 65535:
        raise CharrnnError(f"--port must be from 1 to 65535, not {port}")
    if not 1 <= workers <= 64:
        raise CharrnnError(f"--workers must be from 1 to 64, not {workers}")
    if not 1 <= capacity <= 10_000:
        raise CharrnnError(f"--capacity must be from 1 to 10000, not {capacity}")
    served = load_runs(runs)
    torch.set_num_threads(1)  # each worker makes one request's text at a time, on one core
    # the workers' Python holds the interpreter's lock; the event loop that answers requests
    # gets it back every millisecond, not every 5 (the first characters come that much sooner)
    sys.setswitchinterval(0.001)
    say = lambda line: stderr_console().print(Text(printable(line)), soft_wrap=True)  # noqa: E731
    if not _local(host):
        say(f"warning: listening on {host}: the runs are reachable from the network, by "
            "anyone who can reach this machine")
    say(f"serving {', '.join(served)} at http://{host}:{port}/ (the API's docs at /docs); "
        "Ctrl-C ends it")
    # uvicorn ends on Ctrl-C and SIGTERM by itself, closing the connections it holds; beyond
    # the capacity, connections are refused with a 503 before they reach the application
    uvicorn.run(create_app(served, workers, capacity), host=host, port=port,
                log_level="warning", timeout_keep_alive=5,
                limit_concurrency=capacity + 16, timeout_graceful_shutdown=3)


def _local(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
