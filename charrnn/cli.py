"""The command line: an argument surface over the library. Each command body is a few calls.

    charrnn train corpus.txt                        learn a character model of any text
    charrnn sample runs/corpus --temp 0.8           stream new text from it
    charrnn inspect-cells runs/corpus               see what its hidden cells track
"""

from __future__ import annotations

import math
import re
import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from charrnn import __version__
from charrnn.config import DEFAULT_TIME, ModelConfig, SampleConfig, TrainConfig, check_seed
from charrnn.errors import CharrnnError, describe_os_error, printable
from charrnn.output import silence_stdout


# Typer raises click's exception types (vendored in newer releases): find them by name
ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


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
    print(f"charrnn: error: {printable(message)}", file=sys.stderr)
    sys.exit(code)


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


def parse_size(text: str, option: str) -> int:
    """'2G', '512M', '1.5GB' or plain bytes -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", text, flags=re.I)
    if m is None or float(m.group(1)) <= 0:
        raise CharrnnError(f"{option} {text!r} is not a size; write it like 512M or 4G")
    return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2).upper() or " "))


def parse_duration(text: str) -> float:
    """'90s', '10m', '1h30m', '2.5h' or plain seconds -> seconds."""
    parts = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*"
                         r"(?:(\d+(?:\.\d+)?)s?)?\s*", text)
    if not text.strip() or parts is None:
        raise CharrnnError(f"--time {text!r} is not a duration; write it like 90s, 10m or 1h30m")
    h, m, s = (float(p) if p else 0.0 for p in parts.groups())
    seconds = 3600 * h + 60 * m + s
    if seconds <= 0:
        raise CharrnnError(f"--time must be more than 0, not {text!r}")
    return seconds


CHOSEN = "[default: chosen for the budget, the corpus and the device]"

# Shared options, declared once
RunArg = Annotated[Path, typer.Argument(help="A run directory written by `charrnn train`.",
                                        show_default=False)]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or mps.")]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Random seed: the same seed "
                                                "gives the same result.")]


@app.command()
def train(
    ctx: typer.Context,
    corpus: Annotated[Optional[str], typer.Argument(
        help="A text file, or a built-in corpus name (python-stdlib). Optional with --resume.",
        show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", help="Run directory. [default: runs/<corpus name>]", show_default=False)] = None,
    model: Annotated[str, typer.Option("--model", help="Recurrent cell: lstm, gru or rnn "
                                       "(vanilla tanh RNN).")] = ModelConfig.model,
    layers: Annotated[Optional[int], typer.Option("--layers", help=f"Recurrent layers stacked. "
                                                  f"{CHOSEN}", show_default=False)] = None,
    hidden_size: Annotated[Optional[int], typer.Option(
        "--hidden-size", help=f"Units per layer. {CHOSEN}", show_default=False)] = None,
    embedding_size: Annotated[Optional[int], typer.Option(
        "--embedding-size", help=f"Size of the character embedding. {CHOSEN}",
        show_default=False)] = None,
    dropout: Annotated[Optional[float], typer.Option(
        "--dropout", help=f"Dropout between layers and before the output, in [0, 1). {CHOSEN}",
        show_default=False)] = None,
    batch_size: Annotated[Optional[int], typer.Option(
        "--batch-size", help=f"Contiguous streams trained side by side. {CHOSEN}",
        show_default=False)] = None,
    seq_len: Annotated[Optional[int], typer.Option(
        "--seq-len", help=f"Characters per window of truncated backpropagation through time. "
        f"{CHOSEN}", show_default=False)] = None,
    lr: Annotated[Optional[float], typer.Option(
        "--lr", help=f"Peak learning rate (after warm-up, then cosine decay over the planned "
        f"steps). {CHOSEN}", show_default=False)] = None,
    warmup_steps: Annotated[int, typer.Option("--warmup-steps", help="Steps of linear "
                                              "learning-rate warm-up.")]
    = TrainConfig.warmup_steps,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="AdamW weight decay of "
                                                "the weight matrices.")]
    = TrainConfig.weight_decay,
    optimizer: Annotated[str, typer.Option("--optimizer", help="adamw, adam or rmsprop.")]
    = TrainConfig.optimizer,
    grad_clip: Annotated[float, typer.Option("--grad-clip", help="Clip the global gradient "
                                             "norm to this; 0 turns clipping off.")]
    = TrainConfig.grad_clip,
    epochs: Annotated[Optional[float], typer.Option("--epochs", help="Stop after this many "
                                                    "passes over the training text.")] = None,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="Stop after this many "
                                                     "training steps.")] = None,
    time_budget: Annotated[Optional[str], typer.Option(
        "--time", help="A time budget, like 90s, 10m or 1h: the model is chosen for it, and it "
        "is planned as a number of steps at the start. [default: "
        f"{DEFAULT_TIME / 60:g}m when no other stop is given]", show_default=False)] = None,
    eval_every: Annotated[Optional[int], typer.Option(
        "--eval-every", help="Validate (and checkpoint) every this many steps. [default: about "
        "20 times a run]", show_default=False)] = None,
    eval_chars: Annotated[int, typer.Option("--eval-chars", help="Validate on at most this "
                                            "many characters.")]
    = TrainConfig.eval_chars,
    patience: Annotated[int, typer.Option("--patience", help="Evaluations without a new best "
                                          "before the learning rate decays; 0: never.")]
    = TrainConfig.patience,
    lr_decay: Annotated[float, typer.Option("--lr-decay", help="What a plateau multiplies the "
                                            "learning rate by, in (0, 1].")]
    = TrainConfig.lr_decay,
    max_decays: Annotated[int, typer.Option("--max-decays", help="Stop once this many decays "
                                            "in a row brought no new best.")]
    = TrainConfig.max_decays,
    val_frac: Annotated[float, typer.Option("--val-frac", help="Fraction of the corpus, at its "
                                            "end, kept for validation.")]
    = TrainConfig.val_frac,
    encoding: Annotated[str, typer.Option("--encoding", help="Text encoding of the corpus.")]
    = TrainConfig.encoding,
    errors: Annotated[str, typer.Option("--errors", help="Undecodable bytes: strict (stop), "
                                        "replace (U+FFFD) or ignore.")]
    = TrainConfig.errors,
    device: DeviceOpt = TrainConfig.device,
    amp: Annotated[bool, typer.Option("--amp", help="Mixed precision (bfloat16; float16 with "
                                      "loss scaling on GPUs without bfloat16).")]
    = TrainConfig.amp,
    seed: Annotated[int, typer.Option("--seed", help="Random seed: the same seed, the same "
                                      "run.")] = TrainConfig.seed,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="Continue this run "
                                                   "exactly where it stopped.")] = None,
    init_from: Annotated[Optional[Path], typer.Option("--init-from", help="Start from this "
                                                      "run's weights on a new corpus.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run in "
                                            "the run directory.")] = False,
):
    """Train a character model on a text file; write checkpoints to a run directory."""
    from charrnn import prepare
    from charrnn.progress import reporter_for

    budget = parse_duration(time_budget) if time_budget is not None else None
    given = {name for name in ctx.params
             if getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"}
    reporter = reporter_for(stderr_console())
    if resume is not None:
        if init_from is not None:
            raise CharrnnError("--resume and --init-from do not go together; choose one")
        if out is not None and out != resume:
            raise CharrnnError("--resume continues a run in its own directory; leave out --out")
        values = {**ctx.params, "time": budget}
        names = {"time" if n == "time_budget" else n for n in given} - {"resume", "corpus", "out"}
        trainer = prepare.resume(resume, corpus, {n: values[n] for n in names}, reporter)
    else:
        if corpus is None:
            raise CharrnnError("give a CORPUS to train on (a text file or python-stdlib), or "
                               "--resume RUN")
        cfg = TrainConfig(batch_size=batch_size, seq_len=seq_len, lr=lr,
                          warmup_steps=warmup_steps, weight_decay=weight_decay,
                          optimizer=optimizer, grad_clip=grad_clip, epochs=epochs,
                          max_steps=max_steps, time=budget, eval_every=eval_every,
                          eval_chars=eval_chars, patience=patience, lr_decay=lr_decay,
                          max_decays=max_decays, val_frac=val_frac, seed=seed,
                          device=device, amp=amp, encoding=encoding, errors=errors)
        model_cfg = {k: ctx.params[k] for k in ("model", *prepare.SIZE_FLAGS) if k in given}
        trainer = prepare.new(corpus, out, cfg, model_cfg, init_from=init_from,
                              overwrite=overwrite, reporter=reporter)
    outcome = trainer.run_loop()
    if outcome.stopped_by == "interrupted":
        # the shell's convention for a process stopped by a signal: 128 + its number
        raise typer.Exit(128 + (outcome.signal or signal.SIGINT))
    why = {"time": "the planned end of the time budget",
           "clock": "the clock ran past the time budget", "max_steps": "--max-steps reached",
           "epochs": "--epochs reached",
           "patience": "validation stopped improving, even after the learning rate decayed"}
    reporter.say(f"stopped at step {outcome.step} ({why[outcome.stopped_by]}); "
                 f"best validation loss {outcome.best_val_loss:.4f} nats/char "
                 f"({outcome.best_val_loss / math.log(2):.3f} bits/char)")
    reporter.say(f"sample from it with:  charrnn sample {outcome.run}")


@app.command()
def sample(
    run: RunArg,
    temperature: Annotated[float, typer.Option("--temperature", "--temp", help="Below 1: safer, "
                                               "more repetitive; above 1: wilder; 0: greedy.")]
    = SampleConfig.temperature,
    top_k: Annotated[Optional[int], typer.Option("--top-k", help="Draw only among the k "
                                                 "likeliest characters.")] = None,
    top_p: Annotated[Optional[float], typer.Option("--top-p", help="Draw only among the "
                                                   "likeliest characters holding this much "
                                                   "probability, in (0, 1].")] = None,
    argmax: Annotated[bool, typer.Option("--argmax", help="Always take the likeliest character "
                                         "(same as --temp 0).")] = False,
    prime: Annotated[str, typer.Option("--prime", help="Text to start from; printed first.")]
    = "",
    prime_file: Annotated[Optional[Path], typer.Option("--prime-file", help="Read the prime "
                                                       "from this UTF-8 file.")] = None,
    drop_unknown: Annotated[bool, typer.Option("--drop-unknown", help="Leave out prime "
                                               "characters the model never saw.")] = False,
    length: Annotated[int, typer.Option("--length", help="Characters to generate.")]
    = SampleConfig.length,
    num_samples: Annotated[int, typer.Option("--num-samples", help="How many samples, one "
                                             "after another.")] = 1,
    seed: SeedOpt = None,
    safe: Annotated[bool, typer.Option("--safe", help="Show control characters (ESC, NUL...) "
                                       "as visible symbols instead of writing them raw.")]
    = False,
):
    """Stream text from a trained run to stdout (everything else goes to stderr).

    Sampling runs on the CPU: one character at a time, a CPU beats a GPU's launch costs."""
    import torch

    from charrnn import checkpoint
    from charrnn.output import TextOut, to_stdout
    from charrnn.sample import check_prime, generate, read_prime

    cfg = SampleConfig(temperature=0.0 if argmax else temperature, top_k=top_k, top_p=top_p,
                       length=length)
    check_seed(seed)
    if num_samples < 1:
        raise CharrnnError(f"--num-samples must be 1 or more, not {num_samples}")
    if prime_file is not None:
        if prime:
            raise CharrnnError("give --prime or --prime-file, not both")
        prime = read_prime(prime_file)
    model, vocab, _ = checkpoint.load(run)
    prime = check_prime(prime, vocab, drop_unknown)
    generator = torch.Generator()
    generator.manual_seed(seed if seed is not None else int(torch.seed() % 2**63))
    out = TextOut(sys.stdout, safe=safe)
    with to_stdout():
        for n in range(num_samples):
            if n:
                out.write("\n\n")
            out.write(prime)
            for ch in generate(model, vocab, prime, cfg, generator):
                out.write(ch)
            out.write("\n")
        out.flush()


@app.command("inspect-cells")
def inspect_cells(
    run: RunArg,
    text: Annotated[Optional[Path], typer.Option("--text", help="Inspect this UTF-8 file "
                                                 "instead of the run's validation text.")] = None,
    prime: Annotated[Optional[str], typer.Option("--prime", help="Inspect this text and the "
                                                 "model's continuation of it.")] = None,
    length: Annotated[int, typer.Option("--length", help="Characters to inspect (with --prime: "
                                        "to generate).")] = 1000,
    offset: Annotated[int, typer.Option("--offset", help="Where the stretch starts, in "
                                        "characters.")] = 0,
    layer: Annotated[Optional[int], typer.Option("--layer", help="Layer, counted from 1. "
                                                 "[default: all; the last with --cells]",
                                                 show_default=False)] = None,
    cells: Annotated[Optional[str], typer.Option("--cells", help="Cells to paint, like "
                                                 "17,230.")] = None,
    state: Annotated[Optional[str], typer.Option(
        "--state", help="c (LSTM cell state, as tanh(c)), h (hidden state), or a gate: input, "
        "forget, output, candidate (LSTM); reset, update, new (GRU). [default: c for an LSTM, "
        "else h]", show_default=False)] = None,
    top: Annotated[int, typer.Option("--top", help="Cells to paint when none are named; rows "
                                     "of each probe table.")] = 3,
    probe: Annotated[Optional[list[str]], typer.Option(
        "--probe", help="Rank cells by correlation with a feature of the text; repeatable. "
        "See --list-probes.", show_default=False)] = None,
    probe_regex: Annotated[Optional[list[str]], typer.Option(
        "--probe-regex", help="A probe that is on inside matches of this regular expression; "
        "repeatable.", show_default=False)] = None,
    list_probes: Annotated[bool, typer.Option("--list-probes", help="List the probes and "
                                              "exit.")] = False,
    gates: Annotated[bool, typer.Option("--gates", help="Table of gate saturation per "
                                        "layer.")] = False,
    surprisal: Annotated[bool, typer.Option("--surprisal", help="Paint each character by the "
                                            "probability the model gave it.")] = False,
    html_out: Annotated[Optional[Path], typer.Option("--html", help="Also write the views to "
                                                     "this self-contained HTML file.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --html "
                                        "file.")] = False,
    max_memory: Annotated[str, typer.Option(
        "--max-memory", help="Refuse a text whose inspection would need more memory than this "
        "(every state of every cell is kept for each character).")] = "2G",
    color: Annotated[str, typer.Option("--color", help="auto, always or never.")] = "auto",
    temperature: Annotated[float, typer.Option("--temperature", "--temp", help="With --prime: "
                                               "sampling temperature.")]
    = SampleConfig.temperature,
    seed: SeedOpt = None,
    device: DeviceOpt = "cpu",
):
    """Paint each character of a text by what a hidden cell does there; find cells by probes."""
    from charrnn import checkpoint, inspection, probes, views
    from charrnn.fileio import atomic_write_text, check_new_file
    from charrnn.output import to_stdout

    console = stdout_console(color)
    if list_probes:
        with to_stdout():
            for p in probes.PROBES.values():
                console.print(Text(f"{p.name:<10} {p.help}"))
            console.print(Text("--probe-regex PATTERN: on inside matches of PATTERN"))
        return
    check_seed(seed)
    if html_out is not None:
        check_new_file(html_out, "--html", force)
    request = views.Request(state=state, layer=layer, cells=views.parse_cells(cells), top=top,
                             probes=probe or [], regexes=probe_regex or [], gates=gates,
                             surprisal=surprisal)
    if length < 2 and prime is None:
        raise CharrnnError(f"--length must be 2 or more, not {length}")
    if offset < 0:
        raise CharrnnError(f"--offset must be 0 or more, not {offset}")
    from charrnn.device import pick_device

    memory = parse_size(max_memory, "--max-memory")
    model, vocab, config = checkpoint.load(run, pick_device(device))
    source = inspection.text_to_inspect(model, vocab, config, text, prime, length, offset,
                                             temperature, seed)
    inspection.check_memory(model.config, len(source), memory)
    ins = inspection.inspect(model, vocab, source)
    built = views.build(ins, request)
    with to_stdout():
        views.show(console, built, ins)
    if html_out is not None:
        check_new_file(html_out, "--html", force)  # again: the inspection took a while
        atomic_write_text(html_out, views.html(f"charrnn inspect-cells {run}", built, ins))
        stderr_console().print(Text(f"wrote {printable(str(html_out))}"))


def stdout_console(color: str) -> Console:
    if color not in ("auto", "always", "never"):
        raise CharrnnError(f"--color must be auto, always or never, not {color!r}")
    if sys.stdout is None:  # file descriptor 1 was closed
        raise CharrnnError("stdout is closed; send it somewhere (a file, or /dev/null)")
    if color == "never":
        return Console(color_system=None, no_color=True, highlight=False)
    return Console(force_terminal=True if color == "always" else None, highlight=False)


def main() -> None:
    app()
