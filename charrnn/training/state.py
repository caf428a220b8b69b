"""The training state a run saves in latest.pt and --resume restores: weights, optimizer,
position, schedule, hidden states, loss scaler, random-number states (in a torchrun job, every
rank's, gathered), and the threads it ran on. Tensors and plain values only."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import torch

from charrnn import checkpoint
from charrnn.config import SEEDS
from charrnn.errors import CharrnnError


def rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def capture(t) -> dict:
    """The state of trainer `t` (a collective in a torchrun job: every rank's hidden states
    and random number generators are gathered; rank 0 writes them)."""
    t.read_losses()
    rng = rng_state(t.device)
    state = {
        "format_version": checkpoint.FORMAT_VERSION,
        "model": checkpoint.state_dict_cpu(t.model),
        "optimizer": t.runner.optimizer.state_dict(),
        "step": t.step, "epoch": t.epoch, "window": t.window,
        "elapsed": t.elapsed,
        "schedule": t.schedule.state_dict(),
        "since_eval": torch.tensor(t.since_eval, dtype=torch.float64),
        # every stream's, in stream order: a state from N ranks resumes on any number
        "hidden": [t.world.gather_streams(h.detach()).cpu() for h in t.hidden],
        "scaler": t.runner.scaler.state_dict(),
        "rng": rng,
        "threads": t.governor.threads,
    }
    if t.world.distributed:
        ranks = {name: t.world.gather_host(x) for name, x in rng.items()}
        state["world_size"] = t.world.size
        state["rank_rng"] = [{name: ranks[name][r] for name in rng}
                             for r in range(1, t.world.size)]
    return state


def restore(t, s: dict) -> None:
    """Put trainer `t` where state `s` left it."""
    try:
        t.runner.optimizer.load_state_dict(s["optimizer"])
        t.step, t.epoch, t.window = int(s["step"]), int(s["epoch"]), int(s["window"])
        t.elapsed = float(s["elapsed"])
        t.schedule.load_state_dict(s["schedule"])
        t.since_eval = [float(v) for v in s["since_eval"].tolist()]
        streams = t.train_streams
        expected = [(h.shape[0], streams.batch, *h.shape[2:]) for h in t.hidden]
        if [tuple(h.shape) for h in s["hidden"]] != expected:
            raise ValueError("hidden state shape")
        rows = slice(streams.first, streams.first + streams.held)  # this rank's share
        t.hidden = tuple(h[:, rows].to(t.device) for h in s["hidden"])
        if s.get("scaler"):
            t.runner.scaler.load_state_dict(s["scaler"])
        rank, size = t.world.rank, int(s.get("world_size", 1))
        if rank == 0:
            set_rng_state(s["rng"], t.device)
        elif size == t.world.size:
            set_rng_state(s["rank_rng"][rank - 1], t.device)
        else:  # re-divided among more ranks than saved: a fresh generator for each
            torch.manual_seed((t.cfg.seed + rank + t.step) % SEEDS)
        t.first_step = t.step + 1
    except (KeyError, ValueError, TypeError, RuntimeError, AttributeError) as e:
        raise CharrnnError(f"{t.run / checkpoint.LATEST} does not fit this run ({e}); "
                           "it cannot be resumed") from None


def config_of(t) -> dict:
    """What config.json records of trainer `t`'s run: all that rebuilds and continues it."""
    c = t.setup.corpus
    plan = t.setup.plan
    return {
        "model": t.model.config.to_dict(),
        "train": asdict(t.cfg),
        "plan": asdict(plan) if plan else None,
        "choice": t.setup.choice,
        "vocab": list(t.vocab.chars),
        "corpus": {"name": c.name, "path": str(c.path.resolve()), "digest": c.digest,
                   # a file or folder by its whole path: --resume may run from elsewhere
                   "source": (str(Path(c.source).expanduser().resolve())
                              if c.source and Path(c.source).expanduser().exists()
                              else c.source),
                   "characters": int(len(c.ids))},
        "best_val_loss": None if math.isinf(t.best_val_loss) else t.best_val_loss,
        "step": t.step,
        # the speed the run measured of itself (the plan's is the one it was planned with)
        "speed": ({"train": t.measured.train, "eval": t.measured.eval}
                  if t.measured else None),
    }
