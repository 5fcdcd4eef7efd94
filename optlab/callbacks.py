"""Callbacks: small objects the training loop calls at fixed hooks, as in Keras."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch

from optlab.files import atomic_write


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


class Checkpoint:
    """Keep the best state by `monitor` (lower is better); write best.pt and last.pt at the end.

    Each file holds the state (model, optimizer, scheduler, epoch, step, RNG states) and the
    run's config.
    The best state is copied in memory when it improves, so the training loop never waits on
    the disk; both files are written atomically (temporary file, then rename).
    """

    def __init__(self, folder: Path, config: dict, monitor: str = "val_loss"):
        self.folder, self.config, self.monitor = folder, config, monitor
        self.best_value, self.best_epoch, self.best_state = math.inf, 0, None

    def on_epoch_end(self, epoch: int, metrics: dict, state: Callable[[], dict]) -> None:
        if metrics[self.monitor] < self.best_value:
            self.best_value, self.best_epoch = metrics[self.monitor], epoch
            self.best_state = snapshot(state())

    def on_train_end(self, state: Callable[[], dict]) -> None:
        last = state()
        if self.best_state is None:  # no epoch beat +inf (a NaN loss): the last state is the best
            self.best_state = last
        for name, saved in (("best.pt", self.best_state), ("last.pt", last)):
            saved = {**saved, "config": self.config}
            atomic_write(self.folder / name, lambda f, s=saved: torch.save(s, f))
