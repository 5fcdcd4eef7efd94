"""One run, top to bottom: config → data and model → optimizer and schedule → loop → logs.

`train` drives the `Single` engine (one model and its torch optimizer) through the loop that a
vectorized group shares (optlab/training/loop.py); `finish` tests its weights and writes its record."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path

from omegaconf import DictConfig

from optlab.training import data as dataset
from optlab.training import rng
from optlab.training.callbacks import Callback
from optlab.training.lifecycle import finish, start
from optlab.training.loop import fit
from optlab.training.range_test import resolve
from optlab.training.record import Run
from optlab.training.single import Single, resolve_device


def train(cfg: DictConfig, run_dir: Path, resume: bool = False, callbacks: Sequence[Callback] = ()) -> dict:
    """Train as `cfg` says, write everything into `run_dir`, and return the final metrics.

    With `resume`, continue the run in `run_dir` from its checkpoints/last.pt: the state at the
    end of its last finished epoch, every RNG stream included, so that it ends exactly as if it
    had never stopped. With `optimizer.lr=find`, the learning-rate range test picks the rate
    first (optlab/training/range_test.py). `callbacks` join the run's own (a search's pruning,
    optlab/jobs/tune/trial.py).
    """
    device = resolve_device(cfg.device)
    order = rng.seed(cfg.seed)
    data = dataset.load(cfg.data, device)
    trained = resolve(cfg, run_dir, data, device, resume) if cfg.optimizer.get("lr") == "find" else cfg
    engine = Single(trained, data, device, order)
    run = Run(trained, run_dir, partial(engine.numbers, 0), asked=cfg, callbacks=callbacks)
    start(engine, [run], resume)
    stopped_by = fit(engine, [run], data, cfg.epochs)
    return finish(run, engine.model, data, engine.initial[0], stopped_by, engine.autocast, engine.forward)
