"""`charrnn sample`: stream text from a run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from charrnn import threads
from charrnn.cli.base import (
    RunArg,
    command,
    settings,
    stderr_console,
)
from charrnn.config import SampleConfig
from charrnn.errors import CharrnnError, printable

# besides its own options below, the sampling settings (declared on SampleConfig's fields)
SAMPLE_OPTIONS = ("temperature", "top_k", "top_p", "length", "seed")


@command((SampleConfig, SAMPLE_OPTIONS))
def sample(
    run: RunArg,
    argmax: Annotated[bool, typer.Option("--argmax", help="Always take the likeliest character "
                                         "(same as --temp 0).")] = False,
    prime: Annotated[str, typer.Option("--prime", help="Text to start from; printed first.")]
    = "",
    prime_file: Annotated[Optional[Path], typer.Option("--prime-file", help="Read the prime "
                                                       "from this UTF-8 file.")] = None,
    drop_unknown: Annotated[bool, typer.Option("--drop-unknown", help="Leave out prime "
                                               "characters the model never saw.")] = False,
    num_samples: Annotated[int, typer.Option("--num-samples", help="How many samples, one "
                                             "after another.")] = 1,
    stop: Annotated[Optional[str], typer.Option("--stop", help="End a sample once this text "
                                                "is written (\\n is a newline: --stop "
                                                "'\\n\\n' ends at a blank line).")] = None,
    novelty: Annotated[bool, typer.Option("--novelty", help="Afterwards, say on stderr the "
                                          "longest stretch of the sample copied verbatim from "
                                          "the training text, and where it is.")] = False,
    adapt: Annotated[bool, typer.Option("--adapt", help="First learn from the prime (a copy of "
                                         "the model reads it; the run is unchanged) and mix in "
                                         "its counts, so that the text takes up its names, "
                                         "idioms and layout.")] = False,
    mix: Annotated[bool, typer.Option("--mix", help="Draw from the model mixed with the counts "
                                      "of its training text (and, with --adapt, of the "
                                      "prime): likelier text, more of it copied.")] = False,
    safe: Annotated[bool, typer.Option("--safe", help="Show control characters (ESC, NUL...) "
                                       "as visible symbols instead of writing them raw.")]
    = False,
    threads_: Annotated[Optional[str], typer.Option("--threads", help=f"{threads.HELP} "
                                                    "[default: auto]", metavar="N|auto",
                                                    show_default=False)] = None,
    **values,
):
    """Stream text from a trained run to stdout (everything else goes to stderr).

    Sampling runs on the CPU: one character at a time, a CPU beats a GPU's launch costs."""
    from charrnn import api
    from charrnn.evaluation import novelty as copies
    from charrnn.output import TextOut, to_stdout
    from charrnn.sample import check_prime, read_prime, unescape, write_samples

    chosen = settings(SampleConfig, values)
    temperatures = [0.0] if argmax else chosen.pop("temperature", [SampleConfig.temperature])
    chosen.pop("temperature", None)
    configs = [SampleConfig(**chosen, temperature=t) for t in temperatures]
    if num_samples < 1:
        raise CharrnnError(f"--num-samples must be 1 or more, not {num_samples}")
    stop = unescape(stop) if stop is not None else None
    if stop == "":
        raise CharrnnError("--stop is empty; give the text that ends a sample")
    if prime_file is not None:
        if prime:
            raise CharrnnError("give --prime or --prime-file, not both")
        prime = read_prime(prime_file)
    governor = threads.Governor(threads.configure(threads.parse(threads_)))
    run = api.load(run)
    prime = check_prime(prime, run.vocab, drop_unknown)
    say = lambda line: stderr_console().print(Text(printable(line)), soft_wrap=True)  # noqa: E731
    model, mixer = run.sampler(prime, adapt, mix, say=say, warn=lambda line: say(
        f"warning: {line}"))
    with to_stdout():
        drawn = write_samples(TextOut(sys.stdout, safe=safe), model, run.vocab, prime,
                              configs, num_samples, stop, keep=novelty, tick=governor.tick,
                              mixer=mixer,
                              heading=lambda cfg: stderr_console().print(
                                  Text(f"--- temperature {cfg.temperature:g} ---")))
    if drawn is not None:
        stderr_console().print(Text(printable(copies.line(run.config, drawn))), soft_wrap=True)
