"""One training step, as the loop and the calibration both run it: forward, loss, backward,
clip, optimizer step (fused AdamW on CUDA), with loss scaling for float16. Nothing in it waits
on the device: the loss stays a tensor."""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F

from charrnn.checkpoint import parameter_count
from charrnn.config import ModelConfig, TrainConfig
from charrnn.device import amp_dtype, name_of
from charrnn.engine.distributed import SINGLE, World
from charrnn.errors import CharrnnError
from charrnn.model import CharRNN, State, detach


@contextmanager
def memory_checked(mc: ModelConfig, device: torch.device, batch: int | None = None,
                   seq_len: int | None = None):
    """A model too large for the device's memory (to build, or to train at a batch of `batch`
    windows of `seq_len`) is one clear line, not an allocator's traceback."""
    try:
        yield
    except (MemoryError, RuntimeError) as e:
        said = str(e).lower()
        if not isinstance(e, MemoryError) and "memory" not in said and "alloc" not in said:
            raise
        training = f" (to train at a batch of {batch} x {seq_len})" if batch else ""
        smaller = ("choose a smaller --hidden-size, --layers or --batch-size" if batch else
                   "choose a smaller --hidden-size or --layers")
        raise CharrnnError(f"a {mc.layers}x{mc.hidden_size} {mc.model} "
                           f"({parameter_count(mc):,} parameters) does not fit in the memory of "
                           f"{name_of(device)}{training}; {smaller}, or leave them out to have "
                           "them chosen") from None


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
