"""Results files: every figure in docs/ comes from one of these, and each says where it came
from (the machine, the date, the commit, the command line)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    """The CPU (and GPU, if any) in words, as the docs name a machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    words = f"{os.cpu_count()}-core {cpu}"
    try:
        import torch

        if torch.cuda.is_available():
            words += f", {torch.cuda.get_device_name()}"
        words += f", torch {torch.__version__}"
    except ImportError:
        pass
    return words


def commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "charrnn", "benchmarks",
                                ":!benchmarks/results"],  # (the results are not the code)
                               cwd=ROOT, text=True, capture_output=True).stdout.strip()
        return head + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_results(path: Path, results: dict) -> None:
    """Write `results` with where they came from, as JSON."""
    record = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "commit": commit(),
              "command": " ".join(["python", *map(str, sys.argv)]).replace(str(ROOT) + "/", ""),
              **results}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")
