"""What a run saves to be resumed: the training state latest.pt holds and --resume restores
(weights, optimizer, position, schedule, hidden states, loss scaler, random-number states, in a
torchrun job every rank's, gathered; the threads it ran on; what the next re-plan reads),
tensors and plain values only; and what config.json records."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from charrnn import checkpoint
from charrnn.config import SEEDS
from charrnn.engine.distributed import World
from charrnn.errors import CharrnnError
from charrnn.model import CharRNN


def rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


@dataclass
class Position:
    """Where a run stands in its text and its time."""

    step: int
    epoch: int
    window: int
    elapsed: float  # seconds of training, over every resume


@dataclass
class Restored:
    """What a saved state puts back: the loop takes it into its own fields."""

    position: Position
    schedule: dict
    since_eval: list[float]
    hidden: tuple
    pacing: dict | None  # (none in a state of an older charrnn)


def capture(model: CharRNN, runner, world: World, hidden: tuple, position: Position,
            schedule: dict, since_eval: list[float], threads: int, pacing: dict) -> dict:
    """The state latest.pt holds (a collective in a torchrun job: every rank's hidden states
    and random number generators are gathered; rank 0 writes them). Tensors and plain values."""
    device = next(model.parameters()).device
    rng = rng_state(device)
    saved = {
        "format_version": checkpoint.FORMAT_VERSION,
        "model": checkpoint.state_dict_cpu(model),
        "optimizer": runner.optimizer.state_dict(),
        "step": position.step, "epoch": position.epoch, "window": position.window,
        "elapsed": position.elapsed,
        "schedule": schedule,
        "since_eval": torch.tensor(since_eval, dtype=torch.float64),
        # every stream's, in stream order: a state from N ranks resumes on any number
        "hidden": [world.gather_streams(h.detach()).cpu() for h in hidden],
        "scaler": runner.scaler.state_dict(),
        "rng": rng,
        "threads": threads,
        "pacing": pacing,
    }
    if world.distributed:
        ranks = {name: world.gather_host(x) for name, x in rng.items()}
        saved["world_size"] = world.size
        saved["rank_rng"] = [{name: ranks[name][r] for name in rng}
                             for r in range(1, world.size)]
    return saved


def restore(s: dict, runner, world: World, streams, hidden: tuple, device: torch.device,
            seed: int, run: Path) -> Restored:
    """Put the optimizer, the loss scaler and the random number generators where state `s`
    left them, and return the rest for the loop (`hidden`: the shapes the state must fit)."""
    try:
        runner.optimizer.load_state_dict(s["optimizer"])
        position = Position(int(s["step"]), int(s["epoch"]), int(s["window"]),
                            float(s["elapsed"]))
        since_eval = [float(v) for v in s["since_eval"].tolist()]
        expected = [(h.shape[0], streams.batch, *h.shape[2:]) for h in hidden]
        if [tuple(h.shape) for h in s["hidden"]] != expected:
            raise ValueError("hidden state shape")
        rows = slice(streams.first, streams.first + streams.held)  # this rank's share
        hidden = tuple(h[:, rows].to(device) for h in s["hidden"])
        if s.get("scaler"):
            runner.scaler.load_state_dict(s["scaler"])
        rank, size = world.rank, int(s.get("world_size", 1))
        if rank == 0:
            set_rng_state(s["rng"], device)
        elif size == world.size:
            set_rng_state(s["rank_rng"][rank - 1], device)
        else:  # re-divided among more ranks than saved: a fresh generator for each
            torch.manual_seed((seed + rank + position.step) % SEEDS)
        schedule = dict(s["schedule"])
        pacing = s.get("pacing")
        if pacing is not None:
            pacing = {"recent_steps": int(pacing["recent_steps"]),
                      "recent_seconds": float(pacing["recent_seconds"]),
                      "last_pause": float(pacing["last_pause"])}
    except (KeyError, ValueError, TypeError, RuntimeError, AttributeError) as e:
        raise CharrnnError(f"{run / checkpoint.LATEST} does not fit this run ({e}); "
                           "it cannot be resumed") from None
    return Restored(position, schedule, since_eval, hidden, pacing)


def config_record(setup, cfg, model: CharRNN, vocab, plan, best_val_loss: float, step: int,
                  measured) -> dict:
    """What config.json records of a run: all that rebuilds and continues it."""
    c = setup.corpus
    return {
        "model": model.config.to_dict(),
        "train": asdict(cfg),
        "plan": plan.to_dict() if plan else None,
        "choice": setup.choice,
        "vocab": list(vocab.chars),
        "corpus": {"name": c.name, "path": str(c.path.resolve()), "digest": c.digest,
                   # a file or folder by its whole path: --resume may run from elsewhere
                   "source": (str(Path(c.source).expanduser().resolve())
                              if c.source and Path(c.source).expanduser().exists()
                              else c.source),
                   "characters": int(len(c.ids))},
        "best_val_loss": None if math.isinf(best_val_loss) else best_val_loss,
        "step": step,
        # the speed the run measured of itself (the plan's is the one it was planned with)
        "speed": ({"train": measured.train, "eval": measured.eval} if measured else None),
    }
