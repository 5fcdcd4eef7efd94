"""Vectorized sweeps, the job side: which jobs of a sweep may train as one stacked model
(`group_key`: they differ only in what a member may have of its own) and how such a group
trains and records each member as its own run (the engine is optlab/training/stacked.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from functools import partial
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from optlab.config.identity import flatten
from optlab.training import data as dataset
from optlab.training.batched import unsupported
from optlab.training.callbacks import Callback
from optlab.training.lifecycle import finish, start
from optlab.training.loop import fit
from optlab.training.record import Run
from optlab.training.single import resolve_device
from optlab.training.stacked import Stacked

log = logging.getLogger("optlab")


# What may differ between the members of one group: each member builds its own model, init,
# optimizer and schedule, so these are per-member numbers. Everything else must be equal.
MAY_DIFFER = ("seed", "init", "scheduler", "early_stopping", "optimizer.", "dropout", "l2",
              "weight_decay_mode", "diverge_threshold", "checkpoint_every_s", "rerun", "summary",
              "curvature", "noise", "target")


MUST_MATCH = ("optimizer._target_",)


def group_key(cfg: DictConfig) -> str | None:
    """Jobs whose keys are equal can train as one group; None when this job cannot be stacked
    (the reason is logged at debug level)."""
    why = cannot_stack(cfg)
    if why:
        log.debug("not stacked: %s", why)
        return None
    flat = flatten(OmegaConf.to_container(cfg, resolve=True))
    kept = {k: v for k, v in flat.items()
            if k in MUST_MATCH or not any(k == p or k.startswith(p if p.endswith(".") else p + ".") for p in MAY_DIFFER)}
    return repr(sorted(kept.items()))


def cannot_stack(cfg: DictConfig) -> str | None:
    """Why a job must train alone, or None."""
    if cfg.get("surface") is not None:
        return "a surface run"
    if cfg.precision != "fp32" or cfg.compile:
        return "precision or compile set"
    if not cfg.data.get("in_memory", True):
        return "data.in_memory=false"
    if cfg.optimizer.get("lr") == "find":
        return "optimizer.lr=find (each run's range test comes first)"
    return unsupported(cfg.optimizer)


def train_group(cfgs: list[DictConfig], run_dirs: list[Path], resume: bool = False,
                within=lambda k: nullcontext(), callbacks: Sequence[Sequence[Callback]] = (),
                population=None) -> list[dict]:
    """Train K runs as one stacked group; returns each member's metrics, as `train.train` does
    for one. `within(k)` is a context for member k's record (its Hydra job config);
    `callbacks[k]`: more of training's callbacks for member k (a search's pruning);
    `population`: population-based training's step (optlab/training/population.py)."""
    device = resolve_device(cfgs[0].device)
    data = dataset.load(cfgs[0].data, device)
    engine = Stacked(cfgs, data, device)
    with ExitStack() as logs:
        runs = [Run(cfg, run_dir, partial(engine.numbers, k), logs.enter_context(member_log(run_dir, k)),
                    callbacks=callbacks[k] if callbacks else ())
                for k, (cfg, run_dir) in enumerate(zip(cfgs, run_dirs))]
        logs.callback(lambda: [run.log.writer.close() for run in runs if run.log])  # also if training fails
        start(engine, runs, resume)
        stopped_by = fit(engine, runs, data, cfgs[0].epochs, population)
        metrics = []
        for k, run in enumerate(runs):
            with within(k):
                metrics.append(finish(run, engine.members[k], data, engine.initial[k], stopped_by))
    return metrics


@contextmanager
def member_log(run_dir: Path, k: int):
    """A logger whose messages go to the member's own train.log, as a single run's do (and not
    to the console, which K members would flood)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("[%(asctime)s][optlab][%(levelname)s] %(message)s"))
    logger = logging.getLogger(f"optlab.member{k}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield logger
    finally:
        logger.removeHandler(handler)
        handler.close()
