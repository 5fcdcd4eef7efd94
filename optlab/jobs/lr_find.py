"""`optlab lr-find`: the learning-rate range test as a job of its own (the test itself is a
feature of a run: optlab/training/range_test.py)."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from optlab.errors import UsageError
from optlab.jobs.command import Command
from optlab.naming import command, relative
from optlab.training import data as dataset
from optlab.training.range_test import range_test, write

log = logging.getLogger("optlab")


def run(cfg: DictConfig, run_dir: Path, asked: Command | None = None) -> dict:
    """`optlab lr-find`: the test, its files, and the command that trains at the suggestion
    (one job: the command asks nothing beyond its config)."""
    from hydra.core.hydra_config import HydraConfig

    from optlab.training.single import resolve_device

    if cfg.get("surface") is not None:
        raise UsageError("surface=...: the range test needs a network and data (on a surface: optlab train)")
    device = resolve_device(cfg.device)
    result = range_test(cfg, dataset.load(cfg.data, device), device)
    write(result, cfg, run_dir)
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith(("optimizer.lr=", "lr_find."))]
    blew = f", blew up at {result.blowup_lr:.3g}" if result.blowup_lr else ", no blow-up up to lr_find.max_lr"
    log.info("suggested lr %.4g (steepest descent of the smoothed loss%s)", result.suggested_lr, blew)
    log.info("written: %s", ", ".join(str(relative(run_dir / f"lr_find.{x}")) for x in ("csv", "json", "png")))
    log.info("train with it: %s", command("optlab", "train", *overrides, f"optimizer.lr={result.suggested_lr!r}"))
    return result.record()
