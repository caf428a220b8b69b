"""The command line's ground: the Typer app and its error handling (every mistake one line),
the consoles, and the settings' options read from the settings classes (charrnn/config.py)."""

from __future__ import annotations

import inspect
import os
import sys
import time
import types
import typing
from dataclasses import MISSING
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from typer.core import TyperGroup

from charrnn.config import (
    flag,
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

    print(f"charrnn{rank_label()}: error: {printable(message)}", file=sys.stderr)
    if launched():
        # a torchrun rank whose peers may be gone: tearing down its process group could wait
        # for them, or abort; what it wrote is whole (atomic), so leave at once. Every rank but
        # 0 first gives rank 0 a moment: an error the ranks agreed on is then said by rank 0
        # before torchrun, seeing another rank fail, stops it
        sys.stderr.flush()
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
# Options: a settings class's fields declare their own (charrnn/config.py); these are the rest


CHOSEN = "[default: chosen for the budget, the corpus and the device]"


def options(cls, names: tuple[str, ...]) -> list[inspect.Parameter]:
    """The command-line options of the settings `names` of a settings class, read from its
    fields' metadata (flag, default, check, help)."""
    fields = {f.name: f for f in option_settings(cls)}
    unknown = [n for n in names if n not in fields]
    if unknown:
        raise TypeError(f"{cls.__name__} has no setting {', '.join(unknown)}")
    hints = typing.get_type_hints(cls)
    params = []
    for f in (fields[n] for n in names):
        m = f.metadata
        default = None if m["chosen"] or f.default is MISSING else f.default
        kind = str if m["parse"] else hints[f.name]
        if default is None and typing.get_origin(kind) is not typing.Union:
            kind = Optional[kind]  # also turns `int | None` into what typer reads
        elif isinstance(kind, types.UnionType):
            kind = Optional[next(a for a in typing.get_args(kind) if a is not type(None))]
        note = CHOSEN if m["chosen"] else f"[default: {m['shown']}]" if m["shown"] else ""
        option = typer.Option(*(m["flags"] or (flag(f.name),)), help=f"{m['help']} {note}".strip(),
                              show_default=not note and default is not None,
                              metavar=m["metavar"])
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                        annotation=Annotated[kind, option]))
    return params


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


def command(*groups, name: str | None = None):
    """Register `body(..., **values)` as a command whose options are its own (declared in its
    signature) followed by the settings named in `groups` ((class, names) pairs), which arrive
    in `values`: each is declared once, on its field in charrnn/config.py."""
    def register(body):
        own = list(inspect.signature(body, eval_str=True).parameters.values())[:-1]  # not **values
        extra = [p for cls, names in groups for p in options(cls, names)]
        body.__signature__ = inspect.Signature(own + extra)
        return app.command(name)(body)
    return register


def given_names(ctx: typer.Context) -> set[str]:
    return {name for name in ctx.params
            if getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"}


RunArg = Annotated[Path, typer.Argument(help="A run directory written by `charrnn train`.",
                                        show_default=False)]


# The text that inspect-cells and explore look at: the same options, one pass of the model
TextOpt = Annotated[Optional[Path], typer.Option(
    "--text", help="This UTF-8 file instead of the run's validation text.")]
PrimeOpt = Annotated[Optional[str], typer.Option(
    "--prime", help="This text and the model's continuation of it (--temperature, --seed).")]
LengthOpt = Annotated[int, typer.Option(
    "--length", help="Characters to look at (with --prime: to generate).")]
OffsetOpt = Annotated[int, typer.Option("--offset", help="Where the stretch starts, in "
                                        "characters.")]


def inspect_request(command: str, values: dict):
    """(the inspection settings, the one --temperature, the --seed) a command was given."""
    from charrnn.config import InspectConfig, SampleConfig

    request = InspectConfig(**settings(InspectConfig, values))
    chosen = settings(SampleConfig, values)
    temperatures = chosen.pop("temperature", [SampleConfig.temperature])
    if len(temperatures) > 1:
        raise CharrnnError(f"{command} takes one --temperature, not a list")
    return request, temperatures[0], chosen.get("seed")
