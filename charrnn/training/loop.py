"""The training loop: TBPTT over contiguous streams, periodic validation, best and latest
checkpoints, a schedule that follows steps and validation, and exact resume.

`Trainer.run_loop` reads top to bottom: stop?, a step, time it, now and then show it, evaluate
when the budget says. What it asks of the time budget goes through `Pacer`
(charrnn/budget/pacer.py): when to evaluate, where the run ends, how far along its schedule a
step is, whether the clock ran out; the plan is made again after every evaluation. A step
(charrnn/engine/step.py) does what a plain PyTorch loop does, and nothing in it waits on the
device: each step's loss stays a tensor until the display or an evaluation reads them all at
once, a few times a second at most. Setting a run up is charrnn/training/prepare.py's work.

In a torchrun job (charrnn/engine/distributed.py) every rank runs this loop over its share of
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
from charrnn.budget import calibrate
from charrnn.budget.pacer import Pacer
from charrnn.budget.plan import Plan
from charrnn.budget.speed import Speed
from charrnn.config import LN2, SEEDS, SampleConfig, TrainConfig
from charrnn.data.corpus import Corpus
from charrnn.engine.distributed import SINGLE, World, resume_command
from charrnn.engine.step import StepRunner, memory_checked
from charrnn.engine.streams import Streams
from charrnn.errors import CharrnnError, describe_os_error
from charrnn.model import CharRNN, State
from charrnn.training import resumable, stopping
from charrnn.training.board import Board
from charrnn.training.progress import Reporter, Throughput, start_line
from charrnn.training.schedule import Schedule
from charrnn.training.signals import StopOnSignals
from charrnn.training.validation import validation_loss
from charrnn.vocab import Vocab

SAMPLE_CHARS = 200  # characters of each sample shown while training
SHOW_EVERY = 0.25  # seconds between two updates of the display


@dataclass
class Setup:
    """A run ready to train: what charrnn/training/prepare.py hands the loop."""

    run: Path
    cfg: TrainConfig  # every setting decided (nothing left to choose)
    model: CharRNN
    vocab: Vocab
    corpus: Corpus
    device: torch.device
    train_streams: Streams
    val_streams: Streams
    steps: int | None  # where --max-steps or --epochs end the run (None: only its plan ends it)
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
    plan: Plan | None = None  # the time budget's plan, as last made


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
        c, s = self.cfg, setup.train_streams
        self.pacer = Pacer(setup.plan, setup.steps, c.eval_every or 1, c.warmup_steps,
                           s.batch * s.seq_len, keep_eval_every=c.eval_every is not None,
                           share=self._share_plan if self.world.distributed else None)
        self.schedule = Schedule(lr=c.lr, warmup_steps=c.warmup_steps,
                                 min_lr_frac=c.min_lr_frac, patience=c.patience,
                                 lr_decay=c.lr_decay, max_decays=c.max_decays)
        # the CPU's threads follow the load (charrnn/threads.py); a GPU's work is not theirs
        self.governor = threads.Governor(setup.threads if self.device.type == "cpu" else
                                         replace(setup.threads, adapt=False))
        self.measured = setup.measured
        self.step = self.window = self.epoch = 0
        self.elapsed = 0.0  # seconds of training, over every resume
        self.hidden: State = self.model.init_state(s.held, self.device)
        self.pending: list[torch.Tensor] = []  # losses of steps not yet read from the device
        self.loss_sums: list = []  # their sums over the ranks, started and not yet waited for
        self.first_step = 1  # (set again by a restored state)
        self.losses = array("d")  # the loss of every step this process trained, 8 bytes each
        self.since_eval: list[float] = []  # train losses since the last evaluation
        self.stop_signal: int | None = None
        self.diverging = False  # a rank of a torchrun job saw the loss explode
        self.pending_stop = None  # what the ranks knew at the last step, on its way
        self.evaluations = 0  # this process's, for --sample-every
        self.tensorboard: Board | None = None
        if setup.resume_state is not None:
            self._restore(setup.resume_state)

    @property
    def best_val_loss(self) -> float:
        return self.schedule.best

    @property
    def plan(self) -> Plan | None:
        """The time budget's plan, as last made."""
        return self.pacer.plan

    # -----------------------------------------------------------------------------------------
    # The loop

    def run_loop(self, on_step=None) -> Outcome:
        """Train until a stop condition; release the run directory however it ends."""
        try:
            self._begin()
            s = self.train_streams
            with StopOnSignals(self), memory_checked(self.model.config, self.device,
                                                     s.batch * self.world.size, s.seq_len):
                reason = self._loop(on_step)
            return self._end(reason)
        finally:
            self.reporter.finish()  # a live display must not outlive the run, even on an error
            if self.tensorboard is not None:
                self.tensorboard.close()
            self.setup.lock.release()

    def _loop(self, on_step) -> str:
        s = self.train_streams
        started = self.clock() - self.elapsed
        self.meter = Throughput(s.batch * s.seq_len, self.step, self.clock)
        last_show = 0.0
        mark, cpu_mark = self.clock(), time.process_time()
        while (reason := self.stop_reason()) is None:
            if self.window >= s.windows:  # a new epoch: streams restart, so does the state
                self.epoch, self.window = self.epoch + 1, 0
                self.hidden = self.model.init_state(s.held, self.device)
                continue
            self._train_step()
            now, cpu = self.clock(), time.process_time()
            self.elapsed = now - started
            self.pacer.stepped(now - mark, cpu - cpu_mark, self.governor.threads)
            self._follow_load()
            if on_step is not None:
                on_step(self)
            if now - last_show >= SHOW_EVERY:
                last_show = now
                self._show(now)
            if self.pacer.evaluate_after(self.step):
                self._evaluate()
                self.governor.restart()  # only the steps are timed
            elif self.pacer.check_due(self.step):  # the first plan, against the run's speed
                self._replan(0.0)
            mark, cpu_mark = self.clock(), time.process_time()
        return reason

    def _train_step(self) -> None:
        x, y = self.train_streams.tensors(self.window, self.device)
        lr = self.schedule.lr_at(self.step, self.pacer.progress(self.step))
        loss, self.hidden = self.runner.step(x, y, self.hidden, lr)
        self.pending.append(loss)
        if self.world.distributed:
            self.loss_sums.append(self.world.sum_later(loss))
        self.step += 1
        self.window += 1

    # -----------------------------------------------------------------------------------------
    # When the run stops: the one place that says

    def stop_reason(self) -> str | None:
        """Why the loop stops now, if it does: the same on every rank of a torchrun job. What
        one rank alone knows (a signal, its clock, a loss it saw explode) goes to the others
        with each step and is read at the next, the round trip hidden behind the step: every
        rank stops at the same step, one step after the first knew."""
        if not self.world.distributed:
            if self.stop_signal is not None:
                return "interrupted"
            return self.planned_stop() or ("clock" if self.over_time() else None)
        signum = clock = diverging = 0
        if self.pending_stop is not None:
            signum, clock, diverging = self.pending_stop()
            self.pending_stop = None
        if diverging:  # every rank stops with the same error at the same step
            loss = self.train_loss()
            self._check_divergence(loss if stopping.sane(loss, len(self.vocab)) is False
                                   else math.inf)
        if signum:
            self.stop_signal = signum
            return "interrupted"
        reason = self.planned_stop() or ("clock" if clock else None)
        if reason is None:
            self.pending_stop = self.world.agree_later(
                [self.stop_signal or 0, int(self.over_time()), int(self.diverging)])
        return reason

    def planned_stop(self) -> str | None:
        """The stops every rank of a torchrun job reaches at the same step by itself."""
        c = self.cfg
        if c.max_steps and self.step >= c.max_steps:
            return "max_steps"
        if c.epochs and self.epochs_done() >= c.epochs:
            return "epochs"
        if self.plan and self.step >= self.pacer.end:
            return "time"
        if self.schedule.stopped:
            return "patience"
        return None

    def over_time(self) -> bool:
        return self.pacer.over_time(self.elapsed)

    def interrupt(self, signum: int = signal.SIGINT) -> None:
        """Ask the loop to save and stop at the end of the current step."""
        self.stop_signal = signum

    def _check_divergence(self, loss: float, weights: bool = False) -> None:
        problem = stopping.divergence(loss, len(self.vocab), self.model if weights else None)
        if problem is not None:
            raise CharrnnError(
                f"training diverged at step {self.step} ({problem}); the last good checkpoint "
                f"in {self.run} is kept; try a lower --lr (it was {self.cfg.lr:g}) or a smaller "
                f"--grad-clip (it was {self.cfg.grad_clip:g})")

    # -----------------------------------------------------------------------------------------
    # Evaluations

    def _evaluate(self, last: bool = False) -> None:
        """The validation loss and what follows it: the plan made again (not at the `last`
        evaluation, after the run stopped: a re-plan there would record steps never taken,
        which --plan-from would then take), the best weights, the latest state, a metrics
        line, the display, TensorBoard, a sample."""
        began = self.clock()
        record = self.figures(self.meter.rate(self.step, began))
        val_loss = validation_loss(self.model, self.val_streams, self.device, self.world,
                                   self.runner.autocast)  # the weights after the last update
        evaluated = self.clock() - began
        for loss in (record["train_loss"], val_loss):  # not max(): max(3.0, nan) is 3.0
            self._check_divergence(loss)
        best = self.schedule.observe(val_loss)
        record.update(val_loss=val_loss, val_bpc=val_loss / LN2, best=best,
                      threads=self.governor.threads)
        del record["progress"], record["eta"]
        self.since_eval = []
        self.evaluations += 1
        # planned again before the state is saved: a run killed after its config is written
        # resumes from the state before, and finds this re-plan recorded
        replanned = not last and self._replan(evaluated, write=False)
        latest = self._capture()
        if self.world.is_writer:
            with self.saving():
                if best:
                    checkpoint.save_weights(self.run, self.model, val_loss)
                if best or replanned:
                    checkpoint.write_config(self.run, self.config_dict())
                checkpoint.save_state(self.run, latest)
                rundir.append_metrics(self.run, record)
            self._show_evaluation(record)
        s = self.val_streams
        self.pacer.evaluated(s.windows * s.batch * s.seq_len, evaluated, self.clock() - began)

    def _show_evaluation(self, record: dict) -> None:
        self.reporter.evaluation(record)
        if self.tensorboard is not None:
            self.tensorboard.evaluation(record, self.step)
        if self.cfg.sample_every and self.evaluations % self.cfg.sample_every == 0:
            text = self.sample()
            with self.saving():
                rundir.append_sample(self.run, self.step, text)
            self.reporter.sample(self.step, text)
            if self.tensorboard is not None:
                self.tensorboard.sample(text, self.step)

    def _replan(self, evaluating: float, write: bool = True) -> bool:
        """The rest of a time budget planned again now (charrnn/budget/pacer.py), `evaluating`
        seconds into an evaluation; recorded in config.json (with `write`: else the caller
        writes it), so that --resume and --plan-from follow it."""
        new = self.pacer.replan(self.step, self.elapsed + evaluating, self.world.is_writer,
                                evaluating)
        if new is not None and write and self.world.is_writer:
            with self.saving():
                checkpoint.write_config(self.run, self.config_dict())
        return new is not None

    def _share_plan(self, plan: Plan | None) -> Plan | None:
        """Rank 0's plan, on every rank of a torchrun job (each rank's clock reads its own
        figures: they would stop at different steps and wait on each other for ever)."""
        d = self.world.broadcast_json(plan.to_dict() if plan is not None else None)
        return Plan.from_dict(d) if d is not None else None

    # -----------------------------------------------------------------------------------------
    # Where the run stands

    def epochs_done(self) -> float:
        return self.epoch + self.window / self.train_streams.windows

    def progress(self) -> float:
        return min(self.step / max(self.pacer.end, 1), 1.0)

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

    def figures(self, chars_per_sec: float) -> dict:
        progress = self.progress()
        eta = self.elapsed * (1 - progress) / progress if progress > 0 else math.inf
        return {"step": self.step, "epoch": self.epochs_done(), "train_loss": self.train_loss(),
                "chars_per_sec": chars_per_sec,
                "lr": self.schedule.lr_at(self.step, self.pacer.progress(self.step)),
                "elapsed": self.elapsed, "eta": eta, "progress": progress}

    def _show(self, now: float) -> None:
        figures = self.figures(self.meter.rate(self.step, now))
        if self.world.distributed:  # seen here at this rank's moment: agreed at the next step
            self.diverging = self.diverging or not stopping.sane(figures["train_loss"],
                                                                  len(self.vocab))
        else:
            self._check_divergence(figures["train_loss"])
        self.reporter.step(figures)

    def _follow_load(self) -> None:
        """Let the governor change the threads, and say when it does."""
        said = len(self.governor.moves)
        self.governor.tick(self.pacer.chars_per_step)
        if len(self.governor.moves) > said:
            n = self.governor.moves[-1][1]
            why = ("other work is using this machine's cores" if n < self.setup.threads.most
                   else "the machine's cores are free again")
            self.reporter.say(f"{why}: training on {n} thread{'s' if n != 1 else ''} from "
                              f"step {self.step}")

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

    # -----------------------------------------------------------------------------------------
    # Checkpoints: the state latest.pt holds, and what config.json records

    def _capture(self) -> dict:
        """The state --resume restores (a collective in a torchrun job: every rank's hidden
        states and random number generators are gathered; rank 0 writes them)."""
        self.read_losses()
        return resumable.capture(self.model, self.runner, self.world, self.hidden,
                             resumable.Position(self.step, self.epoch, self.window, self.elapsed),
                             self.schedule.state_dict(), self.since_eval, self.governor.threads,
                             self.pacer.state_dict())

    def _restore(self, saved: dict) -> None:
        r = resumable.restore(saved, self.runner, self.world, self.train_streams, self.hidden,
                          self.device, self.cfg.seed, self.run)
        self.step, self.epoch, self.window = r.position.step, r.position.epoch, r.position.window
        self.elapsed = r.position.elapsed
        self.schedule.load_state_dict(r.schedule)
        self.since_eval, self.hidden = r.since_eval, r.hidden
        if r.pacing is not None:
            self.pacer.load_state_dict(r.pacing)
        self.first_step = self.step + 1

    def config_dict(self) -> dict:
        return resumable.config_record(self.setup, self.cfg, self.model, self.vocab, self.plan,
                                   self.best_val_loss, self.step, self.measured)

    def save_latest(self) -> None:
        latest = self._capture()
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
    # The start and the end

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
            self._check_divergence(self.train_loss(), weights=True)
            self.save_latest()
            self.reporter.say(f"interrupted at step {self.step}: saved {self.run}; "
                              f"continue with `{self.resume_command()}`")
        elif self.since_eval:
            self._evaluate(last=True)
        self.reporter.last(self.figures(self.meter.rate(self.step, self.clock())))
        self._learn_speed()
        if reason == "clock":
            self.reporter.warn(self.pacer.clock_stop_line())
        losses = list(enumerate(self.losses, start=self.first_step))
        return Outcome(self.run, self.step, self.best_val_loss, reason, self.stop_signal, losses,
                       seconds=self.clock() - self.setup.started, plan=self.plan)

    def _learn_speed(self) -> None:
        """What the run measured of itself: kept in config.json (for `charrnn info` and a later
        --time), and taught to the calibration cache."""
        speed = self.pacer.speed()
        if speed is None:
            return
        self.measured = speed
        if not self.world.is_writer:
            return
        with self.saving():
            checkpoint.write_config(self.run, self.config_dict())
        n = self.setup.threads.count
        steady = self.pacer.timing.steady(n, self.device)
        if steady is not None and not self.world.distributed:  # (the cache: one process's)
            s, mc = self.train_streams, self.model.config
            calibrate.learn(calibrate.cache_key(self.device, mc, s.batch, s.seq_len,
                                                self.cfg.amp, threads=n), steady)
