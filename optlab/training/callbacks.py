"""Callbacks: small objects a run calls at fixed hooks, as in Keras.

`Callback` is the base: every hook a no-op, a subclass overrides what it needs. A run
(optlab/training/record.py) calls `on_epoch_end` of each of its callbacks after every finished
epoch; one that returns a status (`completed`, `pruned`) ends the run with it. Early stopping,
the best checkpoint, targets, step probes and a search's pruning (optlab/jobs/tune/trial.py)
are callbacks; the loop knows nothing of Optuna.
"""

from __future__ import annotations

import io
import logging
import math
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import torch

from optlab import curvature, noise
from optlab.config.identity import targets
from optlab.init import distinct_units
from optlab.metrics import lower_is_better
from optlab.store.files import atomic_write, load_checkpoint


class Callback:
    """A hook into a run's epochs; each hook does nothing unless a subclass says otherwise."""

    def measure(self, run, epoch: int, model: torch.nn.Module, data, lr: float) -> dict[str, float]:
        """Measurements of the weights after epoch `epoch`, logged with its row (TensorBoard)."""
        return {}

    def columns(self, run, epoch: int) -> dict[str, float | None]:
        """More columns of epoch `epoch`'s row of history.csv (and its curves; None: an empty cell)."""
        return {}

    def on_epoch_end(self, run, epoch: int, row: dict) -> str | None:
        """After epoch `epoch` finished with `row` (its history.csv row): a status to end the
        run with, or None to go on."""
        return None

    def state_dict(self) -> dict:
        """What last.pt keeps of this callback, so that a resumed run goes on as if never stopped."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Take back what `state_dict` returned."""


class Target(Callback):
    """Where a run first met `target.val_loss` / `target.val_acc` (its steps, examples and time
    to it), and, with `target.stop`, the end of the run there."""

    def __init__(self, target, logger: logging.Logger):
        self.target, self.logger = target, logger
        self.reached: dict | None = None

    def on_epoch_end(self, run, epoch: int, row: dict) -> str | None:
        if self.reached is None and meets(self.target, row):
            self.reached = {"steps_to_target": run.step, "examples_to_target": run.seen,
                            "time_to_target": row["elapsed_s"], "epoch_to_target": epoch}
            self.logger.info("reached the target at epoch %d (step %d, %d examples)", epoch, run.step, run.seen)
        return "completed" if self.reached and self.target.stop else None

    def state_dict(self) -> dict:
        return {"reached": self.reached}

    def load_state_dict(self, state: dict) -> None:
        self.reached = state.get("reached")


class Diagnostics(Callback):
    """What a run measures of its weights after an epoch: distinct units per layer (with
    `diagnostics`), the Hessian every `curvature.every` epochs and the gradient noise scale
    every `noise.every` (optlab/curvature.py, optlab/noise.py)."""

    def __init__(self, cfg):
        self.cfg = cfg

    def measure(self, run, epoch: int, model: torch.nn.Module, data, lr: float) -> dict[str, float]:
        cfg = self.cfg
        units = distinct_units(model) if cfg.diagnostics else []
        extra = {f"init/distinct_units/layer{i}": u for i, u in enumerate(units, 1)}
        if cfg.noise.every and epoch % cfg.noise.every == 0:
            extra.update({f"noise/{k}": v for k, v in noise.measure(model, data, cfg.noise.samples).items()})
        if cfg.curvature.every and epoch % cfg.curvature.every == 0:
            measured = curvature.measure(model, curvature.subset_loss(model, data, cfg.curvature.samples),
                                         cfg.curvature, lr, exact=False)
            extra.update({f"curvature/{k}": v for k, v in measured.items()})
        return extra


def meets(target, row: dict) -> bool:
    """Whether an epoch's row meets every target set (val_loss at or below, val_acc at or above)."""
    watched = targets(target)
    return bool(watched) and all(row[k] <= v if k == "val_loss" else row[k] >= v for k, v in watched.items())


def snapshot(state):
    """A copy that later in-place updates cannot touch: tensors cloned, dicts and lists rebuilt.

    Tuples (RNG states, Adam's betas) are immutable and hold no tensors, so they are shared.
    Several times cheaper than copy.deepcopy on state dicts, which matters once per epoch.
    """
    if isinstance(state, torch.Tensor):
        return state.detach().clone()
    if isinstance(state, dict):
        return {k: snapshot(v) for k, v in state.items()}
    if isinstance(state, list):
        return [snapshot(v) for v in state]
    return state


class Checkpoint(Callback):
    """Keep the best state in memory; write best.pt and last.pt.

    "Best" is the early-stopping rule's verdict when early stopping watches the run (so the
    weights it restores, tests and measures are the ones in best.pt), else the lowest loss or
    highest accuracy by `monitor`. Each file holds the state (model, optimizer, scheduler,
    epoch, step, RNG states) and the run's config. The best state is copied in memory when it
    improves, so the training loop never waits on the disk; both files are written atomically.
    """

    def __init__(self, folder: Path, config: dict, monitor: str = "val_loss"):
        self.folder, self.config, self.monitor = folder, config, monitor
        self.sign = 1 if lower_is_better(monitor) else -1  # compare as "lower is better" (optlab/metrics.py)
        self.best_value, self.best_epoch, self.best_state = math.inf, 0, None
        self.written: dict | None = None  # the state best.pt holds, once this process wrote it

    def keep(self, epoch: int, metrics: dict, state: Callable[[], dict], improved: bool | None = None) -> None:
        """Keep epoch `epoch` as the best if `improved` (early stopping's verdict), or else if it
        beats the best by `monitor`; `state()` gives a snapshot of the run's state then."""
        if improved is None:
            improved = self.sign * metrics[self.monitor] < self.best_value
        if improved:
            self.best_value, self.best_epoch = self.sign * metrics[self.monitor], epoch
            self.best_state = state()

    def best(self, last: dict) -> dict:
        """The best state; `last` when no epoch was better than nothing (a NaN loss, or none
        watched yet)."""
        return last if self.best_state is None else self.best_state

    def save(self, last: dict) -> None:
        """Write best.pt and `last` as last.pt (also during training, so a killed run can resume).
        A state is serialized once: best.pt is not written again while the best is the one it
        holds, and when the last epoch is the best, both files get the same bytes."""
        best = self.best(last)
        files = ([] if best is self.written else [("best.pt", best)]) + [("last.pt", last)]
        serialized: dict[int, bytes] = {}
        for name, state in files:
            if id(state) not in serialized:
                buffer = io.BytesIO()
                torch.save({**state, "config": self.config}, buffer)
                serialized[id(state)] = buffer.getvalue()
            atomic_write(self.folder / name, lambda f, data=serialized[id(state)]: f.write(data))
        self.written = best

    def state_dict(self) -> dict:
        return {"best_value": self.best_value, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict) -> None:
        """Continue a run: the best value and epoch, and the best state from best.pt."""
        self.best_value, self.best_epoch = state["best_value"], state["best_epoch"]
        best = load_checkpoint(self.folder / "best.pt")
        self.best_state = {k: v for k, v in best.items() if k != "config"} if self.best_epoch else None


def tested_checkpoint(cfg) -> str:
    """The file that holds the weights a run is tested (and its curvature measured) on: the
    best epoch's, or the last finished epoch's when early stopping does not restore the best."""
    stopping = cfg.early_stopping
    return "last.pt" if stopping.monitor and not stopping.restore_best else "best.pt"


class EarlyStopping(Callback):
    """Stop when `monitor` stops improving, with Keras's EarlyStopping semantics.

    An epoch improves on the best so far when it beats it by more than `min_delta`
    (absolute; lower is better for a loss, higher for an accuracy). Epochs before
    `start_epoch` are not watched. Training stops once `patience` epochs in a row have not
    improved. The verdict is also the checkpoint's: its best state is the epoch this calls
    best, which the run restores at the end with `restore_best` (see `tested_checkpoint`).
    """

    def __init__(
        self,
        monitor: str,
        patience: int = 0,
        min_delta: float = 0.0,
        restore_best: bool = True,
        start_epoch: int = 0,
    ):
        self.monitor, self.patience, self.min_delta = monitor, patience, abs(min_delta)
        self.restore_best, self.start_epoch = restore_best, start_epoch
        self.sign = 1 if lower_is_better(monitor) else -1  # minimize losses, maximize accuracies
        self.best, self.best_epoch = None, 0
        self.wait, self.stopped_epoch, self.stop = 0, 0, False

    def judge(self, epoch: int, metrics: dict) -> bool:
        """Whether `epoch` (counted from 1; Keras's `epoch > 0` and `start_from_epoch` count
        from 0) is the best so far; it may decide to stop (`stop`)."""
        if epoch - 1 < self.start_epoch:
            return False
        current = self.sign * metrics[self.monitor]
        self.wait += 1
        if self.best is None or current + self.min_delta < self.best:
            self.best, self.best_epoch, self.wait = current, epoch, 0
            return True
        if self.wait >= self.patience and epoch > 1:
            self.stopped_epoch, self.stop = epoch, True
        return False

    def on_epoch_end(self, run, epoch: int, row: dict) -> str | None:
        if not self.stop:
            return None
        run.logger.info("early stopping at epoch %d: %s has not improved since epoch %d",
                        epoch, self.monitor, self.best_epoch)
        return "completed"

    STATE = ("best", "best_epoch", "wait", "stopped_epoch", "stop")

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.STATE}

    def load_state_dict(self, state: dict) -> None:
        for k in self.STATE:
            setattr(self, k, state[k])


class StepProbe(Callback):
    """‖∇L‖ (`step/grad_norm`) and ‖Δθ‖/‖θ‖ (`step/update_ratio`) every `every` steps (steps 1,
    1 + every, ...; 0: never), of one model, or of each of `members` stacked models (tensors
    with a leading member dimension).

    θ is the parameter vector before the step and ∇L the gradient the step was given. A
    measured step costs a copy of θ, a subtraction and two norm kernels over every parameter
    tensor; values stay on the device and are read once per epoch. On a small model on a CPU
    that is ~20% of a step, so the default measures every 16th: under 5% of throughput.
    """

    def __init__(self, params: list[torch.Tensor], every: int, members: int = 0):
        self.params, self.every, self.members = params, every, members
        self.before = [p.detach().clone() for p in params] if every else []
        self.norms: list[torch.Tensor] = []  # per measured step: ‖g‖, ‖θ‖, then ‖Δθ‖ per tensor
        self.measured: list[bool] = []  # per step of this epoch

    def _norms(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.members:
            return [torch.linalg.vector_norm(t.flatten(1), dim=1) for t in tensors]
        return list(torch._foreach_norm(tensors))

    def before_step(self, step: int) -> None:
        self.measuring = bool(self.every) and (step - 1) % self.every == 0
        self.measured.append(self.measuring)
        if self.measuring:
            torch._foreach_copy_(self.before, [p.detach() for p in self.params])
            self.norms.append(torch.stack(self._norms([*(p.grad for p in self.params), *self.before])))

    def after_step(self) -> None:
        if self.measuring:
            torch._foreach_sub_(self.before, [p.detach() for p in self.params])  # −Δθ
            self.norms.append(torch.stack(self._norms(self.before)))

    def epoch(self) -> dict[str, list]:
        """This epoch's values by TensorBoard tag: at each step a number (a list of one per
        member when stacked), or None where not measured; then start afresh."""
        if not any(self.measured):
            self.measured = []
            return {}
        norms = torch.cat(self.norms).view(-1, 3, len(self.params), *([self.members] if self.members else []))
        grads, before, delta = torch.linalg.vector_norm(norms, dim=2).unbind(dim=1)
        values = iter(zip(grads.tolist(), (delta / before).tolist()))
        rows = [next(values) if measured else (None, None) for measured in self.measured]
        self.norms, self.measured = [], []
        return dict(zip(("step/grad_norm", "step/update_ratio"), map(list, zip(*rows))))


class StopOnSignal:
    """Ctrl-C (SIGINT) or SIGTERM (a cluster preempting the job) asks training to stop after the
    current step, so that the run can save itself; a second Ctrl-C stops at once.

    A context manager around the loop: `signal` is the signal received, or None.
    """

    def __init__(self):
        self.signal: int | None = None
        self.previous: dict[int, object] = {}

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():  # handlers live there only
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C
        self.signal = signum
        logging.getLogger("optlab").warning(
            "%s: stopping after this step and saving the run (Ctrl-C again to quit at once)",
            signal.Signals(signum).name,
        )

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
