"""The training loop: TBPTT over contiguous streams, AdamW, warm-up and cosine decay, clipping,
periodic validation, best and latest checkpoints, early stopping, and exact resume.

The hot path (one window) does: copy a (B, T) window to the device, forward, loss, backward,
clip, optimizer step. Nothing in it waits on the device: the running loss stays a tensor until
the display asks for it, at most a few times a second.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from charrnn import checkpoint, corpus as corpora
from charrnn.batches import Streams, fit
from charrnn.config import OPTIMIZERS, TrainConfig  # noqa: F401 - re-exported
from charrnn.errors import CharrnnError
from charrnn.model import CharRNN, ModelConfig, State, detach
from charrnn.progress import LN2, Reporter
from charrnn.vocab import Vocab

def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CharrnnError("--device cuda asked for, but PyTorch sees no CUDA GPU here; "
                           "use --device cpu (or auto)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise CharrnnError("--device mps asked for, but this machine has no MPS; use --device cpu")
    return device


def amp_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        return torch.bfloat16
    raise CharrnnError(f"--amp is not supported on {device.type}; leave it out")


def lr_at(cfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warm-up over warmup_steps, then cosine decay to lr * min_lr_frac by progress 1."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * cosine)


def make_optimizer(model: CharRNN, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = list(model.parameters())
    if cfg.optimizer == "adamw":
        # decay the weight matrices only, not biases (nanoGPT's rule)
        decay = [p for p in params if p.dim() >= 2]
        rest = [p for p in params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": cfg.weight_decay},
                  {"params": rest, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99))
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.99))
    return torch.optim.RMSprop(params, lr=cfg.lr, alpha=0.95)


@dataclass
class Outcome:
    run: Path
    step: int
    best_val_loss: float
    stopped_by: str  # "epochs" | "max_steps" | "time" | "patience" | "interrupted"
    signal: int | None = None
    losses: list = field(default_factory=list)  # (step, train loss) of every step


def rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def extend_vocab(model: CharRNN, old: Vocab, new: Vocab) -> CharRNN:
    """A copy of `model` over vocabulary `new`: shared characters keep their rows."""
    mc = ModelConfig(**{**model.config.to_dict(), "vocab_size": len(new)})
    grown = CharRNN(mc)
    old_index = {ch: i for i, ch in enumerate(old.chars)}
    pairs = [(j, old_index[ch]) for j, ch in enumerate(new.chars) if ch in old_index]
    to_rows = torch.tensor([j for j, _ in pairs], dtype=torch.long)
    from_rows = torch.tensor([i for _, i in pairs], dtype=torch.long)
    with torch.no_grad():
        source = model.state_dict()
        for name, tensor in grown.state_dict().items():
            if name in ("embed.weight", "head.weight", "head.bias"):
                tensor[to_rows] = source[name][from_rows]
            else:
                tensor.copy_(source[name])
    return grown


class Trainer:
    """One run: set up from a corpus (new run, --init-from) or a run directory (--resume)."""

    def __init__(self, corpus_arg: str | None, run: Path | None, cfg: TrainConfig,
                 model_cfg: dict | None = None, *, resume: bool = False,
                 init_from: Path | None = None, overwrite: bool = False,
                 reporter: Reporter | None = None, overrides: dict | None = None):
        self.reporter = reporter or Reporter()
        self.resume_state = None
        self.lock = None
        try:
            self._setup(corpus_arg, run, cfg, model_cfg, resume, init_from, overwrite,
                        overrides)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        if self.lock is not None:
            self.lock.__exit__(None, None, None)
            self.lock = None

    def _setup(self, corpus_arg, run, cfg, model_cfg, resume, init_from, overwrite, overrides):
        stored = None
        if resume:
            self.run = Path(run)
            stored = checkpoint.read_config(run)
            self.lock = checkpoint.RunLock(self.run).__enter__()
            self.resume_state = checkpoint.load_state(run)
            try:
                cfg = TrainConfig.from_dict({**stored["train"], **(overrides or {})})
            except TypeError as e:
                raise CharrnnError(f"{self.run / checkpoint.CONFIG} is corrupted ({e}); "
                                   "it cannot be resumed") from None
            corpus_arg = corpus_arg or stored["corpus"].get("path")
        self.cfg = cfg
        self.device = pick_device(cfg.device)
        torch.manual_seed(cfg.seed)

        self.corpus = corpora.load(corpus_arg, cfg.encoding, cfg.errors,
                                   sniff_binary=cfg.encoding == "utf-8")
        vocab, ids = self.corpus.vocab, self.corpus.ids
        if len(ids) < 2:
            raise CharrnnError(f"corpus {self.corpus.path} has {len(ids)} character; charrnn "
                               "needs at least 2 to learn anything (give a longer text)")

        if resume:
            if stored["corpus"]["digest"] != self.corpus.digest:
                raise CharrnnError(f"the corpus {self.corpus.path} changed since {self.run} "
                                   "started, so the run cannot resume exactly; start a new run")
            mc, vocab = checkpoint.model_config(stored, self.run)
            self.model = CharRNN(mc)
            checkpoint.load_weights_into(self.model, self.resume_state["model"],
                                         self.run / checkpoint.LATEST)
        else:
            # everything that can be wrong is checked before the run directory is touched
            if init_from is not None:
                base, base_vocab, _ = checkpoint.load(init_from)
                vocab = Vocab(tuple(sorted(set(base_vocab.chars) | set(vocab.chars))))
            else:
                mc = ModelConfig(vocab_size=len(vocab), **(model_cfg or {}))
            self.run = Path(run) if run is not None else Path("runs") / self.corpus.name
            if checkpoint.is_run(self.run) and not overwrite:
                raise CharrnnError(f"{self.run} already holds a run; pass --resume {self.run} to "
                                   "continue it, --overwrite to replace it, or --out elsewhere")
            self.lock = checkpoint.RunLock(self.run).__enter__()
            checkpoint.clear_run(self.run)  # nothing of an earlier run may mix with this one
            if init_from is not None:
                self.model = extend_vocab(base, base_vocab, vocab)
                self.reporter.say(f"starting from the weights of {init_from}")
            else:
                self.model = CharRNN(mc)
        self.vocab = vocab
        if vocab != self.corpus.vocab:  # the model's ids differ from the corpus's own
            index = {ch: i for i, ch in enumerate(vocab.chars)}
            lut = np.array([index[ch] for ch in self.corpus.vocab.chars], dtype=np.int64)
            ids = lut[ids].astype(vocab.dtype)
        self.model.to(self.device)

        train_ids, val_ids = corpora.split(ids, cfg.val_frac)
        if len(val_ids) < 2 or len(train_ids) < 2:
            if cfg.val_frac > 0:
                self.reporter.warn("the corpus is too small for a validation split; "
                                   "training and validating on all of it")
            train_ids = val_ids = ids
        batch, seq, warning = fit(len(train_ids), cfg.batch_size, cfg.seq_len)
        if warning and not resume:
            self.reporter.warn(warning)
        self.train_streams = Streams(train_ids, batch, seq).to(self.device)
        eval_ids = val_ids[: cfg.eval_chars]
        eb, et, _ = fit(len(eval_ids), 64, seq)
        self.val_streams = Streams(eval_ids, eb, et).to(self.device)
        self.optimizer = make_optimizer(self.model, cfg)
        self.amp_dtype = amp_dtype(self.device) if cfg.amp else torch.float32
        # loss scaling only for float16, whose range is too narrow for small gradients
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=self.amp_dtype == torch.float16)

        self.step = 0
        self.window = 0
        self.epoch = 0
        self.elapsed = 0.0
        self.best_val_loss = math.inf
        self.evals_since_best = 0
        self.loss_sum = torch.zeros((), device=self.device)
        self.loss_count = 0
        self.hidden: State = self.model.init_state(batch, self.device)
        self.losses: list[tuple[int, float]] | None = None
        if self.resume_state is not None:
            self._restore(self.resume_state)
        self.stop_signal: int | None = None

    # -----------------------------------------------------------------------------------------
    # Checkpoints

    def config_dict(self) -> dict:
        c = self.corpus
        return {
            "model": self.model.config.to_dict(),
            "train": asdict(self.cfg),
            "vocab": list(self.vocab.chars),
            "corpus": {"name": c.name, "path": str(c.path.resolve()), "digest": c.digest,
                       "characters": int(len(c.ids))},
            "best_val_loss": None if math.isinf(self.best_val_loss) else self.best_val_loss,
            "step": self.step,
        }

    def state_dict(self) -> dict:
        return {
            "format_version": checkpoint.FORMAT_VERSION,
            "model": checkpoint.state_dict_cpu(self.model),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step, "epoch": self.epoch, "window": self.window,
            "elapsed": self.elapsed,
            "best_val_loss": self.best_val_loss, "evals_since_best": self.evals_since_best,
            "loss_sum": self.loss_sum.detach().cpu(), "loss_count": self.loss_count,
            "hidden": [h.detach().cpu() for h in self.hidden],
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(self.device),
        }

    def _restore(self, s: dict) -> None:
        try:
            self.optimizer.load_state_dict(s["optimizer"])
            self.step, self.epoch, self.window = int(s["step"]), int(s["epoch"]), int(s["window"])
            self.elapsed = float(s["elapsed"])
            self.best_val_loss = float(s["best_val_loss"])
            self.evals_since_best = int(s["evals_since_best"])
            self.loss_sum = s["loss_sum"].to(self.device)
            self.loss_count = int(s["loss_count"])
            hidden = tuple(h.to(self.device) for h in s["hidden"])
            if [h.shape for h in hidden] != [h.shape for h in self.hidden]:
                raise ValueError("hidden state shape")
            self.hidden = hidden
            if s.get("scaler"):
                self.scaler.load_state_dict(s["scaler"])
            set_rng_state(s["rng"], self.device)
        except (KeyError, ValueError, TypeError, RuntimeError) as e:
            raise CharrnnError(f"{self.run / checkpoint.LATEST} does not fit this run ({e}); "
                               "it cannot be resumed") from None

    def save_latest(self) -> None:
        checkpoint.save_state(self.run, self.state_dict())

    # -----------------------------------------------------------------------------------------
    # The loop

    def epochs_done(self) -> float:
        return self.epoch + self.window / self.train_streams.windows

    def progress(self) -> float:
        """How far through the run, 0..1, by whichever stop condition is nearest."""
        c, budget = self.cfg, self.cfg.time_budget
        fracs = [self.step / c.max_steps if c.max_steps else 0.0,
                 self.epochs_done() / c.epochs if c.epochs else 0.0,
                 self.elapsed / budget if budget else 0.0]
        return max(fracs)

    def stop_reason(self) -> str | None:
        c = self.cfg
        if self.stop_signal is not None:
            return "interrupted"
        if c.max_steps and self.step >= c.max_steps:
            return "max_steps"
        if c.epochs and self.epochs_done() >= c.epochs:
            return "epochs"
        if c.time_budget and self.elapsed >= c.time_budget:
            return "time"
        if c.patience and self.evals_since_best >= c.patience:
            return "patience"
        return None

    def interrupt(self, signum: int = signal.SIGINT) -> None:
        """Ask the loop to save and stop at the end of the current step."""
        self.stop_signal = signum

    @torch.no_grad()
    def evaluate(self) -> float:
        self.model.eval()
        s = self.val_streams
        hidden = self.model.init_state(s.batch_size, self.device)
        total = torch.zeros((), device=self.device, dtype=torch.float64)
        for i in range(s.windows):
            x, y = s.tensors(i, self.device)
            with self.autocast():
                logits, hidden = self.model(x, hidden)
            total += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum")
        self.model.train()
        return total.item() / (s.windows * s.batch_size * s.seq_len)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.cfg.amp)

    def train_step(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> torch.Tensor:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with self.autocast():
            logits, hidden = self.model(x, self.hidden)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.hidden = detach(hidden)
        return loss.detach()

    def run_loop(self, on_step=None) -> Outcome:
        """Train until a stop condition; release the run directory however it ends."""
        try:
            return self._loop(on_step)
        finally:
            self.reporter.finish()  # a live display must not outlive the run, even on an error
            self.release()

    def _loop(self, on_step) -> Outcome:
        if self.resume_state is None:
            self.save_latest()  # a run killed before its first evaluation still resumes
            checkpoint.write_config(self.run, self.config_dict())
        else:
            checkpoint.trim_metrics(self.run, self.step)
        s, cfg = self.train_streams, self.cfg
        chars_per_step = s.batch_size * s.seq_len
        n_params = sum(p.numel() for p in self.model.parameters())
        mc = self.model.config
        self.reporter.start(
            f"training {mc.layers}x{mc.hidden_size} {mc.model} ({n_params:,} parameters) on "
            f"{self.corpus.path} ({len(self.corpus.ids):,} characters, {len(self.vocab)} distinct)"
            f" with {self.device}; batch {s.batch_size} x {s.seq_len}; run in {self.run}")
        self.model.train()
        self.losses = []
        restore = self._install_signal_handlers()
        started = time.monotonic() - self.elapsed
        rate_t, rate_step = time.monotonic(), self.step
        chars_per_sec = 0.0
        last_show = 0.0
        reason = None
        try:
            while (reason := self.stop_reason()) is None:
                if self.window >= s.windows:  # a new epoch: streams restart, so does the state
                    self.epoch, self.window = self.epoch + 1, 0
                    self.hidden = self.model.init_state(s.batch_size, self.device)
                    continue
                x, y = s.tensors(self.window, self.device)
                loss = self.train_step(x, y, lr_at(cfg, self.step, self.progress()))
                self.loss_sum += loss
                self.loss_count += 1
                self.step += 1
                self.window += 1
                self.elapsed = time.monotonic() - started
                if on_step is not None:
                    self.losses.append((self.step, loss.item()))
                    on_step(self)
                now = time.monotonic()
                chars_per_sec = (self.step - rate_step) * chars_per_step / max(now - rate_t, 1e-9)
                if now - rate_t >= 5.0:  # a rate over the last few seconds, not the whole run
                    rate_t, rate_step = now, self.step
                if now - last_show >= 0.25:
                    last_show = now
                    figures = self._figures(chars_per_sec)
                    self._check_divergence(figures["train_loss"])
                    self.reporter.step(figures)
                if self.step % cfg.eval_every == 0:
                    self._evaluate_and_save(chars_per_sec)
        finally:
            restore()
        if reason == "interrupted":
            # save where we are, but do not evaluate: a resumed run then matches an
            # uninterrupted one evaluation for evaluation
            self._check_divergence((self.loss_sum / max(self.loss_count, 1)).item(),
                                   weights=True)
            self.save_latest()
            self.reporter.say(f"interrupted at step {self.step}: saved {self.run}; "
                              f"continue with `charrnn train --resume {self.run}`")
        elif self.loss_count:
            self._evaluate_and_save(chars_per_sec)
        return Outcome(self.run, self.step, self.best_val_loss, reason, self.stop_signal,
                       self.losses)

    def _figures(self, chars_per_sec: float) -> dict:
        progress = self.progress()
        eta = self.elapsed * (1 - progress) / progress if progress > 0 else math.inf
        return {"step": self.step,
                "epoch": self.epochs_done(),
                "train_loss": (self.loss_sum / max(self.loss_count, 1)).item(),
                "chars_per_sec": chars_per_sec, "lr": lr_at(self.cfg, self.step, progress),
                "elapsed": self.elapsed, "eta": eta, "progress": progress}

    def _evaluate_and_save(self, chars_per_sec: float) -> None:
        record = self._figures(chars_per_sec)
        val_loss = self.evaluate()  # run with the weights after the last update
        for loss in (record["train_loss"], val_loss):  # not max(): max(3.0, nan) is 3.0
            self._check_divergence(loss)
        best = val_loss < self.best_val_loss
        if best:
            self.best_val_loss, self.evals_since_best = val_loss, 0
        elif self.progress() >= 0.5:
            # a plateau counts only once the learning rate is decaying: in the first half of
            # a long run, the loss often stalls at the high rate and improves again later
            self.evals_since_best += 1
        record.update(val_loss=val_loss, val_bpc=val_loss / LN2, best=best)
        del record["progress"], record["eta"]
        self.loss_sum.zero_()
        self.loss_count = 0
        if best:
            checkpoint.save_weights(self.run, self.model, val_loss)
            checkpoint.write_config(self.run, self.config_dict())
        self.save_latest()
        checkpoint.append_metrics(self.run, record)
        self.reporter.evaluation(record)

    def _check_divergence(self, loss: float, weights: bool = False) -> None:
        """Stop on a NaN or exploding loss (or, with `weights`, NaN weights: the last update
        may have made them after the loss was computed), before anything reaches a checkpoint."""
        limit = 2 * math.log(len(self.vocab)) + 2  # far worse than guessing uniformly
        finite = not weights or all(bool(torch.isfinite(p).all())
                                    for p in self.model.parameters())
        if math.isfinite(loss) and loss <= limit and finite:
            return
        shown = f"{loss:.4g}" if finite else "NaN weights"
        raise CharrnnError(
            f"training diverged at step {self.step} (loss {shown}); the last good checkpoint in "
            f"{self.run} is kept; try a lower --lr (it was {self.cfg.lr:g}) or a smaller "
            f"--grad-clip (it was {self.cfg.grad_clip:g})")

    def _install_signal_handlers(self):
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum, frame):
            if self.stop_signal is not None:  # a second Ctrl-C: stop now, unsaved
                raise KeyboardInterrupt
            self.interrupt(signum)
            self.reporter.say("stopping: saving a checkpoint at the end of this step "
                              "(press Ctrl-C again to quit without saving)")

        for sig in previous:
            signal.signal(sig, handler)

        def restore():
            for sig, h in previous.items():
                signal.signal(sig, h)
        return restore
