"""The command line: an argument surface over the library. The settings' options are declared
with the settings (charrnn/config.py); a command declares only its own inputs and outputs.

    charrnn train corpus.txt                        learn a character model of any text
    charrnn sample runs/corpus --temp 0.8           stream new text from it
    charrnn inspect-cells runs/corpus               see what its hidden cells track
"""

from __future__ import annotations

import inspect
import math
import os
import shlex
import signal
import sys
import time
import types
import typing
from dataclasses import MISSING
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from charrnn import __version__, threads
from charrnn.config import (LN2, InspectConfig, ModelConfig, SampleConfig, TrainConfig,
                            flag, option_settings)
from charrnn.errors import CharrnnError, describe_os_error, os_reason, printable
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
    from charrnn.distributed import launched, rank_label

    print(f"charrnn{rank_label()}: error: {printable(message)}", file=sys.stderr)
    if launched():
        # a torchrun rank whose peers may be gone: tearing down its process group could wait
        # for them, or abort; what it wrote is whole (atomic), so leave at once
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


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


# ---------------------------------------------------------------------------------------------
# Options: a settings class's fields declare their own (charrnn/config.py); these are the rest


CHOSEN = "[default: chosen for the budget, the corpus and the device]"


def options(cls, only: tuple[str, ...] | None = None) -> list[inspect.Parameter]:
    """The command-line options of a settings class, read from its fields' metadata."""
    hints = typing.get_type_hints(cls)
    params = []
    for f in option_settings(cls):
        if only is not None and f.name not in only:
            continue
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
    """Register `body(ctx, **values)` as a command whose options are its own (declared in its
    signature) followed by those of the settings classes in `groups` ((class, only) pairs)."""
    def register(body):
        own = list(inspect.signature(body, eval_str=True).parameters.values())[:-1]  # not **values
        extra = [p for cls, only in groups for p in options(cls, only)]
        body.__signature__ = inspect.Signature(own + extra)
        return app.command(name)(body)
    return register


def given_names(ctx: typer.Context) -> set[str]:
    return {name for name in ctx.params
            if getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"}


RunArg = Annotated[Path, typer.Argument(help="A run directory written by `charrnn train`.",
                                        show_default=False)]
STOPPED = {"time": "the planned end of the time budget",
           "clock": "the clock ran past the time budget", "max_steps": "--max-steps reached",
           "epochs": "--epochs reached",
           "patience": "validation stopped improving, even after the learning rate decayed"}


@command((ModelConfig, None), (TrainConfig, None))
def train(
    ctx: typer.Context,
    corpus: Annotated[Optional[str], typer.Argument(
        help="A text file, or a built-in corpus name (python-stdlib). Optional with --resume.",
        show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", help="Run directory. [default: runs/<corpus name>]", show_default=False)] = None,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="Continue this run "
                                                   "exactly where it stopped.")] = None,
    init_from: Annotated[Optional[Path], typer.Option("--init-from", help="Start from this "
                                                      "run's weights on a new corpus.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run in "
                                            "the run directory.")] = False,
    plan_from: Annotated[Optional[Path], typer.Option(
        "--plan-from", help="Repeat this run exactly as a new run: its model, settings, seed "
        "and planned steps (a time budget as the steps it planned; no clock).")] = None,
    **values,
):
    """Train a character model on a text file; write checkpoints to a run directory.

    Under torchrun (`torchrun --nproc-per-node N -m charrnn train ...`) the N processes train
    one model with DistributedDataParallel, each on its share of the --batch-size streams."""
    from charrnn import distributed

    world = distributed.join(values["device"])
    clean = False  # every rank finished its collectives
    try:
        with distributed.guard(world) as where:
            try:
                _train(ctx, corpus, out, resume, init_from, overwrite, plan_from, world, values,
                       where)
            except typer.Exit:  # stopped by a signal, saved, in step with the others
                clean = True
                raise
            clean = True
    finally:
        world.close(clean)


def _train(ctx, corpus, out, resume, init_from, overwrite, plan_from, world, values, where):
    from charrnn import prepare
    from charrnn.progress import Silent, fmt_duration, reporter_for

    given = given_names(ctx)
    reporter = reporter_for(stderr_console()) if world.writes else Silent()
    starts = [name for name, v in (("--resume", resume), ("--init-from", init_from),
                                   ("--plan-from", plan_from)) if v is not None]
    if len(starts) > 1:
        raise CharrnnError(f"{' and '.join(starts)} do not go together; choose one")
    if plan_from is not None:
        changes = {**settings(ModelConfig, values, given), **settings(TrainConfig, values, given)}
        trainer = prepare.repeat(plan_from, corpus, out, changes, overwrite=overwrite,
                                 reporter=reporter, world=world, started=STARTED)
    elif resume is not None:
        if out is not None and out != resume:
            raise CharrnnError("--resume continues a run in its own directory; leave out --out")
        changes = {**settings(ModelConfig, values, given), **settings(TrainConfig, values, given)}
        if overwrite:
            changes["overwrite"] = True
        trainer = prepare.resume(resume, corpus, changes, reporter, world, started=STARTED)
    else:
        if corpus is None:
            raise CharrnnError("give a CORPUS to train on (a text file or python-stdlib), or "
                               "--resume RUN")
        cfg = TrainConfig(**settings(TrainConfig, values))
        trainer = prepare.new(corpus, out, cfg, settings(ModelConfig, values, given),
                              init_from=init_from, overwrite=overwrite, reporter=reporter,
                              world=world, started=STARTED)
    where["run"] = trainer.run
    outcome = trainer.run_loop()
    if outcome.stopped_by == "interrupted":
        # the shell's convention for a process stopped by a signal: 128 + its number
        raise typer.Exit(128 + (outcome.signal or signal.SIGINT))
    plan = trainer.setup.plan
    took = fmt_duration(outcome.seconds) + (f" of a {fmt_duration(plan.seconds)} budget"
                                            if plan else "")
    reporter.say(f"stopped at step {outcome.step} ({STOPPED[outcome.stopped_by]}) after {took}; "
                 f"best validation loss {outcome.best_val_loss:.4f} nats/char "
                 f"({outcome.best_val_loss / LN2:.3f} bits/char)")
    reporter.say(f"sample from it with:  charrnn sample {shlex.quote(str(outcome.run))}")


@command((SampleConfig, None))
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
    import torch

    from charrnn import checkpoint
    from charrnn.output import TextOut, to_stdout
    from charrnn.sample import check_prime, generate, read_prime, unescape

    chosen = settings(SampleConfig, values)
    temperatures = chosen.pop("temperature", [SampleConfig.temperature])
    temperatures = [0.0] if argmax else temperatures
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
    model, vocab, config = checkpoint.load(run)
    prime = check_prime(prime, vocab, drop_unknown)
    seed = configs[0].seed if configs[0].seed is not None else int(torch.seed() % 2**63)
    out = TextOut(sys.stdout, safe=safe)
    written = [] if novelty else None  # what --novelty checks; nothing is kept without it
    with to_stdout():
        for cfg in configs:
            generator = torch.Generator().manual_seed(seed)  # each temperature, the same seed
            if len(configs) > 1:
                out.flush()
                stderr_console().print(Text(f"--- temperature {cfg.temperature:g} ---"))
            for n in range(num_samples):
                if n:
                    out.write("\n\n")
                out.write(prime)
                tail = ""
                for ch in generate(model, vocab, prime, cfg, generator):
                    out.write(ch)
                    governor.tick()
                    if written is not None:
                        written.append(ch)
                    if stop is not None:
                        tail = (tail + ch)[-len(stop):]
                        if tail == stop:
                            break
                out.write("\n")
                if written is not None:
                    written.append("\n")
            out.flush()
    if written is not None:
        from charrnn import inspection

        inspection.say_novelty(config, "".join(written), stderr_console())


@command((InspectConfig, None), (SampleConfig, ("temperature", "seed")), name="inspect-cells")
def inspect_cells(
    run: RunArg,
    text: Annotated[Optional[Path], typer.Option("--text", help="Inspect this UTF-8 file "
                                                 "instead of the run's validation text.")] = None,
    prime: Annotated[Optional[str], typer.Option("--prime", help="Inspect this text and the "
                                                 "model's continuation of it (--temperature, "
                                                 "--seed).")] = None,
    length: Annotated[int, typer.Option("--length", help="Characters to inspect (with --prime: "
                                        "to generate).")] = 1000,
    offset: Annotated[int, typer.Option("--offset", help="Where the stretch starts, in "
                                        "characters.")] = 0,
    list_probes: Annotated[bool, typer.Option("--list-probes", help="List the probes and "
                                              "exit.")] = False,
    html_out: Annotated[Optional[Path], typer.Option("--html", help="Also write the views to "
                                                     "this self-contained HTML file.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --html "
                                        "file.")] = False,
    color: Annotated[str, typer.Option("--color", help="auto, always or never.")] = "auto",
    **values,
):
    """Paint each character of a text by what a hidden cell does there; find cells by probes."""
    from charrnn import checkpoint, inspection, probes, views
    from charrnn.device import pick_device
    from charrnn.fileio import atomic_write_text, check_new_file
    from charrnn.output import to_stdout

    console = stdout_console(color)
    if list_probes:
        with to_stdout():
            for p in probes.PROBES.values():
                console.print(Text(f"{p.name:<10} {p.help}"))
            console.print(Text("--probe-regex PATTERN: on inside matches of PATTERN"))
        return
    request = InspectConfig(**settings(InspectConfig, values))
    chosen = settings(SampleConfig, values)
    temperatures = chosen.pop("temperature", [SampleConfig.temperature])
    if len(temperatures) > 1:
        raise CharrnnError("inspect-cells takes one --temperature, not a list")
    drawing = SampleConfig(**chosen, temperature=temperatures[0], length=max(length, 0))
    inspection.check_stretch(length, offset, prime)
    if html_out is not None:
        check_new_file(html_out, "--html", force)
    threads.configure(request.threads)
    model, vocab, config = checkpoint.load(run, pick_device(request.device))
    held = None
    if request.ablate is not None:
        from charrnn import ablation

        held = ablation.parse(request.ablate, model.config.layers, model.config.hidden_size)
    source = inspection.text_to_inspect(model, vocab, config, text, prime, length, offset,
                                        drawing, request.max_memory)
    inspection.check_memory(model.config, len(source), request.max_memory)
    ins = inspection.inspect(model, vocab, source)
    if held:
        ins.ablation = (request.ablate, ablation.ablate(model, vocab, source, held))
    if request.feature is not None:
        from charrnn import features

        layer = request.layer or model.config.layers
        state = request.state or "h"
        ins.check(state, layer)
        d = features.load(features.path_of(run, layer, state), model.config.hidden_size)
        if not 0 <= request.feature < d.w_enc.shape[0]:
            raise CharrnnError(f"--feature {request.feature} does not exist: features are "
                               f"numbered 0 to {d.w_enc.shape[0] - 1}")
        acts = d.encode(ins.states[state][layer - 1])[:, request.feature]
        ins.feature = (f"feature {request.feature} of layer {layer} ({state})", acts)
    if request.match:
        if len(request.match) < 2:
            raise CharrnnError("--match needs a phrase of 2 characters or more")
        ins.matching = inspection.inspect(model, vocab, request.match)
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
    run: RunArg,
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
    color: Annotated[str, typer.Option("--color", help="auto, always or never.")] = "auto",
):
    """Learn a sparse dictionary (a sparse autoencoder) of a layer's states over the training
    text, save it in the run directory, and list its features by how often they fire, each with
    its top contexts painted and a label from the probe it follows best."""
    from charrnn import checkpoint, features, render
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
    text, acts, frequency, labels = (learned.text, learned.acts, learned.frequency,
                                     learned.labels)
    say.print(Text(printable(f"saved {learned.path}; paint one with `charrnn inspect-cells "
                             f"{shlex.quote(str(run))} --layer {layer} --state {state} "
                             "--feature N`")))
    alive = [f for f in sorted(range(len(frequency)), key=lambda f: -frequency[f])
             if frequency[f] > 0]
    with to_stdout():
        for f in alive[:top]:
            name, r = labels[f]
            console.print(Text(f"feature {f}: fires on {frequency[f]:.1%} of characters; "
                               f"follows probe {name} best (r = {r:+.2f})", style="bold"))
            for at in acts[:, f].argsort(kind="stable")[::-1][:3]:
                lo, hi = max(int(at) - 30, 0), min(int(at) + 10, len(text))
                render.heatmap(console, render.View(f"  at character {int(at):,}",
                                                    acts[lo:hi, f], 0.0,
                                                    float(acts[:, f].max()) or 1.0),
                               text[lo:hi])
        dead = acts.shape[1] - len(alive)
        if dead:
            console.print(Text(f"{dead} feature(s) never fire on this text"))


@app.command("eval")
def eval_(
    run: RunArg,
    text: Annotated[Optional[Path], typer.Argument(
        help="A UTF-8 text to evaluate on. [default: the run's validation text]",
        show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The table as JSON.")] = False,
    per_char: Annotated[Optional[Path], typer.Option(
        "--per-char", help="Also write each character's probability under the model to this "
        "JSON-lines file (a new file; --force replaces one).", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --per-char "
                                        "file.")] = False,
):
    """The run's loss on a text (nats and bits per character, perplexity), beside baselines on
    the same text: uniform, and interpolated Kneser-Ney n-gram models (one discount per order,
    Chen and Goodman 1998) with 0 to 9 characters of context, counted on the run's training
    text. The counts are cached in the run directory."""
    import json

    from charrnn import evaluate
    from charrnn.fileio import check_new_file
    from charrnn.output import to_stdout

    if per_char is not None:
        check_new_file(per_char, "--per-char", force)
    threads.configure()  # (CHARRNN_THREADS, or chosen for the load)
    result = evaluate.evaluate(run, text, say=lambda line: stderr_console().print(
        Text(printable(line)), soft_wrap=True))
    ids, p, vocab = result.pop("per_char")
    if per_char is not None:
        evaluate.write_per_char(per_char, ids, p, vocab)
    with to_stdout():
        if as_json:
            sys.stdout.write(json.dumps(result, indent=2) + "\n")
            return
        from rich.table import Table

        table = Table(title=printable(f"{result['characters']:,} characters of "
                                      f"{result['text']}; baselines counted on "
                                      f"{result['training_characters']:,} training characters"))
        for column in ("model", "", "nats/char", "bits/char", "perplexity"):
            table.add_column(column, justify="left" if column in ("model", "") else "right")
        for r in result["rows"]:
            table.add_row(Text(r["name"]), Text(printable(r["about"])), f"{r['nats']:.4f}",
                          f"{r['bits']:.4f}", f"{r['perplexity']:.3f}")
        stdout_console("auto").print(table)


@app.command()
def info(
    run: RunArg,
    as_json: Annotated[bool, typer.Option("--json", help="Everything as one JSON object, the "
                                          "loss curves included.")] = False,
    color: Annotated[str, typer.Option("--color", help="auto, always or never.")] = "auto",
):
    """What a run is (model, corpus, settings and how they were chosen), how far it got, its
    checkpoints, and its training and validation loss curves."""
    import json

    from charrnn import runinfo
    from charrnn.distributed import resume_command
    from charrnn.output import to_stdout

    facts = runinfo.gather(run)
    console = stdout_console(color)
    with to_stdout():
        if as_json:
            sys.stdout.write(json.dumps(facts, indent=2) + "\n")
            return
        m, p, c = facts["model"], facts["progress"], facts["corpus"]
        steps = f"{p['step']:,}" + (f" of {p['planned_steps']:,} planned" if p["planned_steps"]
                                    else "")
        state = ("finished" if p["finished"] else
                 "stopped early (interrupted, or still training): continue with "
                 f"`{resume_command(run, p['processes'])}`")
        best = facts["best_val_loss"]
        lines = [
            f"run          {run}",
            f"model        {m['layers']}x{m['hidden_size']} {m['model']}, embedding "
            f"{m['embedding_size']}, dropout {m['dropout']:g}; {m['parameters']:,} parameters",
            f"corpus       {c['source'] or c['name']} ({c['characters']:,} characters, "
            f"{facts['vocabulary']} distinct) at {c['path']}",
            f"chosen       {facts['choice'].get('reason') or 'as given'}",
            "settings     " + ", ".join(f"{k}={v}" for k, v in facts["train"].items()
                                        if k not in ("include", "exclude") or v),
            f"steps        {steps}; {state}",
            *_plan_lines(facts, run),
            *([f"processes    {p['processes']} (torchrun), when last saved"]
              if p["processes"] > 1 else []),
            f"epochs       {p['epochs']:.2f}" if p["epochs"] is not None else "epochs       -",
            f"time         {p['elapsed_s']:.0f} s" if p["elapsed_s"] is not None and
            math.isfinite(p["elapsed_s"]) else "time         -",
            (f"best         validation loss {best:.4f} nats/char ({facts['best_val_bpc']:.3f} "
             "bits/char)") if best is not None else "best         no evaluation yet",
            "checkpoints  " + ", ".join(f"{k} ({v / 1e6:,.1f} MB)" if v >= 1e5 else
                                        f"{k} ({v / 1e3:,.1f} KB)"
                                        for k, v in facts["checkpoints"].items()),
        ]
        if p["state_error"]:
            lines.append(f"warning      {p['state_error']}")
        lines += [f"warning      {w}" for w in facts["warnings"]]
        for line in lines:
            console.print(Text(printable(line)), soft_wrap=True)
        if len(facts["curves"]) >= 2:
            colour = console.color_system is not None and not console.no_color
            chart = runinfo.plot(facts["curves"], console.width, colour)
            console.print(Text.from_ansi(chart) if colour else Text(chart), soft_wrap=True)
        else:
            console.print(Text("(the loss curves need two evaluations or more)"))


def _plan_lines(facts: dict, run: Path) -> list[str]:
    """What `charrnn info` says of a run's plan and speed, and how to repeat it."""
    plan, speed, lines = facts["plan"], facts["speed"], []
    if plan:
        line = f"plan         {plan.get('seconds', 0):g} s as {plan.get('steps', 0):,} steps"
        if plan.get("first_steps"):
            line += (f" (planned again at step {plan.get('checked_at'):,}, from "
                     f"{plan['first_steps']:,})")
        if plan.get("repeat"):
            line += ", repeated from another run"
        lines.append(line)
    rates = [(f"planned {speed['planned_train']:,.0f}" if speed["planned_train"] else ""),
             (f"measured {speed['measured_train']:,.0f}" if speed["measured_train"] else "")]
    if any(rates):
        evals = (f"; validating {speed['measured_eval']:,.0f}" if speed["measured_eval"]
                 else "")
        lines.append(f"speed        {', '.join(r for r in rates if r)} chars/s training{evals}")
    lines.append(f"repeat       charrnn train --plan-from {shlex.quote(str(run))} --out NEW   "
                 "(the same model, settings, seed and steps)")
    return lines


corpus_app = typer.Typer(cls=TyperGroup, no_args_is_help=True,
                         help="The named corpora: list them, and get one onto this machine.")
app.add_typer(corpus_app, name="corpus")


@corpus_app.command("list")
def corpus_list():
    """Each named corpus: what it is, its size, where it comes from, its licence, and whether
    it is on this machine. A corpus whose sha256 is not pinned has its first download's
    checksum recorded, and a later download that differs is said."""
    from charrnn import recipes
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
    from charrnn import recipes

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


def stdout_console(color: str) -> Console:
    if color not in ("auto", "always", "never"):
        raise CharrnnError(f"--color must be auto, always or never, not {color!r}")
    if sys.stdout is None:  # file descriptor 1 was closed
        raise CharrnnError("stdout is closed; send it somewhere (a file, or /dev/null)")
    if color == "never":
        return Console(color_system=None, no_color=True, highlight=False)
    return Console(force_terminal=True if color == "always" else None, highlight=False)


def _streams_that_cannot_fail_on_text() -> None:
    """A terminal or pipe whose encoding cannot hold every character (PYTHONIOENCODING=ascii, a
    C locale) gets those it cannot as escapes (\\xe9), not a traceback."""
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        if stream is not None and not encoding.startswith("utf") and \
                hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def main() -> None:
    global STARTED
    STARTED = time.monotonic()
    _streams_that_cannot_fail_on_text()
    try:
        app()
        code = 0
    except SystemExit as e:
        code = e.code
    try:  # what is still buffered (--help, --version) is written now, where a failure is ours
        if sys.stdout is not None:
            sys.stdout.flush()
    except OSError as e:
        silence_stdout()
        print(f"charrnn: error: cannot write to stdout: {printable(os_reason(e))}",
              file=sys.stderr)
        code = code or 1
    sys.exit(code)
