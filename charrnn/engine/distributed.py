"""Training on several processes: PyTorch's DistributedDataParallel, launched by torchrun.

    torchrun --standalone --nproc-per-node 4 -m charrnn train CORPUS ...   # one machine, 4 GPUs
    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 8 --master-addr HOST0 \\
        --master-port 29500 -m charrnn train CORPUS ...        # and --node-rank 1 on the other

torchrun starts the processes and tells each its RANK, WORLD_SIZE and LOCAL_RANK; `join` makes
them one process group: NCCL between GPUs (process i on GPU LOCAL_RANK), gloo between CPUs. The
batch's contiguous streams are divided among the ranks in equal, contiguous shares; each rank
keeps its streams' hidden states, so truncated backpropagation through time is exactly one
process's. DDP averages the gradients, which for equal shares is the gradient of the whole
batch. Rank 0 alone writes and speaks; the others are silent.

What a rank knows alone (a Ctrl-C, its clock, a loss it saw explode) is agreed on every step
over a small gloo group of host tensors, overlapping the next step, so every rank stops at the
same step. A rank that dies breaks the others'
next collective: they end with one line, at once where the connection closes and at most
TIMEOUT_ENV seconds (600 by default) where a peer hangs without dying.
"""

from __future__ import annotations

import gc
import json
import os
import shlex
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from charrnn.device import pick_device
from charrnn.errors import CharrnnError, first_line

TIMEOUT_ENV = "CHARRNN_DIST_TIMEOUT"  # seconds a rank waits for the others before giving up
DEFAULT_TIMEOUT = 600  # as NCCL's own default


def _whole(name: str, default: str | None = None) -> int:
    """A launcher's environment variable as a whole number, or one clear line."""
    value = os.environ.get(name, default)
    if value is None:
        raise CharrnnError(f"WORLD_SIZE={os.environ.get('WORLD_SIZE')} is set but {name} is "
                           "not: torchrun sets both; start charrnn with torchrun, or unset "
                           "WORLD_SIZE")
    if not value.strip().isdigit():
        raise CharrnnError(f"{name}={value!r} must be a whole number (torchrun sets it); unset "
                           "it, or start charrnn with torchrun")
    return int(value)


def launched() -> bool:
    """Whether torchrun (or another launcher that sets WORLD_SIZE) started this process (a
    WORLD_SIZE that is not a number is not a launch: `join` says so)."""
    size = os.environ.get("WORLD_SIZE", "1").strip() or "1"
    return not size.isdigit() or int(size) > 1


def rank_label() -> str:
    """' (rank R)' in a torchrun job, so an error line says which process it came from (none
    where the job's variables are themselves the mistake)."""
    rank, size = (os.environ.get(k, "").strip() for k in ("RANK", "WORLD_SIZE"))
    return f" (rank {rank})" if rank.isdigit() and size.isdigit() and int(size) > 1 else ""


def timeout_seconds() -> float:
    value = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT))
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < 1e7:
        raise CharrnnError(f"{TIMEOUT_ENV}={value!r} must be a number of seconds above 0")
    return seconds


@dataclass(frozen=True)
class World:
    """This process's place among the processes training one model (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device | None = None  # the device torchrun's placement gives this rank
    control: object = None  # the gloo group for host tensors (None: the default group)

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_writer(self) -> bool:
        """Rank 0 alone writes the run directory and the display."""
        return self.rank == 0

    def label(self) -> str:
        return f"{self.size} processes ({dist.get_backend()})" if self.distributed else ""

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module a training step calls: in a job, the model in DistributedDataParallel
        (its construction copies rank 0's weights to every rank; backward averages the
        gradients over the ranks, bucket by bucket, while it goes on)."""
        if not self.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(
            model, device_ids=[self.device] if self.device.type == "cuda" else None)

    # -----------------------------------------------------------------------------------------
    # Dividing the streams

    def share(self, streams: int, equal: bool = True) -> tuple[int, int]:
        """This rank's contiguous share [start, stop) of `streams` streams. Training needs equal
        shares (DDP's average is then the whole batch's gradient); validation sums, so any."""
        if equal and streams % self.size:
            raise CharrnnError(f"a batch of {streams} streams cannot be divided equally among "
                               f"{self.size} processes; give a --batch-size that is a multiple "
                               f"of {self.size}")
        return streams * self.rank // self.size, streams * (self.rank + 1) // self.size

    # -----------------------------------------------------------------------------------------
    # Collectives (each one a no-op for a single process)

    def sum_later(self, tensor: torch.Tensor):
        """Start summing `tensor` over the ranks in place; the handle's wait() ends it (on a GPU
        it orders the stream, so the host never waits for it)."""
        if not self.distributed:
            return None
        return dist.all_reduce(tensor, async_op=True)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(tensor)
        return tensor

    def agree(self, values: list[int]) -> list[int]:
        """The largest of each value over the ranks (a host all-reduce)."""
        return self.agree_later(values)() if self.distributed else values

    def agree_later(self, values: list[int]):
        """agree, started now; the function it returns waits for the result (by then, usually
        long there: a training step has run meanwhile)."""
        t = torch.tensor(values, dtype=torch.int64)
        work = dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.control, async_op=True)

        def result() -> list[int]:
            work.wait()
            return t.tolist()
        return result

    def gather_streams(self, tensor: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """Every rank's share of a per-stream tensor, joined along `dim` in rank order."""
        if not self.distributed:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim)

    def gather_host(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's copy of a host tensor of the same shape on all ranks (RNG states)."""
        if not self.distributed:
            return [tensor]
        parts = [torch.empty_like(tensor) for _ in range(self.size)]
        dist.all_gather(parts, tensor.contiguous(), group=self.control)
        return parts

    def broadcast_bytes(self, data: bytes | None) -> bytes:
        """Rank 0's bytes on every rank: the run's files for ranks on machines that do not share
        its folder. Bytes, not pickles: each rank parses them as rank 0 does, safely."""
        if not self.distributed:
            return data
        n = torch.tensor([len(data) if self.rank == 0 else 0], dtype=torch.int64)
        dist.broadcast(n, 0, group=self.control)
        buf = (torch.frombuffer(bytearray(data), dtype=torch.uint8) if self.rank == 0
               else torch.empty(int(n), dtype=torch.uint8))
        if len(buf):
            dist.broadcast(buf, 0, group=self.control)
        return data if self.rank == 0 else buf.numpy().tobytes()

    def broadcast_json(self, value=None):
        """Rank 0's JSON value on every rank (what rank 0 decided alone, e.g. by timing)."""
        if not self.distributed:
            return value
        data = json.dumps(value).encode() if self.rank == 0 else None
        return json.loads(self.broadcast_bytes(data))

    @contextmanager
    def one_at_a_time(self, folder):
        """The processes of one machine one after another (a file lock in `folder`): the first
        downloads or encodes a corpus, and the others find it in the cache."""
        lock = None
        if self.distributed:
            from filelock import FileLock

            try:
                folder.mkdir(parents=True, exist_ok=True)
                lock = FileLock(folder / ".load.lock")
                lock.acquire()
            except OSError:  # a folder that cannot hold a lock: each process on its own
                lock = None
        try:
            yield
        finally:
            if lock is not None:
                lock.release()

    def close(self, clean: bool = True) -> None:
        """Leave the process group: together after a clean end (no rank tears it down while
        another still talks); not at all after a failure, when a peer may be gone and the
        teardown could wait for it (the process ends at once instead)."""
        if not (self.distributed and dist.is_initialized() and clean):
            return
        gc.collect()  # DDP's reducer and the gradient buckets hold the group: free them first
        dist.barrier(group=self.control)
        dist.destroy_process_group()


SINGLE = World()


def join(device_name: str) -> World:
    """Join the torchrun job this process belongs to, or return SINGLE outside one."""
    if not launched():
        return SINGLE
    size = _whole("WORLD_SIZE")
    rank, local_rank = _whole("RANK"), _whole("LOCAL_RANK", "0")
    if not rank < size:
        raise CharrnnError(f"RANK={rank} is not below WORLD_SIZE={size}; start charrnn with "
                           "torchrun, which sets both")
    timeout = timedelta(seconds=timeout_seconds())
    cuda = device_name != "cpu" and torch.cuda.is_available()
    if device_name not in ("auto", "cpu", "cuda"):
        raise CharrnnError(f"--device {device_name} does not go with torchrun: each process takes "
                           "the GPU its LOCAL_RANK names (--device cuda or auto), or the CPU "
                           "(--device cpu)")
    if device_name == "cuda":
        pick_device(device_name)  # one there, or the same line as outside torchrun
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise CharrnnError(f"torchrun started {os.environ.get('LOCAL_WORLD_SIZE', '?')} "
                               f"processes on this machine but it has "
                               f"{torch.cuda.device_count()} GPU(s); give --nproc-per-node "
                               "at most that many")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    try:
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout,
                                device_id=device if cuda else None)
        control = dist.new_group(backend="gloo", timeout=timeout) if cuda else None
    except (RuntimeError, ValueError) as e:
        raise CharrnnError(f"could not join the other processes of this torchrun job "
                           f"({first_line(e)})") from None
    return World(rank, size, local_rank, device, control)


@contextmanager
def guard(world: World):
    """A collective that fails because another rank stopped, died or hung ends this rank with
    one line; the run keeps its last checkpoint (rank 0 writes each one whole, atomically)."""
    where = {"run": "RUN"}  # the caller names the run once it is known
    try:
        yield where
    except Exception as e:  # noqa: BLE001 - sorted below: only a lost peer is ours to explain
        if not world.distributed or not is_lost_peer(e):
            raise
        raise CharrnnError(
            f"lost contact with the other processes of this torchrun job ({reason(e)}): "
            "one of them stopped or died, and its own message says why; the run keeps its last "
            f"checkpoint: continue it with `{resume_command(where['run'], world.size)}`") from None


def resume_command(run, processes: int = 1) -> str:
    """The command that continues `run` on as many processes as last trained it."""
    launcher = f"torchrun --nproc-per-node {processes} -m charrnn" if processes > 1 else "charrnn"
    return f"{launcher} train --resume {shlex.quote(str(run))}"


def reason(e: BaseException) -> str:
    """What a failed collective says, without the backend's source paths and advice."""
    text = str(e)
    if "Application timeout" in text:  # gloo's word for a peer silent past the timeout
        return "timed out"
    for said in ("Connection reset by peer", "Connection closed by peer", "Broken pipe",
                 "timed out", "Timed out"):
        if said in text:
            return said[0].lower() + said[1:]
    return first_line(e)[:120]


def is_lost_peer(e: BaseException) -> bool:
    """Whether `e` is a collective failing because another rank stopped, died or hung."""
    if isinstance(e, dist.DistError):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and any(
        word in text for word in ("gloo", "Gloo", "NCCL", "Connection closed", "Connection reset",
                                  "Broken pipe", "timed out", "Timed out",
                                  "Application timeout", "pair closure"))
