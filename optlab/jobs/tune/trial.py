"""One trial of a study: asked of the sampler, trained as a sweep's job trains (its folder in the
study's), pruned by the study's pruner through a training callback, and told to the study."""

from __future__ import annotations

import logging
import math
import os
import random
import socket
from functools import partial
from pathlib import Path
from typing import NamedTuple

from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from optuna.trial import TrialState

from optlab.config.hydra_compat import Callbacks, returned, set_hydra_config
from optlab.errors import UsageError
from optlab.jobs.dispatch import failed, run
from optlab.jobs.tune import space, storage
from optlab.jobs.tune.study import base_overrides, counted, run_folder, searched
from optlab.metrics import so_far
from optlab.naming import overrides_name
from optlab.store.folder import prepare, resumes_after
from optlab.training.callbacks import Callback

log = logging.getLogger("optlab")


def sampler(name: str, seed: int):
    """The study's sampler; `grid` is served from the queue (`queue_grid`): any sampler would do."""
    import optuna

    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name in ("random", "grid", "pbt"):  # pbt: its first population is drawn at random
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)  # constant_liar: parallel workers spread out


def queue_grid(study, params: list[space.Param], seed: int) -> int:
    """Queue every point of the grid no trial has yet, in a seeded order; returns the grid's size.
    Optuna's GridSampler stops its study from inside `tell`, which only works within
    `study.optimize`; optlab asks and tells itself."""
    import itertools

    points = [dict(zip([p.key for p in params], values)) for values in itertools.product(*(p.grid() for p in params))]
    taken = [t.params or t.system_attrs.get("fixed_params", {}) for t in searched(study) if counted(t)
             or t.state.name == "WAITING"]
    random.Random(seed).shuffle(points)
    for point in points:
        if point not in taken:
            study.enqueue_trial(point)
    return len(points)


def pruner(name: str, epochs: int):
    import optuna

    return {
        "none": optuna.pruners.NopPruner,
        "median": partial(optuna.pruners.MedianPruner, n_startup_trials=5, n_warmup_steps=1),
        "hyperband": partial(optuna.pruners.HyperbandPruner, min_resource=1, max_resource=epochs),
        "successive_halving": partial(optuna.pruners.SuccessiveHalvingPruner, min_resource=1),
    }[name]()


class Pruning(Callback):
    """Reports the searched metric to the trial after every epoch but the last; the study's
    pruner decides whether the run ends there, `pruned` (as optuna-integration's
    KerasPruningCallback does for Keras)."""

    def __init__(self, trial, metric: str, epochs: int):
        self.trial, self.metric, self.epochs = trial, metric, epochs

    def on_epoch_end(self, run, epoch: int, row: dict) -> str | None:
        if epoch >= self.epochs:
            return None
        minimize = self.trial.study.direction.name == "MINIMIZE"  # the study's, which `tune.direction` may set
        self.trial.report(so_far(self.metric, run.history, minimize), epoch)
        if not self.trial.should_prune():
            return None
        run.logger.info("pruned at epoch %d: the search stops this trial", epoch)
        return "pruned"


def next_trial(study, distributions: dict, trials: int):
    """A new trial if the study has fewer than `trials`, else None (called under the study's
    lock). Trials whose process died (no heartbeat for `tune.grace_s`, see storage.py) fail
    first, and their settings are queued again."""
    from optuna.storages import fail_stale_trials

    fail_stale_trials(study)
    if sum(map(counted, searched(study))) >= trials:
        return None
    trial = study.ask(distributions)
    study._storage.record_heartbeat(trial._trial_id)  # a queued trial's old heartbeat is not its own
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())
    return trial


def run_trials(trials: list, params: list[space.Param], cfg: DictConfig, study_dir: Path) -> list[dict]:
    """Train trials asked together: those whose settings can stack (optlab/jobs/vectorize.py) as
    one stacked group, each member reported, pruned and told on its own; any other alone.
    Returns each trial's metrics, in order."""
    from optlab.jobs.vectorize import group_key

    jobs = [trial_job(trial, params, cfg, study_dir) for trial in trials]
    if cfg.tune.sampler == "pbt":
        return train_population(trials, jobs, cfg, params)
    together: dict[object, list[int]] = {}
    for i, job in enumerate(jobs):
        key = group_key(job.task) if len(trials) > 1 else None
        together.setdefault(key if key is not None else ("alone", i), []).append(i)
    results: dict[int, dict] = {}
    for members in together.values():
        actions = [prepare(jobs[i].folder, jobs[i].task) for i in members]  # `resume` after an interruption
        chosen = [trials[i] for i in members]
        for trial, action in zip(chosen, actions):
            log.info("trial %d: %s%s", trial.number, " ".join(p.name(trial.params[p.key]) for p in params),
                     f" (resumes {trial.user_attrs['run']})" * (action == "resume"))
        # resumed trials stack when they stand at the same epoch (an interrupted group resumes as one)
        resume = actions[0] == "resume" and len({resumes_after(jobs[i].folder) for i in members} - {None}) == 1
        if len(members) > 1 and len(set(actions)) == 1 and (actions[0] == "train" or resume):
            log.info("trials %s train as one stacked model%s", ", ".join(str(t.number) for t in chosen),
                     " (resumed)" * resume)
            results.update(zip(members, train_stacked(chosen, [jobs[i] for i in members], cfg, resume)))
        else:
            results.update((i, train_alone(trials[i], jobs[i], cfg)) for i in members)
    return [results[i] for i in range(len(trials))]


def train_population(trials: list, jobs: list, cfg: DictConfig, params: list[space.Param]) -> list[dict]:
    """Train the study's trials as one population (optlab/jobs/tune/pbt.py), or resume it."""
    from optlab.jobs.tune import pbt
    from optlab.jobs.vectorize import cannot_stack, group_key

    why = next(filter(None, map(cannot_stack, (job.task for job in jobs))), None)
    if why or len({group_key(job.task) for job in jobs}) > 1:
        raise UsageError(f"tune.sampler=pbt: the population must train as one stacked group, and "
                         f"{why or 'its members differ in more than the optimizer numbers searched'}")
    actions = [prepare(job.folder, job.task) for job in jobs]
    resume = actions[0] == "resume"
    if len(set(actions)) > 1 or resume and len({resumes_after(job.folder) for job in jobs}) > 1:
        raise UsageError(f"tune.sampler=pbt: the population's members in {storage.where(cfg)} stand at different "
                         "epochs: it cannot go on as one group (give a new tune.dir)")
    members, step = pbt.population(trials, cfg, params)
    log.info("trials %s train as one population%s: every %d epochs the bottom %g go on as members of the top %g",
             ", ".join(str(t.number) for t in trials), " (resumed)" * resume, cfg.tune.pbt.interval,
             cfg.tune.pbt.quantile, cfg.tune.pbt.quantile)
    return train_stacked(trials, jobs, cfg, resume, members, step)


class Job(NamedTuple):
    """A trial's job: its config (`hydra` node included), its folder, its own config."""

    config: DictConfig
    folder: Path
    task: DictConfig


def trial_job(trial, params: list[space.Param], cfg: DictConfig, study_dir: Path) -> Job:
    """The trial's job config (`hydra` node included) composed as a sweep's job is, its folder
    in the study's, and its own config."""
    from hydra import compose

    chosen = [(p, trial.params[p.key]) for p in params]
    # a trial queued again after an interruption goes on in its own folder (never a finished one's: `load`)
    name = run_folder(trial, storage.where(cfg)) or f"{trial.number:03d}_{overrides_name([p.name(v) for p, v in chosen])}"
    trial.set_user_attr("run", name)
    job = compose("config", [*base_overrides(), *(p.override(v) for p, v in chosen)], return_hydra_config=True)
    with read_write(job.hydra), open_dict(job.hydra):
        job.hydra.sweep.dir, job.hydra.sweep.subdir, job.hydra.job.name = str(study_dir), name, "train"
        job.hydra.job.num, job.hydra.job.id = trial.number, f"trial_{trial.number}"
    return Job(job, study_dir / name, OmegaConf.masked_copy(job, [k for k in job if k != "hydra"]))


def train_alone(trial, job: Job, cfg: DictConfig) -> dict:
    """Train one trial in its folder, as a sweep's job trains (Hydra's run_job, then `run`), and
    tell the study how it went. A failed trial stops the study: a user's mistake there would
    fail every trial alike."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.utils import JobStatus, run_job
    from hydra.types import HydraContext

    context = HydraContext(config_loader=GlobalHydra.instance().config_loader(), callbacks=Callbacks())
    pruning = Pruning(trial, cfg.tune.metric, cfg.epochs)
    result = run_job(lambda c: run(c, job.folder, callbacks=(pruning,)), job.config,
                     "hydra.sweep.dir", "hydra.sweep.subdir", context)
    if result.status == JobStatus.FAILED:
        stop_study([trial], [job], returned(result))
    return tell(trial, result.return_value, cfg)


def train_stacked(trials: list, jobs: list[Job], cfg: DictConfig, resume: bool = False,
                  members: list[Callback] = (), population=None) -> list[dict]:
    """Train trials as one stacked group (each member's folder readied as Hydra readies a job's;
    `resume`: each goes on from its last.pt), each pruned by its own trial; tell the study how
    each went. `members`, `population`: population-based training's callbacks and step."""
    from optlab.config.hydra_compat import as_job, save_job_files
    from optlab.jobs.vectorize import train_group

    for job in jobs:
        save_job_files(job.config, job.folder.absolute())
    try:
        metrics = train_group([job.task for job in jobs], [job.folder.absolute() for job in jobs], resume,
                              within=lambda k: as_job(jobs[k].config),
                              callbacks=[[Pruning(trial, cfg.tune.metric, cfg.epochs), *members[k:k + 1]]
                                         for k, trial in enumerate(trials)], population=population)
    except Exception as error:
        stop_study(trials, jobs, error)
    return [tell(trial, result, cfg) for trial, result in zip(trials, metrics)]


def stop_study(trials: list, jobs: list[Job], error: BaseException):
    """Trials that failed: queued again (fixed, the same command trains them), their attempts
    taken back or recorded; the study stops with the error."""
    for trial in trials:
        requeue(trial)
    mistakes = [failed(job.folder, job.task, error, in_sweep=False) for job in jobs]
    if mistakes[0] is not None:
        numbers = ", ".join(str(t.number) for t in trials)
        raise UsageError(f"trial{'s' * (len(trials) > 1)} {numbers}: {mistakes[0]}")
    raise error


def tell(trial, metrics: dict, cfg: DictConfig) -> dict:
    """Tell the study how the trial's run ended; returns its metrics."""
    value = metrics.get(cfg.tune.metric)
    if metrics["status"] == "pruned":
        trial.study.tell(trial, state=TrialState.PRUNED)
    elif metrics["status"] == "interrupted":  # the next command resumes it in its folder
        requeue(trial)
    elif isinstance(value, (int, float)) and math.isfinite(value):
        trial.study.tell(trial, value)
    else:  # diverged before its first epoch ended: nothing to compare; the study goes on
        trial.set_user_attr("diverged", True)
        trial.study.tell(trial, state=TrialState.FAIL)
    return metrics


def requeue(trial) -> None:
    """A trial that did not end (failed, interrupted): not counted, and queued again with its
    settings and its folder, where the next attempt goes on."""
    trial.study.tell(trial, state=TrialState.FAIL)
    trial.study.enqueue_trial(trial.params, user_attrs={"run": trial.user_attrs["run"]})


def restore(own: DictConfig) -> None:
    """After a trial's run_job: the tune command's Hydra config and its log file (tune.log) again."""
    from hydra.core.utils import configure_log

    set_hydra_config(own)
    configure_log(own.hydra.job_logging, own.hydra.verbose)
