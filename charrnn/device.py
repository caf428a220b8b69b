"""Which device a command runs on, and what that device is called in caches and messages."""

from __future__ import annotations

import functools
import platform

import torch

from charrnn.errors import CharrnnError


def pick_device(name: str) -> torch.device:
    """`auto` takes CUDA, then MPS, then the CPU; a named device must exist here."""
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
    """The reduced precision --amp runs in: bfloat16 where the device has it, else float16."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        return torch.bfloat16
    raise CharrnnError(f"--amp is not supported on {device.type}; leave it out")


def name_of(device: torch.device, threads: int | None = None) -> str:
    """A name for the hardware behind `device`, e.g. 'NVIDIA H200' or 'Intel Xeon, 2 threads'
    (the threads torch runs on now, unless given)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"Apple MPS ({platform.machine()})"
    n = threads or torch.get_num_threads()
    return f"{cpu_name()}, {n} thread{'s' if n != 1 else ''}"


@functools.cache
def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def synchronize(device: torch.device) -> None:
    """Wait for queued work on `device` (for timing; training itself never waits)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
