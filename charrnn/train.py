"""The training loop: TBPTT over contiguous streams, AdamW, clipping, periodic validation, best
and latest checkpoints, a schedule that follows steps and validation, and exact resume.

A step does what a plain PyTorch loop does: forward, loss, backward, clip, optimizer step (fused
AdamW on CUDA). Nothing in it waits on the device: each step's loss stays a tensor until the
display or an evaluation reads them all at once, a few times a second at most. Setting a run up
(new, resumed, or from another run's weights) is charrnn/prepare.py's work.

In a torchrun job (charrnn/distributed.py) every rank runs this loop over its share of the
streams, with the model wrapped in DistributedDataParallel; losses and validation are summed over
the ranks, the stop is agreed each step, and rank 0 alone writes.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from array import array
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from charrnn import autosize, checkpoint, threads
from charrnn.autosize import Plan
from charrnn.batches import Streams
from charrnn.config import LN2, SEEDS, SampleConfig, TrainConfig
from charrnn.corpus import Corpus
from charrnn.device import amp_dtype
from charrnn.distributed import SINGLE, World, resume_command
from charrnn.errors import CharrnnError, describe_os_error
from charrnn.model import CharRNN, State, detach
from charrnn.progress import Reporter
from charrnn.schedule import Schedule
from charrnn.vocab import Vocab


SAMPLE_CHARS = 200  # characters of each sample shown while training


def make_optimizer(model: CharRNN, cfg: TrainConfig, device: torch.device):
    params = list(model.parameters())
    fused = {"fused": True} if device.type == "cuda" else {}  # one kernel for every tensor
    if cfg.optimizer == "adamw":
        # decay the weight matrices only, not biases (nanoGPT's rule)
        decay = [p for p in params if p.dim() >= 2]
        rest = [p for p in params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": cfg.weight_decay},
                  {"params": rest, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99), **fused)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.99), **fused)
    return torch.optim.RMSprop(params, lr=cfg.lr, alpha=0.95)


class StepRunner:
    """One training step of a model, as training and calibration both run it."""

    def __init__(self, model: CharRNN, cfg: TrainConfig, device: torch.device,
                 world: World = SINGLE):
        self.model, self.cfg = model, cfg
        self.forward = world.wrap(model)  # (in a torchrun job, the model in DDP)
        self.optimizer = make_optimizer(model, cfg, device)
        self.device_type = device.type
        self.amp_dtype = amp_dtype(device) if cfg.amp else torch.float32
        # loss scaling only for float16, whose range is too narrow for small gradients
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)

    def autocast(self):
        return torch.autocast(self.device_type, dtype=self.amp_dtype, enabled=self.cfg.amp)

    def step(self, x: torch.Tensor, y: torch.Tensor, hidden: State,
             lr: float) -> tuple[torch.Tensor, State]:
        """x, y (B, T) -> the loss (a tensor, not waited for) and the detached state after."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with self.autocast():
            logits, hidden = self.forward(x, hidden)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach(), detach(hidden)


@dataclass
class Setup:
    """A run ready to train: what charrnn/prepare.py hands the loop."""

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
    lock: checkpoint.RunLock
    resume_state: dict | None = None
    world: World = SINGLE  # this process's place in a torchrun job
    threads: threads.Threads = threads.Threads(1, 1, False, "as given")  # the CPU threads
    started: float = field(default_factory=time.monotonic)  # when the command began
    measured: autosize.Speed | None = None  # the run's own speed, as it was last recorded


@dataclass
class Outcome:
    run: Path
    step: int
    best_val_loss: float
    stopped_by: str  # "epochs" | "max_steps" | "time" | "clock" | "patience" | "interrupted"
    signal: int | None = None
    losses: list = field(default_factory=list)  # (step, train loss) of every step of this process
    seconds: float = 0.0  # since the command began


def rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class Timing:
    """This process's own speed, its training steps and its evaluations timed apart: what the
    plan is checked against, what `charrnn info` shows, and what the calibration cache learns.
    The first steps of a process allocate and pick kernels: they are not counted."""

    WARM_UP = 3  # steps

    def __init__(self):
        self.seen = 0  # steps, counted or not
        self.steps = 0
        self.chars = self.seconds = 0.0
        self.by_threads: dict[int, list[float]] = {}  # threads -> [chars, seconds, cpu seconds]
        self.evals = 0
        self.eval_chars = self.eval_seconds = 0.0
        self.pause_seconds = 0.0  # evaluations with their checkpoints and samples

    def step(self, chars: int, seconds: float, cpu: float, n_threads: int) -> None:
        self.seen += 1
        if self.seen <= self.WARM_UP:
            return
        self.steps += 1
        self.chars += chars
        self.seconds += seconds
        row = self.by_threads.setdefault(n_threads, [0.0, 0.0, 0.0])
        row[0] += chars
        row[1] += seconds
        row[2] += cpu

    def evaluation(self, chars: int, seconds: float, pause: float) -> None:
        self.evals += 1
        self.eval_chars += chars
        self.eval_seconds += seconds
        self.pause_seconds += pause

    def speed(self) -> autosize.Speed | None:
        if not self.steps or not self.evals:
            return None
        return autosize.Speed(train=self.chars / max(self.seconds, 1e-9),
                              eval=self.eval_chars / max(self.eval_seconds, 1e-9))

    def steady(self, n_threads: int, device: torch.device) -> autosize.Speed | None:
        """The speed at `n_threads`, if long enough to trust (and, on a CPU, with the CPU
        time they asked for): what the calibration cache learns."""
        chars, seconds, cpu = self.by_threads.get(n_threads, (0.0, 0.0, 0.0))
        if seconds < 3.0 or not self.evals:
            return None
        share = cpu / (seconds * n_threads) if device.type == "cpu" else 1.0
        return autosize.Speed(train=chars / seconds,
                              eval=self.eval_chars / max(self.eval_seconds, 1e-9),
                              share=min(share, 1.0))


class Trainer:
    """The loop over one prepared run, and the state that --resume restores."""

    clock = staticmethod(time.monotonic)  # what the loop times itself by (a test fakes it)

    def __init__(self, setup: Setup, reporter: Reporter | None = None):
        self.setup = setup
        self.reporter = reporter or Reporter()
        self.run, self.cfg, self.model = setup.run, setup.cfg, setup.model
        self.vocab, self.device = setup.vocab, setup.device
        self.train_streams, self.val_streams = setup.train_streams, setup.val_streams
        self.world = setup.world
        self.runner = StepRunner(self.model, self.cfg, self.device, self.world)
        self.amp_dtype = self.runner.amp_dtype
        c = self.cfg
        plan = setup.plan
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
        self.hidden: State = self.model.init_state(self.train_streams.batch_size, self.device)
        self.pending: list[torch.Tensor] = []  # losses of steps not yet read from the device
        self.summing: list = []  # their sums over the ranks, started and not yet waited for
        self.first_step = self.step + 1  # (set again by _restore)
        self.losses = array("d")  # the loss of every step this process trained, 8 bytes each
        self.since_eval: list[float] = []  # train losses since the last evaluation
        self.stop_signal: int | None = None
        self.diverging = False  # a rank of a torchrun job saw the loss explode (see _sane)
        self.agreement = None  # what the ranks knew at the last step, on its way (see below)
        self.evaluations = 0  # this process's, for --sample-every
        self.board = None  # a TensorBoard writer, with --tensorboard
        self.sample_seconds = 0.0  # spent writing samples (the benchmark reports the share)
        if setup.resume_state is not None:
            self._restore(setup.resume_state)

    @property
    def best_val_loss(self) -> float:
        return self.schedule.best

    def release(self) -> None:
        self.setup.lock.__exit__(None, None, None)

    # -----------------------------------------------------------------------------------------
    # Checkpoints

    def config_dict(self) -> dict:
        c = self.setup.corpus
        return {
            "model": self.model.config.to_dict(),
            "train": asdict(self.cfg),
            "plan": asdict(self.setup.plan) if self.setup.plan else None,
            "choice": self.setup.choice,
            "vocab": list(self.vocab.chars),
            "corpus": {"name": c.name, "path": str(c.path.resolve()), "digest": c.digest,
                       # a file or folder by its whole path: --resume may run from elsewhere
                       "source": (str(Path(c.source).expanduser().resolve())
                                  if c.source and Path(c.source).expanduser().exists()
                                  else c.source),
                       "characters": int(len(c.ids))},
            "best_val_loss": None if math.isinf(self.best_val_loss) else self.best_val_loss,
            "step": self.step,
            # the speed the run measured of itself (the plan's is the one it was planned with)
            "speed": ({"train": self.measured.train, "eval": self.measured.eval}
                      if self.measured else None),
        }

    def state_dict(self) -> dict:
        """The training state (a collective in a torchrun job: every rank's hidden states and
        random number generators are gathered; rank 0 writes them)."""
        self._read_losses()
        rng = rng_state(self.device)
        state = {
            "format_version": checkpoint.FORMAT_VERSION,
            "model": checkpoint.state_dict_cpu(self.model),
            "optimizer": self.runner.optimizer.state_dict(),
            "step": self.step, "epoch": self.epoch, "window": self.window,
            "elapsed": self.elapsed,
            "schedule": self.schedule.state_dict(),
            "since_eval": torch.tensor(self.since_eval, dtype=torch.float64),
            # every stream's, in stream order: a state from N ranks resumes on any number
            "hidden": [self.world.gather_streams(h.detach()).cpu() for h in self.hidden],
            "scaler": self.runner.scaler.state_dict(),
            "rng": rng,
            "threads": self.governor.threads,
        }
        if self.world.distributed:
            ranks = {name: self.world.gather_host(t) for name, t in rng.items()}
            state["world_size"] = self.world.size
            state["rank_rng"] = [{name: ranks[name][r] for name in rng}
                                 for r in range(1, self.world.size)]
        return state

    def _restore(self, s: dict) -> None:
        try:
            self.runner.optimizer.load_state_dict(s["optimizer"])
            self.step, self.epoch, self.window = int(s["step"]), int(s["epoch"]), int(s["window"])
            self.elapsed = float(s["elapsed"])
            self.schedule.load_state_dict(s["schedule"])
            self.since_eval = [float(v) for v in s["since_eval"].tolist()]
            streams = self.train_streams
            expected = [(h.shape[0], streams.streams, *h.shape[2:]) for h in self.hidden]
            if [tuple(h.shape) for h in s["hidden"]] != expected:
                raise ValueError("hidden state shape")
            rows = slice(streams.first, streams.first + streams.batch_size)  # this rank's share
            self.hidden = tuple(h[:, rows].to(self.device) for h in s["hidden"])
            if s.get("scaler"):
                self.runner.scaler.load_state_dict(s["scaler"])
            rank, size = self.world.rank, int(s.get("world_size", 1))
            if rank == 0:
                set_rng_state(s["rng"], self.device)
            elif size == self.world.size:
                set_rng_state(s["rank_rng"][rank - 1], self.device)
            else:  # re-divided among more ranks than saved: a fresh generator for each
                torch.manual_seed((self.cfg.seed + rank + self.step) % SEEDS)
            self.first_step = self.step + 1
        except (KeyError, ValueError, TypeError, RuntimeError, AttributeError) as e:
            raise CharrnnError(f"{self.run / checkpoint.LATEST} does not fit this run ({e}); "
                               "it cannot be resumed") from None

    def save_latest(self) -> None:
        state = self.state_dict()
        if self.world.writes:
            with self._saving():
                checkpoint.save_state(self.run, state)

    def resume_command(self) -> str:
        return resume_command(self.run, self.world.size)

    @contextmanager
    def _saving(self):
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

    def stop_reason(self) -> str | None:
        if self.stop_signal is not None:
            return "interrupted"
        return self.planned_stop() or ("clock" if self.over_time() else None)

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

    def agreed_stop_reason(self) -> str | None:
        """stop_reason, the same on every rank of a torchrun job. What one rank alone knows (a
        signal, its clock, a loss it saw explode) goes to the others with each step and is read
        at the next, the round trip hidden behind the step: every rank stops at the same step,
        one step after the first knew."""
        if not self.world.distributed:
            return self.stop_reason()
        signum = clock = diverging = 0
        if self.agreement is not None:
            signum, clock, diverging = self.agreement()
            self.agreement = None
        if diverging:  # every rank stops with the same error at the same step
            loss = self.train_loss()
            self._check_divergence(loss if not self._sane(loss) else math.inf)
        if signum:
            self.stop_signal = signum
            return "interrupted"
        reason = self.planned_stop() or ("clock" if clock else None)
        if reason is None:
            self.agreement = self.world.agree_later(
                [self.stop_signal or 0, int(self.over_time()), int(self.diverging)])
        return reason

    def interrupt(self, signum: int = signal.SIGINT) -> None:
        """Ask the loop to save and stop at the end of the current step."""
        self.stop_signal = signum

    def _read_losses(self) -> None:
        """Bring the losses of the steps since the last read from the device, in one copy."""
        if self.pending:
            for work in self.summing:
                work.wait()
            self.summing = []
            values = torch.stack(self.pending)
            if self.world.distributed:
                values = values / self.world.size  # the mean of equal shares: the batch's mean
            values = values.tolist()
            self.losses.extend(values)
            self.since_eval += values
            self.pending = []

    def train_loss(self) -> float:
        self._read_losses()
        return sum(self.since_eval) / max(len(self.since_eval), 1)

    # -----------------------------------------------------------------------------------------
    # The loop

    def run_loop(self, on_step=None) -> Outcome:
        """Train until a stop condition; release the run directory however it ends."""
        try:
            return self._loop(on_step)
        finally:
            self.reporter.finish()  # a live display must not outlive the run, even on an error
            if self.board is not None:
                self.board.close()
            self.release()

    def _loop(self, on_step) -> Outcome:
        writes = self.world.writes
        if self.setup.resume_state is None:
            self.save_latest()  # a run killed before its first evaluation still resumes
        with self._saving():
            if self.setup.resume_state is None and writes:
                checkpoint.write_config(self.run, self.config_dict())
            elif writes:
                damaged = checkpoint.trim_metrics(self.run, self.step)
                if damaged:
                    self.reporter.warn(f"{self.run / checkpoint.METRICS}: {damaged} damaged "
                                       f"line{'s' if damaged != 1 else ''} left out")
                checkpoint.trim_samples(self.run, self.step)
        self._say_start()
        if self.cfg.tensorboard and writes:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: a resumed run's events after its step are the old process's; drop them
            self.board = SummaryWriter(str(self.run / "tensorboard"), purge_step=self.step + 1)
        s = self.train_streams
        chars = s.streams * s.seq_len
        self.model.train()
        restore = self._install_signal_handlers()
        started = self.clock() - self.elapsed
        meter = Throughput(chars, self.step, self.clock)
        last_show = 0.0
        ended = False
        mark, cpu_mark = self.clock(), time.process_time()
        try:
            while (reason := self.agreed_stop_reason()) is None:
                if self.window >= s.windows:  # a new epoch: streams restart, so does the state
                    self.epoch, self.window = self.epoch + 1, 0
                    self.hidden = self.model.init_state(s.batch_size, self.device)
                    continue
                x, y = s.tensors(self.window, self.device)
                loss, self.hidden = self.runner.step(x, y, self.hidden,
                                                     self.schedule.lr_at(self.step))
                self.pending.append(loss)
                if self.world.distributed:
                    self.summing.append(self.world.sum_later(loss))
                self.step += 1
                self.window += 1
                now, cpu = self.clock(), time.process_time()
                self.elapsed = now - started
                self.timing.step(chars, now - mark, cpu - cpu_mark, self.governor.threads)
                self._follow_load(chars)
                self._check_plan()
                if on_step is not None:
                    on_step(self)
                if now - last_show >= 0.25:
                    last_show = now
                    figures = self._figures(meter.rate(self.step, now))
                    if self.world.distributed:  # seen here at this rank's moment: agreed below
                        self.diverging = self.diverging or not self._sane(figures["train_loss"])
                    else:
                        self._check_divergence(figures["train_loss"])
                    self.reporter.step(figures)
                if self.eval_due():
                    self._evaluate_and_save(meter.rate(self.step, now))
                    self.governor.restart()  # only the steps are timed
                    mark, cpu_mark = self.clock(), time.process_time()
                else:
                    mark, cpu_mark = now, cpu
            ended = True
        finally:
            # a torchrun rank that fails keeps its handlers: the SIGTERM torchrun sends when it
            # sees another rank fail must not cut this rank's own error line short
            if ended or not self.world.distributed:
                restore()
        self._read_losses()
        if reason == "interrupted":
            # save where we are, but do not evaluate: a resumed run then matches an
            # uninterrupted one evaluation for evaluation
            self._check_divergence(self.train_loss(), weights=True)
            self.save_latest()
            self.reporter.say(f"interrupted at step {self.step}: saved {self.run}; "
                              f"continue with `{self.resume_command()}`")
        elif self.since_eval:
            self._evaluate_and_save(meter.rate(self.step, self.clock()))
        self._learn_speed()
        if reason == "clock":
            plan = self.setup.plan
            self.reporter.warn(
                f"the clock stopped the run {autosize.CLOCK_MARGIN / 2:.0%} past its "
                f"{plan.seconds:g} s budget, before its planned end: this machine trained at "
                f"{self._speed_now()} against the {plan.chars_per_sec:,.0f} planned (other "
                "work on it, or a slower device)")
        losses = list(enumerate(self.losses, start=self.first_step))
        return Outcome(self.run, self.step, self.best_val_loss, reason, self.stop_signal, losses,
                       seconds=self.clock() - self.setup.started)

    def _speed_now(self) -> str:
        speed = self.timing.speed()
        return f"{speed.train:,.0f} chars/s" if speed else "an unknown speed"

    def _follow_load(self, chars: int) -> None:
        """Let the governor change the threads, and say when it does."""
        said = len(self.governor.moves)
        self.governor.tick(chars)
        if len(self.governor.moves) > said:
            n = self.governor.moves[-1][1]
            why = ("other work is using this machine's cores" if n < self.setup.threads.most
                   else "the machine's cores are free again")
            self.reporter.say(f"{why}: training on {n} thread{'s' if n != 1 else ''} from step "
                              f"{self.step}")

    def _learn_speed(self) -> None:
        """What this run measured of itself: kept in config.json (for `charrnn info` and a
        later --time), and taught to the calibration cache."""
        speed = self.timing.speed()
        if speed is None:
            return
        self.measured = speed
        if not self.world.writes:
            return
        with self._saving():
            checkpoint.write_config(self.run, self.config_dict())
        if self.world.distributed:
            return  # (the cache holds one process's speeds)
        n = self.setup.threads.count
        steady = self.timing.steady(n, self.device)
        if steady is not None:
            s, mc = self.train_streams, self.model.config
            autosize.learn(autosize.cache_key(self.device, mc, s.streams, s.seq_len,
                                              self.cfg.amp, threads=n), steady)

    def _say_start(self) -> None:
        s, mc, c = self.train_streams, self.model.config, self.setup.corpus
        n_params = sum(p.numel() for p in self.model.parameters())
        where = (f"{self.world.describe()} on {self.device.type}" if self.world.distributed
                 else str(self.device))
        if self.device.type == "cpu" and not self.world.distributed:
            t = self.setup.threads
            where += (f" ({t.count} of {t.most} threads, following the load)" if t.adapt
                      and t.most > 1 else f" ({t.count} thread{'s' if t.count != 1 else ''}: "
                      f"{t.reason})")
        self.reporter.start(
            f"training {mc.layers}x{mc.hidden_size} {mc.model} ({n_params:,} parameters) on "
            f"{c.source if Path(c.source or '.').is_dir() else c.path} ({len(c.ids):,} "
            f"characters, {len(self.vocab)} distinct) with "
            f"{where}; batch {s.streams} x {s.seq_len}; "
            f"{self.setup.total_steps:,} steps planned; run in {self.run}")

    def _figures(self, chars_per_sec: float) -> dict:
        progress = self.progress()
        eta = self.elapsed * (1 - progress) / progress if progress > 0 else math.inf
        return {"step": self.step, "epoch": self.epochs_done(), "train_loss": self.train_loss(),
                "chars_per_sec": chars_per_sec, "lr": self.schedule.lr_at(self.step),
                "elapsed": self.elapsed, "eta": eta, "progress": progress}

    @torch.no_grad()
    def evaluate(self) -> float:
        """The mean validation loss (in a torchrun job, each rank's streams summed over all)."""
        self.model.eval()
        s = self.val_streams
        hidden = self.model.init_state(s.batch_size, self.device)
        total = torch.zeros((), device=self.device, dtype=torch.float64)
        for i in range(s.windows if s.batch_size else 0):
            x, y = s.tensors(i, self.device)
            with self.runner.autocast():
                logits, hidden = self.model(x, hidden)
            total += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum")
        self.model.train()
        return self.world.sum(total).item() / (s.windows * s.streams * s.seq_len)

    def _evaluate_and_save(self, chars_per_sec: float) -> None:
        began = self.clock()
        record = self._figures(chars_per_sec)
        val_loss = self.evaluate()  # run with the weights after the last update
        evaluated = self.clock() - began
        for loss in (record["train_loss"], val_loss):  # not max(): max(3.0, nan) is 3.0
            self._check_divergence(loss)
        best = self.schedule.observe(val_loss)
        record.update(val_loss=val_loss, val_bpc=val_loss / LN2, best=best,
                      threads=self.governor.threads)
        del record["progress"], record["eta"]
        self.since_eval = []
        self.evaluations += 1
        state = self.state_dict()
        if self.world.writes:
            with self._saving():
                if best:
                    checkpoint.save_weights(self.run, self.model, val_loss)
                    checkpoint.write_config(self.run, self.config_dict())
                checkpoint.save_state(self.run, state)
                checkpoint.append_metrics(self.run, record)
            self.reporter.evaluation(record)
            if self.board is not None:
                for name in ("train_loss", "val_loss", "val_bpc", "lr", "chars_per_sec"):
                    self.board.add_scalar(name, record[name], self.step)
            if self.cfg.sample_every and self.evaluations % self.cfg.sample_every == 0:
                text = self.sample()
                with self._saving():
                    checkpoint.append_sample(self.run, self.step, text)
                self.reporter.sample(self.step, text)
                if self.board is not None:
                    self.board.add_text("sample", "    " + text.replace("\n", "\n    "),
                                        self.step)  # indented: shown as it is, not as markdown
        s = self.val_streams
        self.timing.evaluation(s.windows * s.streams * s.seq_len, evaluated,
                               self.clock() - began)

    def _check_plan(self) -> None:
        """Once, early in a time-budget run: measure the run's own speed against its plan's,
        and plan the rest of the budget again if the end would be off by more than the margin
        (autosize.replan). Recorded in config.json at once, so --resume follows it exactly. In
        a torchrun job rank 0 decides, and the others take its plan."""
        plan, t = self.setup.plan, self.timing
        # (in a torchrun job by the step alone: the ranks' clocks differ, their steps do not)
        elapsed = 0.0 if self.world.distributed else self.elapsed
        # (a torchrun job's ranks all count the same steps, but time them apart)
        timed = math.inf if self.world.distributed else t.seconds
        if plan is None or not plan.check_due(self.step, elapsed, t.steps, timed):
            return
        if self.world.writes:
            per_step = t.seconds / t.steps
            # no evaluation timed yet: the plan's, as much off as its training speed was
            planned = self.train_streams.streams * self.train_streams.seq_len / plan.chars_per_sec
            per_eval = (t.pause_seconds / t.evals if t.evals else
                        plan.eval_chars / plan.eval_chars_per_sec * per_step / planned)
            new = autosize.replan(plan, self.step, self.elapsed, per_step, per_eval,
                                  user_eval_every=self.cfg.eval_every is not None)
        if self.world.distributed:
            new = Plan.from_dict(self.world.broadcast_json(asdict(new) if self.world.writes
                                                           else None))
        self.setup.plan = new
        if self.world.writes:
            with self._saving():
                checkpoint.write_config(self.run, self.config_dict())
        if new.replanned:
            self.setup.total_steps = self.schedule.total_steps = new.steps
            self.schedule.bend_at, self.schedule.first_total = new.checked_at, new.first_steps
            speed = t.chars / max(t.seconds, 1e-9)
            self.reporter.say(
                f"planned again at step {self.step}: this run trains at {speed:,.0f} chars/s, "
                f"not the {plan.chars_per_sec:,.0f} planned, so {new.steps:,} steps fill the "
                f"{plan.seconds:g} s budget instead of {plan.steps:,}")

    @torch.no_grad()
    def sample(self, length: int = SAMPLE_CHARS) -> str:
        """A short sample of the model as it is now, by the numpy sampler (a CPU copy of the
        weights), with its own generator: the training's random numbers are not touched."""
        from charrnn.sample import generate

        started = time.monotonic()
        generator = torch.Generator().manual_seed((self.cfg.seed + self.step) % SEEDS)
        text = "".join(generate(self.model, self.vocab, "", SampleConfig(length=length),
                                generator))
        self.model.train()  # generate put it in eval mode
        self.sample_seconds += time.monotonic() - started
        return text

    def _sane(self, loss: float) -> bool:
        """Not NaN, and not far worse than guessing uniformly."""
        return math.isfinite(loss) and loss <= 2 * math.log(len(self.vocab)) + 2

    def _check_divergence(self, loss: float, weights: bool = False) -> None:
        """Stop on a NaN or exploding loss (or, with `weights`, NaN weights: the last update
        may have made them after the loss was computed), before anything reaches a checkpoint."""
        finite = not weights or all(bool(torch.isfinite(p).all())
                                    for p in self.model.parameters())
        if self._sane(loss) and finite:
            return
        shown = f"{loss:.4g}" if finite else "NaN weights"
        raise CharrnnError(
            f"training diverged at step {self.step} (loss {shown}); the last good checkpoint in "
            f"{self.run} is kept; try a lower --lr (it was {self.cfg.lr:g}) or a smaller "
            f"--grad-clip (it was {self.cfg.grad_clip:g})")

    def _install_signal_handlers(self):
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        # SIGHUP: a closed terminal or ssh session saves like Ctrl-C and `kill`
        stops = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP")
                                                   else [])
        previous = {sig: signal.getsignal(sig) for sig in stops}

        def handler(signum, frame):
            if self.stop_signal is not None:
                if self.world.distributed:
                    # torchrun passes the terminal's Ctrl-C on, so every rank sees it twice; it
                    # kills its processes itself if they outlast its grace period (30 s)
                    return
                raise KeyboardInterrupt  # a second Ctrl-C: stop now, unsaved
            self.interrupt(signum)
            then = ("every process stops at the same step" if self.world.distributed
                    else "press Ctrl-C again to quit without saving")
            self.reporter.say(f"stopping: saving a checkpoint at the end of this step ({then})")

        for sig in previous:
            signal.signal(sig, handler)

        def restore():
            for sig, h in previous.items():
                signal.signal(sig, h)
        return restore


class Throughput:
    """Characters per second over the last few seconds, not the whole run."""

    def __init__(self, chars_per_step: int, step: int, clock=time.monotonic,
                 window: float = 5.0):
        self.chars_per_step, self.window = chars_per_step, window
        self.t, self.step = clock(), step
        self.last = 0.0  # the rate over the last whole window

    def rate(self, step: int, now: float) -> float:
        if step == self.step:  # (just after a new window began)
            return self.last
        rate = (step - self.step) * self.chars_per_step / max(now - self.t, 1e-9)
        if now - self.t >= self.window:
            self.t, self.step, self.last = now, step, rate
        return rate
