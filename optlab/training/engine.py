"""The engine contract: what the training loop (optlab/training/loop.py) and a run's start
(optlab/training/lifecycle.py) ask of whatever holds the numbers and does the arithmetic.

Two engines implement it: `Single` (optlab/training/single.py: one model and its torch
optimizer, every model, optimizer and precision) and `Stacked` (optlab/training/stacked.py: K
members of a vectorized sweep as one model). Each run keeps its own record (`Run`,
optlab/training/record.py); the engine serves every run by its index k.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from optlab.training.callbacks import StopOnSignal
from optlab.training.record import Epoch


@runtime_checkable
class Engine(Protocol):
    device: torch.device  # where the numbers live
    initial: list[dict]  # each member's weights at step 0: init.pt, and the origin of a landscape's slices

    def train_epoch(self, stop: StopOnSignal) -> list[Epoch] | None:
        """One epoch of steps, an `Epoch` per member; None once `stop` noted a signal (the
        epoch's steps are dropped: last.pt resumes before them)."""

    def evaluate(self) -> list[tuple[float, float]]:
        """(val_loss, val_acc) per member, in eval mode."""

    def schedule(self, val_losses: list[float]) -> None:
        """Step the learning-rate schedules that step once an epoch."""

    def member(self, k: int) -> torch.nn.Module:
        """Member k's weights as an ordinary model (for diagnostics and the record)."""

    def freeze(self, k: int) -> None:
        """Member k's run ended: it trains no more."""

    def numbers(self, k: int) -> dict:
        """Member k's part of last.pt: model, optimizer, scheduler, scaler, RNG streams."""

    def load(self, k: int, saved: dict) -> None:
        """Take member k's numbers back from a last.pt (a resume)."""
