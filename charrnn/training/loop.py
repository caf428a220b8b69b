"""The training loop: TBPTT over contiguous streams, periodic validation, best and latest
checkpoints, a schedule that follows steps and validation, and exact resume.

A step (charrnn/training/step.py) does what a plain PyTorch loop does, and nothing in it waits on
the device: each step's loss stays a tensor until the display or an evaluation reads them all at
once, a few times a second at most. Setting a run up is charrnn/training/setup.py's work; the
state --resume restores, charrnn/training/state.py's.

In a torchrun job (charrnn/training/distributed.py) every rank runs this loop over its share of
the streams, with the model wrapped in DistributedDataParallel; losses and validation are
summed over the ranks, the stop is agreed each step, and rank 0 alone writes.
"""

from __future__ import annotations

import math
import signal
import time
from array import array
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from charrnn import checkpoint, rundir, threads
from charrnn.config import SEEDS, SampleConfig, TrainConfig
from charrnn.data.corpus import Corpus
from charrnn.errors import CharrnnError, describe_os_error
from charrnn.model import CharRNN, State
from charrnn.training import pacing, state, stopping, validation
from charrnn.training.batches import Streams
from charrnn.training.board import Board
from charrnn.training.distributed import SINGLE, World, resume_command
from charrnn.training.plan import Plan
from charrnn.training.progress import Reporter, start_line
from charrnn.training.schedule import Schedule
from charrnn.training.signals import StopOnSignals
from charrnn.training.step import StepRunner
from charrnn.training.timing import Speed, Throughput, Timing
from charrnn.vocab import Vocab

SAMPLE_CHARS = 200  # characters of each sample shown while training
SHOW_EVERY = 0.25  # seconds between two updates of the display


@dataclass
class Setup:
    """A run ready to train: what charrnn/training/setup.py hands the loop."""

    run: Path
    cfg: TrainConfig  # every setting decided (nothing left to choose)
    model: CharRNN
    vocab: Vocab
    corpus: Corpus
    device: torch.device
    train_streams: Streams
    val_streams: Streams
    total_steps: int  # where the planned run ends: the schedule's cosine ends here
    plan: Plan | None  # a time budget, as steps
    choice: dict  # what was chosen and why, recorded in config.json
    lock: rundir.RunLock | rundir.NoLock  # released when the loop ends
    resume_state: dict | None = None
    world: World = SINGLE  # this process's place in a torchrun job
    threads: threads.Threads = threads.Threads(1, 1, False, "as given")  # the CPU threads
    started: float = field(default_factory=time.monotonic)  # when the command began
    measured: Speed | None = None  # the run's own speed, as it was last recorded


@dataclass
class Outcome:
    run: Path
    step: int
    best_val_loss: float
    stopped_by: str  # "epochs" | "max_steps" | "time" | "clock" | "patience" | "interrupted"
    signal: int | None = None
    losses: list = field(default_factory=list)  # (step, train loss) of every step of this process
    seconds: float = 0.0  # since the command began


class Trainer:
    """The loop over one prepared run, and where it stands."""

    clock = staticmethod(time.monotonic)  # what the loop times itself by (a test fakes it)

    def __init__(self, setup: Setup, reporter: Reporter | None = None):
        self.setup = setup
        self.reporter = reporter or Reporter()
        self.run, self.cfg, self.model = setup.run, setup.cfg, setup.model
        self.vocab, self.device, self.world = setup.vocab, setup.device, setup.world
        self.train_streams, self.val_streams = setup.train_streams, setup.val_streams
        self.runner = StepRunner(self.model, self.cfg, self.device, self.world)
        c, plan = self.cfg, setup.plan
        self.schedule = Schedule(lr=c.lr, total_steps=setup.total_steps,
                                 warmup_steps=c.warmup_steps, min_lr_frac=c.min_lr_frac,
                                 patience=c.patience, lr_decay=c.lr_decay,
                                 max_decays=c.max_decays,
                                 bend_at=plan.checked_at if plan and plan.replanned else None,
                                 first_total=plan.first_steps if plan else None)
        # the CPU's threads follow the load (charrnn/threads.py); a GPU's work is not theirs
        self.governor = threads.Governor(setup.threads if self.device.type == "cpu" else
                                         replace(setup.threads, adapt=False))
        self.timing = Timing()
        self.measured = setup.measured
        self.step = self.window = self.epoch = 0
        self.elapsed = 0.0
        self.hidden: State = self.model.init_state(self.train_streams.held, self.device)
        self.pending: list[torch.Tensor] = []  # losses of steps not yet read from the device
        self.loss_sums: list = []  # their sums over the ranks, started and not yet waited for
        self.first_step = 1  # (set again by a restored state)
        self.losses = array("d")  # the loss of every step this process trained, 8 bytes each
        self.since_eval: list[float] = []  # train losses since the last evaluation
        self.stop_signal: int | None = None
        self.diverging = False  # a rank of a torchrun job saw the loss explode (stopping.sane)
        self.pending_stop = None  # what the ranks knew at the last step, on its way
        self.evaluations = 0  # this process's, for --sample-every
        self.tensorboard: Board | None = None
        if setup.resume_state is not None:
            state.restore(self, setup.resume_state)

    @property
    def best_val_loss(self) -> float:
        return self.schedule.best

    def release(self) -> None:
        self.setup.lock.release()

    # -----------------------------------------------------------------------------------------
    # Checkpoints

    def config_dict(self) -> dict:
        return state.config_of(self)

    def save_latest(self) -> None:
        latest = state.capture(self)
        if self.world.is_writer:
            with self.saving():
                checkpoint.save_state(self.run, latest)

    def resume_command(self) -> str:
        return resume_command(self.run, self.world.size)

    @contextmanager
    def saving(self):
        """A failed write (a full disk, a folder gone read-only) ends the run in one line; the
        atomic writes have kept the last good checkpoint."""
        try:
            yield
        except OSError as e:
            said = describe_os_error(e, "write", advice=False)
            raise CharrnnError(f"{said}; the last good checkpoint in {self.run} is kept: "
                               f"continue with `{self.resume_command()}` once it can "
                               "be written") from None

    # -----------------------------------------------------------------------------------------
    # Where the run stands

    def epochs_done(self) -> float:
        return self.epoch + self.window / self.train_streams.windows

    def progress(self) -> float:
        return min(self.step / self.setup.total_steps, 1.0)

    def planned_stop(self) -> str | None:
        """The stops every rank of a torchrun job reaches at the same step by itself."""
        c, plan = self.cfg, self.setup.plan
        if c.max_steps and self.step >= c.max_steps:
            return "max_steps"
        if c.epochs and self.epochs_done() >= c.epochs:
            return "epochs"
        if plan and self.step >= plan.steps:
            return "time"
        if self.schedule.stopped:
            return "patience"
        return None

    def over_time(self) -> bool:
        plan = self.setup.plan
        return bool(plan) and not plan.repeat and self.elapsed >= plan.clock_limit

    def eval_due(self) -> bool:
        plan = self.setup.plan
        return plan.eval_due(self.step) if plan else self.step % self.cfg.eval_every == 0

    def interrupt(self, signum: int = signal.SIGINT) -> None:
        """Ask the loop to save and stop at the end of the current step."""
        self.stop_signal = signum

    def read_losses(self) -> None:
        """Bring the losses of the steps since the last read from the device, in one copy."""
        if self.pending:
            for work in self.loss_sums:
                work.wait()
            self.loss_sums = []
            values = torch.stack(self.pending)
            if self.world.distributed:
                values = values / self.world.size  # the mean of equal shares: the batch's mean
            values = values.tolist()
            self.losses.extend(values)
            self.since_eval += values
            self.pending = []

    def train_loss(self) -> float:
        self.read_losses()
        return sum(self.since_eval) / max(len(self.since_eval), 1)

    # -----------------------------------------------------------------------------------------
    # The loop

    def run_loop(self, on_step=None) -> Outcome:
        """Train until a stop condition; release the run directory however it ends."""
        try:
            self._begin()
            with StopOnSignals(self):
                reason = self._loop(on_step)
            return self._end(reason)
        finally:
            self.reporter.finish()  # a live display must not outlive the run, even on an error
            if self.tensorboard is not None:
                self.tensorboard.close()
            self.release()

    def _loop(self, on_step) -> str:
        s = self.train_streams
        chars = s.batch * s.seq_len
        started = self.clock() - self.elapsed
        self.meter = Throughput(chars, self.step, self.clock)
        last_show = 0.0
        mark, cpu_mark = self.clock(), time.process_time()
        while (reason := stopping.stop_reason(self)) is None:
            if self.window >= s.windows:  # a new epoch: streams restart, so does the state
                self.epoch, self.window = self.epoch + 1, 0
                self.hidden = self.model.init_state(s.held, self.device)
                continue
            self._train_step()
            now, cpu = self.clock(), time.process_time()
            self.elapsed = now - started
            self.timing.step(chars, now - mark, cpu - cpu_mark, self.governor.threads)
            pacing.follow_load(self, chars)
            pacing.check_plan(self)
            if on_step is not None:
                on_step(self)
            if now - last_show >= SHOW_EVERY:
                last_show = now
                self._show(now)
            mark, cpu_mark = now, cpu
            if self.eval_due():
                validation.evaluate_and_save(self, self.meter.rate(self.step, now))
                self.governor.restart()  # only the steps are timed
                mark, cpu_mark = self.clock(), time.process_time()
        return reason

    def _train_step(self) -> None:
        x, y = self.train_streams.tensors(self.window, self.device)
        loss, self.hidden = self.runner.step(x, y, self.hidden, self.schedule.lr_at(self.step))
        self.pending.append(loss)
        if self.world.distributed:
            self.loss_sums.append(self.world.sum_later(loss))
        self.step += 1
        self.window += 1

    def _show(self, now: float) -> None:
        figures = self.figures(self.meter.rate(self.step, now))
        if self.world.distributed:  # seen here at this rank's moment: agreed at the next step
            self.diverging = self.diverging or not stopping.sane(figures["train_loss"],
                                                                  len(self.vocab))
        else:
            stopping.check_divergence(self, figures["train_loss"])
        self.reporter.step(figures)

    def _begin(self) -> None:
        """Before the first step: a state and config to resume from, the logs trimmed to it,
        the start line, TensorBoard."""
        writer = self.world.is_writer
        if self.setup.resume_state is None:
            self.save_latest()  # a run killed before its first evaluation still resumes
        with self.saving():
            if self.setup.resume_state is None and writer:
                checkpoint.write_config(self.run, self.config_dict())
            elif writer:
                damaged = rundir.trim_metrics(self.run, self.step)
                if damaged:
                    self.reporter.warn(f"{self.run / checkpoint.METRICS}: {damaged} damaged "
                                       f"line{'s' if damaged != 1 else ''} left out")
                rundir.trim_samples(self.run, self.step)
        self.reporter.start(start_line(self))
        if self.cfg.tensorboard and writer:
            self.tensorboard = Board(self.run / checkpoint.BOARD, self.step)
        self.model.train()

    def _end(self, reason: str) -> Outcome:
        self.read_losses()
        if reason == "interrupted":
            # save where we are, but do not evaluate: a resumed run then matches an
            # uninterrupted one evaluation for evaluation
            stopping.check_divergence(self, self.train_loss(), weights=True)
            self.save_latest()
            self.reporter.say(f"interrupted at step {self.step}: saved {self.run}; "
                              f"continue with `{self.resume_command()}`")
        elif self.since_eval:
            validation.evaluate_and_save(self, self.meter.rate(self.step, self.clock()))
        self.reporter.last(self.figures(self.meter.rate(self.step, self.clock())))
        pacing.learn_speed(self)
        if reason == "clock":
            self.reporter.warn(pacing.clock_stop_line(self))
        losses = list(enumerate(self.losses, start=self.first_step))
        return Outcome(self.run, self.step, self.best_val_loss, reason, self.stop_signal, losses,
                       seconds=self.clock() - self.setup.started)

    def figures(self, chars_per_sec: float) -> dict:
        progress = self.progress()
        eta = self.elapsed * (1 - progress) / progress if progress > 0 else math.inf
        return {"step": self.step, "epoch": self.epochs_done(), "train_loss": self.train_loss(),
                "chars_per_sec": chars_per_sec, "lr": self.schedule.lr_at(self.step),
                "elapsed": self.elapsed, "eta": eta, "progress": progress}

    @torch.no_grad()
    def sample(self, length: int = SAMPLE_CHARS) -> str:
        """A short sample of the model as it is now, by the numpy sampler (a CPU copy of the
        weights), with its own generator: the training's random numbers are not touched."""
        from charrnn.sample import generate

        generator = torch.Generator().manual_seed((self.cfg.seed + self.step) % SEEDS)
        text = "".join(generate(self.model, self.vocab, "", SampleConfig(length=length),
                                generator))
        self.model.train()  # generate put it in eval mode
        return text
