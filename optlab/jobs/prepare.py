"""A sweep's jobs, checked and their folders made ready before the first one is launched
(optlab's sweeper calls `prepare_sweep`; a single run's Guard does the same for one job)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from optlab.config.checks import validate
from optlab.config.hydra_compat import as_job
from optlab.errors import UsageError
from optlab.store.folder import prepare, read_metrics


def job_folder(cfg: DictConfig) -> Path:
    """Where a sweep job with this config (composed for the job, `hydra` node included) runs."""
    return Path(cfg.hydra.sweep.dir) / str(cfg.hydra.sweep.subdir)


def user_file(data: DictConfig) -> None:
    """The user's own data file (npz, csv, frames) is set and there (optlab/datasets.py)."""
    if "path" in data.source:
        from optlab.datasets import user_file as check

        check(data.source._target_.rsplit(".", 1)[-1], data.source.path)


def is_run(cfg: DictConfig) -> bool:
    """Whether a job is an optlab run (composed on optlab's schema), not another Hydra app's."""
    from optlab.config.schema import Config

    return OmegaConf.get_type(cfg) is Config


def prepare_sweep(configs: list[DictConfig], planned: dict[str, str]) -> list[int]:
    """Check every job of a sweep first (a mistake in any, or two jobs that would share a
    folder, stops the sweep before anything is written), then make each run's folder ready.
    Returns the indices of the jobs to launch, and notes in `planned` what each run's job does
    (folder → `plan`'s word); another Hydra app's jobs are only checked for their folders."""
    folders: dict[Path, DictConfig] = {}
    for cfg in configs:
        with as_job(cfg):
            folder = job_folder(cfg)
            if is_run(cfg):
                validate(cfg)
                user_file(cfg.data)  # read first thing by a single run; a sweep's every job, before any starts
                read_metrics(folder)  # a damaged record stops the sweep before any folder changes
        if folder in folders:
            named = (" ".join(c.hydra.overrides.task) or "(no overrides)" for c in (folders[folder], cfg))
            raise UsageError("the sweep's jobs {!r} and {!r} would share the folder {} (each job needs its own: "
                             "give each value once, or a hydra.sweep.subdir that tells them apart)"
                             .format(*named, folder))
        folders[folder] = cfg
    todo = []
    for i, (folder, cfg) in enumerate(folders.items()):
        if is_run(cfg):
            with as_job(cfg):
                action = planned[str(folder)] = prepare(folder, cfg)
            if action == "skip":
                continue
        todo.append(i)
    return todo
