"""The command line's ground: the Typer app and its error handling (every mistake one line),
the consoles, and the settings' options read from the settings classes (charrnn/config.py)."""

from __future__ import annotations

import os
import sys
import time
from typing import Annotated

import typer
from rich.console import Console
from typer.core import TyperGroup

from charrnn.config import (
    option_settings,
)
from charrnn.errors import CharrnnError, describe_os_error, os_reason, printable
from charrnn.output import silence_stdout
from charrnn.version import __version__

try:  # typer vendors click from 0.22 on
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - an older typer, with click beside it
    from click.exceptions import ClickException


class Group(TyperGroup):
    """Every user mistake ends as one line on stderr and a non-zero exit, never a traceback."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args=args, prog_name="charrnn",
                              complete_var=complete_var, standalone_mode=False, **extra)
        except CharrnnError as e:
            _fail(str(e), 1)
        except ClickException as e:
            ctx = getattr(e, "ctx", None)
            if type(e).__name__ == "NoArgsIsHelpError" and ctx is not None:
                print(ctx.get_help(), file=sys.stderr)
                sys.exit(2)
            hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            _fail(e.format_message().replace("\n", " ") + hint, e.exit_code)
        except typer.Abort:
            _fail("aborted", 130)
        except BrokenPipeError:
            silence_stdout()  # `charrnn --help | head` is not an error
            sys.exit(0)
        except OSError as e:  # stdout itself failed (a full device), while printing help
            silence_stdout()
            _fail(describe_os_error(e) if e.filename else
                  f"cannot write to stdout: {os_reason(e)}", 1)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx):
        # here, before typer's own handler turns a closed pipe into exit status 1
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            silence_stdout()  # `charrnn sample run | head` is not an error
            sys.exit(0)
        except OSError as e:
            raise CharrnnError(describe_os_error(e)) from None


def _fail(message: str, code: int):
    from charrnn.engine.distributed import launched, rank_label

    # one write: the lines of torchrun's ranks, on one stderr, are not cut into each other
    sys.stderr.write(f"charrnn{rank_label()}: error: {printable(message)}\n")
    sys.stderr.flush()
    if launched():
        # a torchrun rank whose peers may be gone: tearing down its process group could wait
        # for them, or abort; what it wrote is whole (atomic), so leave at once. Every rank but
        # 0 first gives rank 0 a moment: an error the ranks agreed on is then said by rank 0
        # before torchrun, seeing another rank fail, stops it
        if os.environ.get("RANK", "0").strip() not in ("", "0"):
            time.sleep(FOLLOWER_WAIT_S)
        os._exit(code)
    sys.exit(code)


FOLLOWER_WAIT_S = 1.0


STARTED = time.monotonic()  # a time budget counts from the command's start (set in main)

app = typer.Typer(cls=Group, add_completion=False, no_args_is_help=True,
                  pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Character-level RNN language models: train on any text, sample from "
                       "them, and see what their hidden cells track.")


def _version(value: bool) -> None:
    if value:
        print(f"charrnn {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False):
    pass


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


def check_color(color: str) -> str:
    if color not in ("auto", "always", "never"):
        raise CharrnnError(f"--color must be auto, always or never, not {color!r}")
    return color


def stdout_console(color: str) -> Console:
    check_color(color)
    if sys.stdout is None:  # file descriptor 1 was closed
        raise CharrnnError("stdout is closed; send it somewhere (a file, or /dev/null)")
    if color == "never":
        return Console(color_system=None, no_color=True, highlight=False)
    return Console(force_terminal=True if color == "always" else None, highlight=False)


# ---------------------------------------------------------------------------------------------
# Settings: each declared on its field (charrnn/config.py), each option typed in cli/options.py


def settings(cls, values: dict, given: set[str] | None = None) -> dict:
    """The values of `cls`'s options among `values` (only those in `given`, if given), parsed;
    an option left at None keeps the class's default."""
    out = {}
    for f in option_settings(cls):
        value = values.get(f.name)
        if f.name not in values or value is None or (given is not None and f.name not in given):
            continue
        parse = f.metadata["parse"]
        out[f.name] = parse(value) if parse and isinstance(value, str) else value
    return out


def given_names(ctx: typer.Context) -> set[str]:
    return {name for name in ctx.params
            if getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"}


def inspect_request(values: dict):
    """(the inspection settings, the --temperature, the --seed) among a command's `values`."""
    from charrnn.config import InspectConfig, SampleConfig

    request = InspectConfig(**settings(InspectConfig, values))
    chosen = settings(SampleConfig, values)
    return request, chosen.get("temperature", SampleConfig.temperature), chosen.get("seed")
