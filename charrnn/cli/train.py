"""`charrnn train`: a new run, a resumed one, one from another's weights or plan."""

from __future__ import annotations

import shlex
import signal
from pathlib import Path
from typing import Annotated, Optional

import typer

from charrnn.cli import base
from charrnn.cli.base import (
    command,
    given_names,
    settings,
    stderr_console,
)
from charrnn.config import LN2, ModelConfig, TrainConfig
from charrnn.errors import CharrnnError

STOPPED = {"time": "the planned end of the time budget",
           "clock": "the clock ran past the time budget", "max_steps": "--max-steps reached",
           "epochs": "--epochs reached",
           "patience": "validation stopped improving, even after the learning rate decayed"}


# The settings `charrnn train` takes besides its own options below, each declared once (flag,
# default, check, help) on its field in charrnn/config.py; they arrive in `values`.
MODEL_OPTIONS = ("model", "layers", "hidden_size", "embedding_size", "dropout")
TRAIN_OPTIONS = (
    "batch_size", "seq_len", "lr", "warmup_steps", "weight_decay", "optimizer", "grad_clip",
    "epochs", "max_steps", "time", "eval_every", "eval_chars", "tensorboard", "sample_every",
    "patience", "lr_decay", "max_decays", "val_frac", "test_frac", "include", "exclude", "seed",
    "device", "threads", "amp", "encoding", "errors")


@command((ModelConfig, MODEL_OPTIONS), (TrainConfig, TRAIN_OPTIONS))
def train(
    ctx: typer.Context,
    corpus: Annotated[Optional[str], typer.Argument(
        help="A text file, a folder of them, or a corpus name (charrnn corpus list). "
        "Optional with --resume.",
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
    from charrnn.engine import distributed

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
    from charrnn.training import prepare
    from charrnn.training.progress import Silent, fmt_duration, reporter_for

    given = given_names(ctx)
    reporter = reporter_for(stderr_console()) if world.is_writer else Silent()
    starts = [name for name, v in (("--resume", resume), ("--init-from", init_from),
                                   ("--plan-from", plan_from)) if v is not None]
    if len(starts) > 1:
        raise CharrnnError(f"{' and '.join(starts)} do not go together; choose one")
    if plan_from is not None:
        changes = {**settings(ModelConfig, values, given), **settings(TrainConfig, values, given)}
        trainer = prepare.repeat(plan_from, corpus, out, changes, overwrite=overwrite,
                                 reporter=reporter, world=world, started=base.STARTED)
    elif resume is not None:
        if out is not None and out != resume:
            raise CharrnnError("--resume continues a run in its own directory; leave out --out")
        changes = {**settings(ModelConfig, values, given), **settings(TrainConfig, values, given)}
        if overwrite:
            changes["overwrite"] = True
        trainer = prepare.resume(resume, corpus, changes, reporter, world, started=base.STARTED)
    else:
        if corpus is None:
            raise CharrnnError("give a CORPUS to train on (a text file, a folder, or a corpus "
                               "name: see `charrnn corpus list`), or --resume RUN")
        cfg = TrainConfig(**settings(TrainConfig, values))
        trainer = prepare.new(corpus, out, cfg, settings(ModelConfig, values, given),
                              init_from=init_from, overwrite=overwrite, reporter=reporter,
                              world=world, started=base.STARTED)
    where["run"] = trainer.run
    outcome = trainer.run_loop()
    if outcome.stopped_by == "interrupted":
        # the shell's convention for a process stopped by a signal: 128 + its number
        raise typer.Exit(128 + (outcome.signal or signal.SIGINT))
    plan = outcome.plan
    took = fmt_duration(outcome.seconds) + (f" of a {fmt_duration(plan.seconds)} budget"
                                            if plan else "")
    reporter.say(f"stopped at step {outcome.step} ({STOPPED[outcome.stopped_by]}) after {took}; "
                 f"best validation loss {outcome.best_val_loss:.4f} nats/char "
                 f"({outcome.best_val_loss / LN2:.3f} bits/char)")
    reporter.say(f"sample from it with:  charrnn sample {shlex.quote(str(outcome.run))}")


