"""The learning-rate range test (Smith, 2017): the rate grows geometrically each step; the
suggestion is where the smoothed loss falls fastest. A feature of a run (`optimizer.lr=find`)
and of `optlab lr-find` (optlab/jobs/lr_find.py).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from optlab.errors import UsageError
from optlab.optim import UNSUITED
from optlab.store.files import read_json, write_csv, write_json
from optlab.training import data as dataset
from optlab.training import rng

log = logging.getLogger("optlab")


@dataclass
class Result:
    lrs: list[float]
    losses: list[float]  # the batch loss at each step
    smoothed: list[float]  # bias-corrected exponential average
    suggested_lr: float
    blowup_lr: float | None  # where the smoothed loss passed stop_factor × its best (None: it never did)

    def record(self) -> dict:
        return {"suggested_lr": self.suggested_lr, "blowup_lr": self.blowup_lr, "steps_run": len(self.lrs),
                "min_loss": min(self.smoothed), "min_loss_lr": self.lrs[int(np.argmin(self.smoothed))]}


def range_test(cfg: DictConfig, data: dataset.Data, device: torch.device) -> Result:
    """Run the test on a fresh model and optimizer built from `cfg`, as training builds them."""
    from optlab.training.single import (
        Single,  # the run's own engine: same init, objective and step
    )

    test = cfg.lr_find
    target = cfg.optimizer._target_
    if target in UNSUITED:
        raise UsageError(f"lr_find: optimizer {target.rsplit('.', 1)[-1]} {UNSUITED[target]}: its loss does not "
                         "follow the rate (the test suits sgd, momentum, nesterov and the adaptive methods)")
    quiet = OmegaConf.merge(cfg, {"diagnostics": False, "compile": False, "optimizer": {"lr": test.min_lr}})
    with rng.untouched():  # the run that follows draws from its streams as if no test had run
        engine = Single(quiet, data, device, rng.seed(cfg.seed))
        return _sweep(engine, test)


def _sweep(engine, test: DictConfig) -> Result:
    """Step `engine` at exponentially rising rates until the smoothed loss blows up."""
    engine.model.train()
    lrs = (test.min_lr * (test.max_lr / test.min_lr) ** (np.arange(test.steps) / (test.steps - 1))).tolist()
    losses, smoothed, average, best, blowup = [], [], 0.0, math.inf, None
    batches = iter(())
    for i, lr in enumerate(lrs):
        x_y = next(batches, None)
        if x_y is None:  # the next epoch, in the run's order
            batches = iter(engine.batches())
            x_y = next(batches)
        for group in engine.optimizer.param_groups:
            group["lr"] = lr
        loss = engine.train_step(*x_y)[1].item()  # one sync a step: the test stops on it
        average = test.beta * average + (1 - test.beta) * loss
        smooth = average / (1 - test.beta ** (i + 1))
        losses.append(loss)
        smoothed.append(smooth)
        if not math.isfinite(smooth) or smooth > test.stop_factor * best:
            blowup = lr
            break
        best = min(best, smooth)
    return Result(lrs[: len(losses)], losses, smoothed, suggest(lrs[: len(losses)], smoothed, blowup), blowup)


def suggest(lrs: list[float], smoothed: list[float], blowup: float | None) -> float:
    """The rate where the smoothed loss falls fastest against log(lr), before any blow-up and
    past the first tenth of the steps (where the bias-corrected average still settles; Lightning
    skips them too), so that the suggestion is not an end of the range by default."""
    end = len(lrs) - (blowup is not None)  # the blown-up point is no candidate
    start = min(len(lrs) // 10, max(end - 3, 0))
    if end - start < 3:
        rise = f" (the rate rose ×{lrs[1] / lrs[0]:.3g} a step: narrow the range or raise lr_find.steps)" \
            if len(lrs) > 1 and lrs[1] / lrs[0] > 2 else ""
        raise UsageError(f"lr_find: the loss blew up within {len(lrs)} steps of lr_find.min_lr={lrs[0]:.3g}; "
                         f"lower lr_find.min_lr{rise}")
    slope = np.gradient(np.asarray(smoothed[start:end]), np.log(lrs[start:end]))
    return float(lrs[start + int(np.nanargmin(slope))])


def write(result: Result, cfg: DictConfig, run_dir: Path) -> None:
    """lr_find.csv, lr_find.json, lr_find.png and the curve in TensorBoard (`lr_find/*`)."""
    from torch.utils.tensorboard import SummaryWriter

    rows = [{"step": i + 1, "lr": lr, "loss": loss, "smoothed_loss": s}
            for i, (lr, loss, s) in enumerate(zip(result.lrs, result.losses, result.smoothed))]
    write_csv(run_dir / "lr_find.csv", rows)
    write_json(run_dir / "lr_find.json", {**result.record(), **OmegaConf.to_container(cfg.lr_find)})
    plot(result, run_dir / "lr_find.png")
    with SummaryWriter(log_dir=str(run_dir)) as writer:
        for row in rows:
            for key in ("lr", "loss", "smoothed_loss"):
                writer.add_scalar(f"lr_find/{key}", row[key], row["step"])


def plot(result: Result, path: Path) -> None:
    """The smoothed loss (and the raw one, faint) against the rate, the suggestion marked."""
    from optlab.store.plots import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(6.4, 4.4), layout="constrained")
    ax.plot(result.lrs, result.losses, color="grey", alpha=0.35, lw=0.8, label="batch loss")
    ax.plot(result.lrs, result.smoothed, lw=1.6, label="smoothed loss")
    ax.axvline(result.suggested_lr, color="tab:red", ls="--", label=f"suggested lr {result.suggested_lr:.3g}")
    if result.blowup_lr is not None:
        ax.axvline(result.blowup_lr, color="black", ls=":", label=f"blew up at {result.blowup_lr:.3g}")
    finite = [v for v in result.smoothed if math.isfinite(v)]
    ax.set_ylim(min(finite) - 0.05 * abs(min(finite)), 1.5 * max(finite[: max(1, len(finite) - 1)]))
    ax.set(xscale="log", xlabel="learning rate", ylabel="training loss", title="learning-rate range test")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    save_figure(fig, path)


def resolve(cfg: DictConfig, run_dir: Path, data: dataset.Data, device: torch.device, resume: bool) -> DictConfig:
    """For `optimizer.lr=find`: `cfg` with the suggested rate in its place (the test's files in
    `run_dir`; a resumed run reads its lr_find.json instead of testing again)."""
    found = run_dir / "lr_find.json"
    if resume and found.exists():
        lr = read_json(found).get("suggested_lr")
        if not (isinstance(lr, (int, float)) and not isinstance(lr, bool) and 0 < lr < math.inf):
            raise UsageError(f"resume: cannot read {found}: suggested_lr is {lr!r}, not a positive number")
    else:
        result = range_test(cfg, data, device)
        write(result, cfg, run_dir)
        lr = result.suggested_lr
        log.info("lr_find: suggested lr %.4g (lr_find.png); training with it", lr)
    return OmegaConf.merge(cfg, {"optimizer": {"lr": lr}})
