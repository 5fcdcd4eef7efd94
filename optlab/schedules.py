"""Schedules torch has no ready class for, and how optlab builds and steps them.

Each `conf/scheduler/*.yaml` names a `_target_` and an `interval`: `epoch` schedules step
after every epoch (ReduceLROnPlateau with the validation loss), `step` schedules after every
optimizer step.
"""

from __future__ import annotations

import math

from omegaconf import DictConfig, OmegaConf
from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    ExponentialLR,
    LinearLR,
    ReduceLROnPlateau,
    SequentialLR,
)

from optlab.config.allowlist import construct


class Exponential(ExponentialLR):
    """The recitation's lr = lr0·e^(−k·t): ExponentialLR with gamma = e^(−k), stepped per iteration."""

    def __init__(self, optimizer: Optimizer, k: float):
        super().__init__(optimizer, gamma=math.exp(-k))


def warmup_cosine(
    optimizer: Optimizer,
    warmup_epochs: int,
    epochs: int,
    steps_per_epoch: int,
    start_factor: float = 0.01,
    eta_min: float = 0.0,
) -> SequentialLR:
    """Linear warm-up over `warmup_epochs`, then cosine annealing to `eta_min`, per step."""
    warmup = max(1, warmup_epochs * steps_per_epoch)
    total = max(warmup + 1, epochs * steps_per_epoch)
    return SequentialLR(
        optimizer,
        [
            LinearLR(optimizer, start_factor=start_factor, total_iters=warmup),
            CosineAnnealingLR(optimizer, T_max=total - warmup, eta_min=eta_min),
        ],
        milestones=[warmup],
    )


class Piecewise:
    """Hyperparameters set at epoch boundaries: `at = {epoch: {name: value}}` sets each of the
    optimizer's param groups' `name` (lr, momentum, eps, ...: any number but weight_decay, whose
    exempt parameters keep a group at 0) to `value` once epoch `epoch` has ended. The schedule population-based training finds (optlab/training/population.py),
    replayed as one run. Written here: torch's schedules scale the learning rate alone, and
    LambdaLR takes code, which a config cannot name safely."""

    def __init__(self, optimizer: Optimizer, at: dict | None):
        at = at or {}
        have = [n for n, v in optimizer.param_groups[0].items()  # not weight_decay: exempt groups keep 0
                if isinstance(v, (int, float)) and not isinstance(v, bool) and n != "weight_decay"]
        for epoch, values in at.items():
            missing = [name for name in values if name not in have]
            if missing:
                from optlab.errors import ConfigError

                raise ConfigError("scheduler.at", {epoch: dict(values)},
                                  f"numbers {type(optimizer).__name__} has: {', '.join(have)}")
        self.optimizer, self.at, self.last_epoch = optimizer, {int(e): dict(v) for e, v in at.items()}, 0

    def step(self) -> None:
        self.last_epoch += 1
        for group in self.optimizer.param_groups:
            group.update(self.at.get(self.last_epoch, {}))

    def state_dict(self) -> dict:
        return {"last_epoch": self.last_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.last_epoch = state["last_epoch"]


def build(cfg: DictConfig, optimizer: Optimizer, steps_per_epoch: int):
    """(scheduler, per_step) from a scheduler config; fills in `steps_per_epoch` if it asks."""
    target = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "interval"}
    extra = {"steps_per_epoch": steps_per_epoch} if "steps_per_epoch" in cfg else {}
    return construct("scheduler", target, optimizer=optimizer, **extra), cfg.interval == "step"


def step(scheduler, loss: float) -> None:
    """One step of a schedule: ReduceLROnPlateau watches `loss` (the validation loss; a
    surface's value), every other schedule only counts."""
    if isinstance(scheduler, ReduceLROnPlateau):
        scheduler.step(loss)
    else:
        scheduler.step()
