"""`optlab landscape RUN`: the curvature of a finished run's tested weights, measured from its
own config, data and checkpoints (the folder is data, never code: its config is checked first).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from optlab import models
from optlab.config import allowlist
from optlab.config.checks import group_values
from optlab.errors import UsageError, reason
from optlab.store.files import load_checkpoint, load_yaml, refuse_links
from optlab.training import data as dataset
from optlab.training.callbacks import tested_checkpoint
from optlab.training.lifecycle import landscape
from optlab.training.single import resolve_device


def landscape_of(run_dir: Path) -> dict:
    """`optlab landscape <run folder>`: every curvature measurement of a finished run's best
    weights, from its own config, data and checkpoints, into curvature.json and landscape.png."""
    config = run_dir / ".hydra" / "config.yaml"
    if not config.exists():
        raise UsageError(f"{run_dir} is not a run folder (missing {config})")
    cfg = load_yaml(config)
    if not isinstance(cfg, DictConfig) or not {"model", "data", "device"} <= set(cfg):
        raise UsageError(f"cannot read {config}: it is not a run's config")
    allowlist.check_file(cfg, config)  # the folder may come from anyone: its config is data, never code
    try:  # what is built from it holds only keys and values its rules allow
        group_values({g: OmegaConf.to_container(cfg[g], resolve=True) for g in ("model", "data")}, ("model", "data"))
    except UsageError as error:
        raise UsageError(f"{config}: {error}") from None
    except Exception as error:  # an interpolation that does not resolve outside its run
        raise UsageError(f"cannot read {config}: {reason(error)}") from None
    refuse_links(run_dir)  # curvature.json, landscape.png and curves are written into it
    files = [run_dir / "checkpoints" / name for name in (tested_checkpoint(cfg), "init.pt")]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise UsageError(f"{run_dir} is not a finished run (missing {', '.join(missing)})")
    if cfg.get("surface") is not None:
        raise UsageError(f"{run_dir} is a surface run; its landscape is trajectory.png")
    device = resolve_device(cfg.device)
    data = dataset.load(cfg.data, device)
    model = models.build(cfg, data).to(device)
    initial = load_checkpoint(files[1], device)
    try:
        model.load_state_dict(load_checkpoint(files[0], device)["model"])
    except (KeyError, RuntimeError) as error:  # loads, but holds no state of this model
        raise UsageError(f"cannot load {files[0]} into the run's model: {reason(error)}") from None
    history = run_dir / "history.csv"
    source = history if history.exists() else config  # the rate the run ended at: λ_max is read against 2/lr
    try:
        rows = list(csv.DictReader(history.open())) if source == history else []
        lr = float(rows[-1]["lr"]) if rows else float(cfg.optimizer.lr)
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"its last learning rate, {lr}, is not a number > 0")
    except (OSError, ValueError, TypeError, KeyError, csv.Error) as error:
        raise UsageError(f"cannot read {source}: {reason(error)}") from None
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(run_dir)) as writer:  # the image joins the run's curves
        return landscape(model, data, cfg, initial, lr, run_dir, writer)
