"""`charrnn sample`: stream text from a run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from charrnn.cli import options
from charrnn.cli.base import app, settings, stderr_console
from charrnn.config import SampleConfig, parse_temperatures
from charrnn.errors import CharrnnError, printable


@app.command()
def sample(
    ctx: typer.Context,
    run: options.RunArg,
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
    beam: Annotated[Optional[int], typer.Option(
        "--beam", help="The likeliest continuation found by a beam of this many texts, not a "
        "draw: the same every time; 1 is --argmax. Texts end at --length or --stop, compared "
        "by their log-probability per character.", show_default=False)] = None,
    mix: Annotated[bool, typer.Option("--mix", help="Draw from the model mixed with the counts "
                                      "of its training text (and, with --adapt, of the "
                                      "prime): likelier text, more of it copied.")] = False,
    safe: Annotated[Optional[bool], typer.Option(
        "--safe/--raw", help="--safe shows control characters (ESC, NUL...) as visible symbols, "
        "so that a model cannot retitle the terminal or write its clipboard; --raw writes the "
        "text exactly as the model made it. [default: --safe to a terminal, --raw to a file or "
        "a pipe]", show_default=False)] = None,
    threads: options.Threads = None,
    # how the text is drawn (several temperatures, like 0.5,0.8,1.2: a sample each)
    temperature: options.Temperature = None, top_k: options.TopK = None,
    top_p: options.TopP = None, length: options.Length = None, seed: options.Seed = None,
):
    """Stream text from a trained run to stdout (everything else goes to stderr).

    Sampling runs on the CPU: one character at a time, a CPU beats a GPU's launch costs."""
    import charrnn.evaluation.novelty
    import charrnn.threads
    from charrnn import api
    from charrnn.beam import write_beam
    from charrnn.output import TextOut, to_stdout
    from charrnn.sample import check_prime, read_prime, unescape, write_samples

    # one sample for each temperature: the others go to every sample alike
    chosen = settings(SampleConfig, {k: v for k, v in ctx.params.items() if k != "temperature"})
    if beam is not None:
        _check_beam(beam, argmax, num_samples, ctx.params)
    temperatures = ([0.0] if argmax else parse_temperatures(temperature) if temperature
                    else [SampleConfig.temperature])
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
    cpu = charrnn.threads
    governor = cpu.Governor(cpu.configure(cpu.parse(threads)))
    run = api.load(run)
    prime = check_prime(prime, run.vocab, drop_unknown)
    say = lambda line: stderr_console().print(Text(printable(line)), soft_wrap=True)  # noqa: E731
    model, mixer = run.sampler(prime, adapt, mix, say=say, warn=lambda line: say(
        f"warning: {line}"))
    if safe is None:  # (no stdout at all: the writing below says so)
        safe = sys.stdout is not None and sys.stdout.isatty()
    with to_stdout():
        if beam is not None:
            drawn = write_beam(TextOut(sys.stdout, safe=safe), model, run.vocab, prime, beam,
                               configs[0].length, stop, mixer, governor.tick, keep=novelty)
        else:
            drawn = write_samples(TextOut(sys.stdout, safe=safe), model, run.vocab, prime,
                                  configs, num_samples, stop, keep=novelty, tick=governor.tick,
                                  mixer=mixer,
                                  heading=lambda cfg: stderr_console().print(
                                      Text(f"--- temperature {cfg.temperature:g} ---")))
    if drawn is not None:
        copied = charrnn.evaluation.novelty.line(run.config, drawn)
        stderr_console().print(Text(printable(copied)), soft_wrap=True)


def _check_beam(width: int, argmax: bool, num_samples: int, params: dict) -> None:
    """--beam finds one text, the likeliest: the options of a draw do not go with it."""
    from charrnn.beam import MAX_BEAM

    if not 1 <= width <= MAX_BEAM:
        raise CharrnnError(f"--beam must be a whole number from 1 to {MAX_BEAM}, not {width}")
    drawing = [flag for flag, given in (("--argmax", argmax), ("--num-samples", num_samples != 1),
                                        ("--temperature", params.get("temperature") is not None),
                                        ("--top-k", params.get("top_k") is not None),
                                        ("--top-p", params.get("top_p") is not None),
                                        ("--seed", params.get("seed") is not None)) if given]
    if drawing:
        one = len(drawing) == 1
        raise CharrnnError(f"--beam finds the likeliest text, the same every time; "
                           f"{', '.join(drawing)} {'is' if one else 'are'} for drawing samples "
                           f"and {'does' if one else 'do'} not go with it")
