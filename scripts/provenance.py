"""The line every benchmark prints first: the machine, the torch version, the commit and the date
its figures come from, so that a figure copied into the docs carries them."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _commit() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True).stdout.strip()
        return head + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def stamp() -> str:
    import torch

    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    threads = os.environ.get("OMP_NUM_THREADS", "default")
    return (f"machine: {_cpu()}, {os.cpu_count()} cores{gpu}; torch {torch.__version__} "
            f"({torch.get_num_threads()} threads, OMP_NUM_THREADS={threads}); commit {_commit()}; "
            f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
