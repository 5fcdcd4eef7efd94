"""How many CPU threads torch uses for a run's kernels (`threads`).

torch's default, a thread per core, is slowest for what optlab mostly trains: a small model's
kernels are too short to split, and its threads spend the step waking each other.
`threads=auto` picks, once per run, from the run alone:

- one thread when a training step is under `SMALL` floating-point operations;
- else the cores this job may use: its share of the machine under the joblib launcher (which
  `share` sets), and no more than `OMP_NUM_THREADS` where that is set (torch's convention).

The machine's load never enters the choice: the count decides the order kernels sum in, so a
run whose count followed the load would differ in its last bits from the same run an hour
later. A busy machine gets a line instead: beside other busy processes torch's threads spin
against them and a run slows several times, and `threads=1` is the cure the user chooses.

What the measurement shows (scripts/bench_threads.py, docs/benchmarks.md): on 2 cores beside
one busy process, one thread trains 2.2 to 4.3 times faster than two, for every size; on a quiet
machine two threads are as fast or faster for a step of 32 MFLOP and more (the default MLP, the
CNN), and one and two are even below 20.
"""

from __future__ import annotations

import copy
import logging
import os
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

log = logging.getLogger("optlab")

SMALL = 2e7  # FLOPs of a training step (forward and backward) below which one thread is fastest

_share: int | None = None  # the cores of this job (None: every core this process may run on)


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def share(jobs: int) -> int:
    """`jobs` processes run at once (the joblib launcher): each job's share of the cores."""
    global _share
    _share = max(1, cores() // max(1, min(jobs, cores())))
    return _share


def for_run(cfg, model: torch.nn.Module, split, batch_size: int, copies: int = 1) -> int:
    """`choose` for a run's model (a group's, `copies` members) on batches of its training split;
    called once torch.optim has been imported (FlopCounterMode's first use pays no import then)."""
    example = split.get(torch.arange(min(batch_size, len(split)), device=split.y.device))[0]
    return choose(cfg.get("threads", "auto"), model, example, copies)


def choose(setting: str | int, model: torch.nn.Module, batch: torch.Tensor, copies: int = 1) -> int:
    """Set and return torch's thread count for training `copies` of `model` on batches like
    `batch` (a stacked group: one per member), as `setting` (`threads`) asks."""
    if setting != "auto":
        threads = int(setting)
        why = "as set"
    else:
        flops = copies * step_flops(model, batch)
        mine = min(_share or cores(), _omp_limit() or cores())
        threads = 1 if flops < SMALL else mine
        why = f"auto: {flops / 1e6:,.0f} MFLOP a step, {mine} cores for this job"
        if threads > 1 and batch.device.type == "cpu":
            _say_if_busy(threads)
    torch.set_num_threads(threads)
    log.debug("threads: %d (%s)", threads, why)
    return threads


def _say_if_busy(threads: int) -> None:
    """One line when other processes keep cores busy beyond those of this sweep's other jobs:
    there `threads=1` may train several times faster (bench_threads.py)."""
    others = busy_elsewhere()
    if others > cores() - (_share or cores()):
        log.info("threads: %d of %d cores are busy with other processes; threads=1 may train several times "
                 "faster here (its numbers differ from threads=%d's in the last bits)", others, cores(), threads)


def _omp_limit() -> int | None:
    """`OMP_NUM_THREADS` as a number >= 1, or None where it is unset or not one."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) >= 1 else None


def step_flops(model: torch.nn.Module, batch: torch.Tensor) -> float:
    """A training step's floating-point operations: 3 × a forward pass's (backward costs about
    two), counted by torch's FlopCounterMode on meta tensors (nothing is computed), once per
    architecture and batch shape in a process (a sweep's runs share theirs)."""
    if batch.device.type != "cpu":
        return float("inf")  # a GPU run's CPU threads only feed the device
    key = (repr(model), tuple(batch.shape), batch.dtype)
    if key not in _FLOPS:
        twin = copy.deepcopy(model).to("meta")  # the same layers, no numbers
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            twin(torch.empty(batch.shape, dtype=batch.dtype, device="meta"))
        _FLOPS[key] = 3.0 * counter.get_total_flops()
    return _FLOPS[key]


_FLOPS: dict[tuple, float] = {}


def busy_elsewhere(samples: int = 4) -> int:
    """Cores that other processes keep busy now: runnable tasks in /proc/loadavg less this
    process's own running threads (torch's pool may still spin from the last kernel), the fewest
    of a few readings 1 ms apart (Linux; 0 elsewhere)."""
    try:
        counts = []
        for _ in range(samples):
            with open("/proc/loadavg") as f:
                running = int(f.read().split()[3].split("/")[0])
            counts.append(running - _running_here())
            time.sleep(0.001)
        return max(0, min(counts))
    except (OSError, ValueError, IndexError):
        return 0


def _running_here() -> int:
    """This process's threads that are running or runnable (state R in /proc/self/task/*/stat)."""
    count = 0
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/stat") as f:
                count += f.read().rpartition(")")[2].split()[0] == "R"
        except OSError:  # the thread ended meanwhile
            continue
    return count
