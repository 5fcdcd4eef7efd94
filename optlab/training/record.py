"""One run's record as it trains: its history, logs, checkpoints, early stopping and outcome.

The loop (optlab/training/loop.py) hands every run its epoch. A single run is one `Run`; a vectorized
group (optlab/training/stacked.py) is one `Run` per member, so each rule here serves both: when an epoch
counts as diverged, which epoch is best, when to stop, what last.pt holds.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from optlab.config.identity import targets
from optlab.store.logs import RunLog
from optlab.training.callbacks import (
    Callback,
    Checkpoint,
    Diagnostics,
    EarlyStopping,
    Target,
    snapshot,
)


@dataclass
class Epoch:
    """One member's share of an epoch of steps, as numbers on the host."""

    first_step: int
    columns: dict[str, list[float]]  # TensorBoard tag → its value at each step
    times: list[float]  # wall-clock time of each step
    train_loss: float  # mean over the epoch's examples, as they trained
    train_acc: float
    count: int  # examples seen


class Run:
    """A run's state beyond the numbers its engine holds: where it stands (epoch, step, examples
    seen, clocks), its history and logs, best state and early stopping, and how it ended.

    `numbers` returns the engine's part of the run's state (model, optimizer, scheduler, RNG):
    with this object's part (`state`), it is what last.pt holds.
    """

    def __init__(self, cfg: DictConfig, run_dir: Path, numbers: Callable[[], dict],
                 logger: logging.Logger | None = None, asked: DictConfig | None = None,
                 callbacks: Sequence[Callback] = ()):
        self.cfg, self.dir, self.numbers = cfg, run_dir, numbers
        self.asked = cfg if asked is None else asked  # as the command gave it (`optimizer.lr=find`)
        self.logger = logger or logging.getLogger("optlab")
        self.history: list[dict] = []  # a row per finished epoch
        watch = cfg.early_stopping.monitor
        config = OmegaConf.to_container(cfg, enum_to_str=True)  # in each checkpoint, and the curves' text
        self.checkpoint = Checkpoint(run_dir / "checkpoints", config, watch or "val_loss")
        self.stopper = EarlyStopping(**cfg.early_stopping) if watch else None
        self.target = Target(cfg.target, self.logger)
        # called in this order after every epoch; the first status ends the run
        self.callbacks = [Diagnostics(cfg), *[self.stopper] * bool(watch), self.target, *callbacks]
        self.own = len(self.callbacks) - len(callbacks)  # those after are the caller's: last.pt keeps their state
        self.epoch = self.step = self.seen = 0
        self.first_loss: float | None = None
        self.status, self.diverged_step = "running", None
        self.started = time.perf_counter()
        self.trained = self.waited = 0.0  # seconds trained and in all, before this process
        self.log: RunLog | None = None
        self.resume_point: dict | None = None

    @property
    def active(self) -> bool:
        return self.status == "running"

    def state(self) -> dict:
        """What last.pt holds: the end of the last finished epoch."""
        return {
            **self.numbers(),
            "epoch": self.epoch,
            "step": self.step,
            "loop": {
                "seen": self.seen,
                "first_loss": self.first_loss,
                "train_time": self.train_time,  # timings go on across a resume
                "wall_time": time.perf_counter() - self.started,
                "history": tuple(self.history),  # rows are never changed: snapshot shares them
                "checkpoint": self.checkpoint.state_dict(),
                "stopper": self.stopper.state_dict() if self.stopper else None,
                "reached": self.target.reached,
                "callbacks": [c.state_dict() for c in self.callbacks[self.own:]],
            },
        }

    def load_state_dict(self, saved: dict) -> None:
        """The run's part of last.pt (the engine loads the rest)."""
        loop = saved["loop"]
        self.epoch, self.step, self.seen, self.first_loss = saved["epoch"], saved["step"], loop["seen"], loop["first_loss"]
        self.trained, self.waited = loop["train_time"], loop["wall_time"]
        self.history[:] = list(loop["history"])
        self.target.load_state_dict(loop)
        self.checkpoint.load_state_dict(loop["checkpoint"])
        if self.stopper:
            self.stopper.load_state_dict(loop["stopper"])
        for callback, state in zip(self.callbacks[self.own:], loop.get("callbacks", ())):
            callback.load_state_dict(state)

    def begin(self) -> None:
        """Open the logs (only once the run can go on) and start the clocks."""
        self.log = RunLog(self.dir, self.checkpoint.config, self.history, self.logger)
        self.started = time.perf_counter() - self.waited
        self.clock = time.perf_counter() - self.trained
        self.resume_point = snapshot(self.state())
        self.saved_at = time.monotonic()

    @property
    def train_time(self) -> float:
        return time.perf_counter() - self.clock if self.active else self.trained

    def end_epoch(self, epoch: int, steps: Epoch, val_loss: float, val_acc: float,
                  model: torch.nn.Module, data) -> None:
        """Record a finished epoch: divergence, history and curves, best state, early stopping."""
        self.log.steps(steps.first_step, steps.columns, steps.times)
        losses = steps.columns["step/loss"]
        self.first_loss = losses[0] if self.first_loss is None else self.first_loss
        self.diverged_step = diverged_at(steps.first_step, losses, self.first_loss, self.cfg.diverge_threshold,
                                         self.logger)
        self.epoch, self.step, self.seen = epoch, self.step + len(losses), self.seen + steps.count
        if self.diverged_step is not None:  # NaN, Inf or blown up: nothing more to learn from this run
            return self.end("diverged")
        row = {
            "epoch": epoch,
            "train_loss": steps.train_loss,
            "train_acc": steps.train_acc,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": steps.columns["step/lr"][-1],
            "step": self.step,
            "examples": self.seen,
            "elapsed_s": self.train_time,
        }
        columns = {k: v for c in self.callbacks for k, v in c.columns(self, epoch).items()}
        row.update(columns)
        measuring = time.perf_counter()
        extra = {k: v for c in self.callbacks for k, v in c.measure(self, epoch, model, data, row["lr"]).items()}
        self.log.epoch(row, {**extra, **{f"epoch/{k}": v for k, v in columns.items() if v is not None}})
        self.clock += time.perf_counter() - measuring  # measuring is not training: the train clock skips it
        improved = self.stopper.judge(epoch, row) if self.stopper else None  # early stopping's best is the best
        # every callback sees every epoch (a target met as early stopping ends the run still counts),
        # before the state last.pt keeps is taken; the first status ends the run
        statuses = [status for c in self.callbacks if (status := c.on_epoch_end(self, epoch, row)) is not None]
        point = functools.cache(lambda: snapshot(self.state()))  # one copy serves both
        self.checkpoint.keep(epoch, row, point, improved)
        self.resume_point = point()
        if time.monotonic() - self.saved_at > self.cfg.checkpoint_every_s:  # what a kill -9 can lose
            self.checkpoint.save(self.resume_point)
            self.saved_at = time.monotonic()
        if statuses:
            self.end(statuses[0])

    def to_target(self) -> dict:
        """What metrics.json records of the target: where the run first met it (None each when
        it never did); nothing when no target is set."""
        if not targets(self.cfg.target):
            return {}
        return self.target.reached or dict.fromkeys(("steps_to_target", "examples_to_target", "time_to_target",
                                              "epoch_to_target"))

    def end(self, status: str) -> None:
        """The run is over (its last finished epoch is `resume_point`): stop its clock."""
        if self.active:
            self.trained = self.train_time
            self.status = status


def diverged_at(first_step: int, losses: list[float], first_loss: float, threshold: float,
                logger: logging.Logger) -> int | None:
    """The step (`first_step` is that of `losses[0]`) whose loss counts as diverged, logged, or
    None: a loss that is NaN or infinite, or above `threshold` × the size of the run's first loss.
    The rule of every run, on a network or on a surface (whose loss may be negative)."""
    limit = threshold * abs(first_loss)
    bad = next((i for i, v in enumerate(losses) if not (math.isfinite(v) and v <= limit)), None)
    if bad is None:
        return None
    logger.warning("diverged at step %d: loss %s (first loss %.4g, diverge_threshold=%g)",
                   first_step + bad, losses[bad], first_loss, threshold)
    return first_step + bad


# "no better than chance": a tested accuracy under this fraction of the way from chance to 1
CHANCE_MARGIN = 0.1


def lesson(cfg: DictConfig, metrics: dict, classes: int | None = None, first_loss: float | None = None) -> str | None:
    """What a run that diverged, or that ended no better than chance (with `classes` classes),
    should try next; None for any other run. A divergence, or a training loss that rose above
    its `first_loss`, comes of a rate too large for the batch (or the surface): the hint is a
    tenth of it; a loss that barely fell may come of a rate too small as well. The range test is
    named where it suits the optimizer (optlab/training/range_test.py). A surface whose loss fell to -∞ has
    no minimum to reach: no rate helps there."""
    from optlab.optim import UNSUITED

    lr, status = cfg.optimizer.get("lr"), metrics["status"]
    if not isinstance(lr, (int, float)) or isinstance(lr, bool):
        return None
    chance = 1 / classes if classes else None
    if status == "diverged" and metrics.get("final_loss") == -math.inf:
        return "diverged to -inf: this surface falls without end (a saddle's escape), whatever the rate"
    if status == "diverged":
        outcome = "diverged"
    elif chance and status == "completed" and metrics["test_acc"] <= chance + CHANCE_MARGIN * (1 - chance):
        outcome = f"no better than chance ({chance:.2g}: test acc {metrics['test_acc']:.4f})"
    else:
        return None
    network = cfg.get("surface") is None
    where = f"at batch {cfg.batch_size}" if network else "on this surface"
    find = " or optimizer.lr=find" if network and cfg.optimizer.get("_target_") not in UNSUITED else ""
    final = metrics.get("final_train_loss")
    if status != "diverged" and first_loss and isinstance(final, float) and 0.9 * first_loss <= final <= first_loss:
        return (f"{outcome}: the training loss barely fell ({first_loss:.4g} → {final:.4g}): lr {lr:g} may be too "
                f"small {where} (or too large): try optimizer.lr={lr * 10:g}, {lr / 10:g}{find}")
    return f"{outcome}: lr {lr:g} is likely too large {where}: try optimizer.lr={lr / 10:g}{find}"
