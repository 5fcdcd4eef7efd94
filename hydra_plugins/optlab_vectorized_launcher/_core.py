"""The vectorized launcher's logic: group a sweep's jobs, train each group as one stacked model.

Jobs whose configs differ only in what a member may have of its own (optlab/jobs/vectorize.py's
`group_key`: seed, learning rate, momentum, weight decay, dropout, init, schedule, ...) train
together, up to `vectorize.max_members` at a time; every other job runs as Hydra's basic
launcher runs it. Each member's folder gets what Hydra writes for a job (`.hydra/`,
`train.log`) and what a single run writes, so summaries, resume and re-runs treat it as one.

A group, or a job alone, is a `Unit`: `launch` makes them and hands them to a runner, which
runs each with `run_unit`. In this process that is `in_turn`; the cluster launchers
(_submitit.py) send each unit as one submitit job, whose worker calls the same `run_unit`.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, NamedTuple, Sequence

from hydra.core.utils import JobReturn, JobStatus, configure_log, run_job, setup_globals
from omegaconf import DictConfig, open_dict, read_write

from optlab.config.hydra_compat import as_job, job_return, returned, save_job_files
from optlab.errors import usage_error
from optlab.jobs import command
from optlab.jobs.dispatch import failed, stop_interrupted, sweep_again
from optlab.jobs.prepare import job_folder
from optlab.store.folder import plan, resumes_after

log = logging.getLogger("optlab")


class Unit(NamedTuple):
    """Jobs that run as one: a group trained as one stacked model, or one job alone."""

    jobs: list[int]  # their indices in the launch, in order
    configs: list[DictConfig]  # each job's config, `hydra` node included
    tasks: list[DictConfig]  # each job's own config (what a task function receives)
    folders: list[Path]  # each job's run folder (`job_folder`'s)
    resume: bool  # the group goes on from its members' last.pt (as the sweeper planned them)


Runner = Callable[[object, list[Unit]], Iterable[list[JobReturn]]]


def launch(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int,
           runner: Runner | None = None) -> list[JobReturn]:
    """Run a sweep's jobs: grouped, each unit run by `runner` (by default `in_turn`, here), which
    yields each unit's results in the units' order; the results in the jobs' order. A unit
    that a signal stopped ends the command, saying how to finish the sweep."""
    asked = command.of(launcher.task_function)
    asked.started = True  # an error from here on is a job's, not the command line's
    setup_globals()
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    units = make_units(launcher, job_overrides, initial_job_idx, asked.planned)
    returns: list[JobReturn | None] = [None] * sum(len(unit.jobs) for unit in units)
    for unit, results in zip(units, (runner or in_turn)(launcher, units)):
        for i, result in zip(unit.jobs, results):
            returns[i] = result
        stop_if_interrupted(results, asked.words, sweep_dir)
    return returns


def make_units(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int,
               planned: dict[str, str]) -> list[Unit]:
    """Each job's config (numbered from `initial_job_idx`), grouped as `groups` says."""
    configs = []
    for idx, overrides in enumerate(job_overrides, initial_job_idx):
        cfg = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(overrides))
        with open_dict(cfg):
            cfg.hydra.job.id = cfg.hydra.job.num = idx
        configs.append(cfg)
    tasks = [task_config(cfg) for cfg in configs]
    folders = []
    for cfg in configs:
        with as_job(cfg):
            folders.append(job_folder(cfg))
    return [Unit(jobs, *([items[i] for i in jobs] for items in (configs, tasks, folders)), action == "resume")
            for jobs, action in groups(configs, tasks, folders, planned)]


def in_turn(launcher, units: list[Unit]) -> Iterable[list[JobReturn]]:
    """Run each unit in this process, one after another (lazily: `launch` stops the sweep
    after a unit that a signal stopped, before the next starts)."""
    for unit in units:
        yield run_unit(unit, launcher.hydra_context, launcher.task_function)
        configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)


def run_unit(unit: Unit, hydra_context, task_function) -> list[JobReturn]:
    """A job alone as the basic launcher runs it; a group trained as one stacked model."""
    alone = partial(run_job, hydra_context=hydra_context, task_function=task_function,
                    job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
    if len(unit.configs) == 1:
        return [alone(config=unit.configs[0])]
    return train_group(unit.configs, unit.tasks, unit.folders, unit.resume, alone)


def stop_if_interrupted(results: list[JobReturn], words: list[str], sweep_dir: Path) -> None:
    """End the command if a signal stopped these jobs, as a single run ends: saying how to go on."""
    stopped = [value for value in map(returned, results)
               if isinstance(value, dict) and value.get("status") == "interrupted"]
    if stopped:
        stop_interrupted(stopped[0], f"optlab train: interrupted after epoch {stopped[0]['epochs_run']}; "
                                     f"finish the sweep with: {sweep_again(words, sweep_dir)}")


def groups(configs: list[DictConfig], tasks: list[DictConfig], folders: list[Path],
           planned: dict[str, str]) -> list[tuple[list[int], str]]:
    """The jobs to train together (their indices, in the order their first job comes, at most
    `vectorize.max_members`) and whether they train or resume (as the sweeper `planned` them)."""
    from optlab.jobs.vectorize import group_key

    found: dict[tuple, list[int]] = {}
    for i, (cfg, task, run_dir) in enumerate(zip(configs, tasks, folders)):
        with as_job(cfg):
            key = group_key(task)
            action = planned.get(str(run_dir)) or plan(run_dir, task)
            # resumed members (interrupted, or killed without a record) must stand at the same epoch
            at = resumes_after(run_dir) if action == "resume" else 0
        found.setdefault((action, at, key) if key else (action, i), []).append(i)
    result = []
    for (action, *_), members in found.items():
        size = configs[members[0]].vectorize.max_members
        result += [(members[start:start + size], action) for start in range(0, len(members), size)]
    return sorted(result)


def task_config(cfg: DictConfig) -> DictConfig:
    """The job's own config, without Hydra's node (what a task function receives): the copy
    run_job makes, made through pickle, which leaves the `hydra` node out as it writes (half
    of the config) and builds the rest in about half a deep copy's time (scripts/
    bench_bookkeeping.py, row `task`)."""
    hydra = cfg._get_node("hydra")
    written = io.BytesIO()
    pickler = pickle.Pickler(written, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.persistent_id = lambda node: "hydra" if node is hydra else None
    pickler.dump(cfg)
    unpickler = pickle.Unpickler(io.BytesIO(written.getvalue()))  # the bytes never leave this process
    unpickler.persistent_load = lambda name: None
    task = unpickler.load()
    with read_write(task), open_dict(task):
        del task["hydra"]
    return task


def train_group(configs: list[DictConfig], tasks: list[DictConfig], folders: list[Path], resume: bool,
                alone) -> list[JobReturn]:
    """Ready each member's folder as Hydra readies a job's (`.hydra/` and `train.log`; Hydra's
    job callbacks and `env_set` are not run for members), train the group, and return each
    member's result as Hydra's run_job would. If a member's config is a mistake that only shows
    as the group is built (torch refusing an optimizer's settings, a checkpoint that does not
    load), each job runs `alone` instead, so that only that one fails."""
    from optlab.jobs.vectorize import train_group as train_stacked

    folders = [folder.absolute() for folder in folders]
    for cfg, folder in zip(configs, folders):
        save_job_files(cfg, folder)
    names = [os.path.relpath(folder, configs[0].hydra.sweep.dir) for folder in folders]
    log.info("training %d runs as one stacked model%s: %s", len(configs), " (resumed)" * resume, ", ".join(names))

    try:  # each member's record is made as its own job (its HParams name its overrides)
        metrics = train_stacked(tasks, folders, resume, lambda k: as_job(configs[k]))
    except Exception as error:
        if usage_error(error) is not None:  # a member's mistake: the others may train (finished ones are skipped)
            log.warning("cannot train %s as one model (%s): each runs alone", ", ".join(names), usage_error(error))
            return [alone(config=cfg) for cfg in configs]
        metrics = []  # every member failed the same way
        for cfg, task, folder in zip(configs, tasks, folders):
            with as_job(cfg):
                failed(folder, task, error, in_sweep=True)
            metrics.append({"status": "failed"})
    for name, result in zip(names, metrics):
        if result["status"] != "failed":
            log.info("  %s: %s, test acc %.4f (the weights of epoch %s), %.0f samples/s", name, result["status"],
                     result["test_acc"], result["best_epoch"], result["train_samples_per_s"])
    return [as_returned(cfg, task, result) for cfg, task, result in zip(configs, tasks, metrics)]


def as_returned(cfg: DictConfig, task: DictConfig, result, status: JobStatus = JobStatus.COMPLETED) -> JobReturn:
    """The JobReturn of a job that returned `result` (or failed with it), as Hydra's run_job would make it."""
    return job_return(result, overrides=list(cfg.hydra.overrides.task), cfg=task, hydra_cfg=cfg,
                      working_dir=os.getcwd(), task_name=cfg.hydra.job.name, status=status)
