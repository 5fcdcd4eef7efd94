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

from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from optuna.trial import TrialState

from optlab.config.hydra_compat import Callbacks, returned, set_hydra_config
from optlab.errors import UsageError
from optlab.jobs.dispatch import failed, run
from optlab.jobs.tune import space, storage
from optlab.jobs.tune.study import base_overrides, counted, run_folder, searched
from optlab.metrics import so_far
from optlab.naming import overrides_name
from optlab.store.folder import prepare
from optlab.training.callbacks import Callback

log = logging.getLogger("optlab")


def sampler(name: str, seed: int):
    """The study's sampler; `grid` is served from the queue (`queue_grid`): any sampler would do."""
    import optuna

    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name in ("random", "grid"):
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


def run_trial(trial, params: list[space.Param], cfg: DictConfig, study_dir: Path) -> dict:
    """Train one trial in its folder, as a sweep's job trains (Hydra's run_job, then
    `run`), and tell the study how it went. A failed trial stops the study: a user's
    mistake there would fail every trial alike."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.utils import JobStatus, run_job
    from hydra.types import HydraContext

    chosen = [(p, trial.params[p.key]) for p in params]
    # a trial queued again after an interruption goes on in its own folder (never a finished one's: `load`)
    name = run_folder(trial, storage.where(cfg)) or f"{trial.number:03d}_{overrides_name([p.name(v) for p, v in chosen])}"
    trial.set_user_attr("run", name)
    job = compose("config", [*base_overrides(), *(p.override(v) for p, v in chosen)], return_hydra_config=True)
    with read_write(job.hydra), open_dict(job.hydra):
        job.hydra.sweep.dir, job.hydra.sweep.subdir, job.hydra.job.name = str(study_dir), name, "train"
        job.hydra.job.num, job.hydra.job.id = trial.number, f"trial_{trial.number}"
    folder, task = study_dir / name, OmegaConf.masked_copy(job, [k for k in job if k != "hydra"])
    action = prepare(folder, task)  # `resume` after an interruption; else an earlier attempt is moved aside
    log.info("trial %d: %s%s", trial.number, " ".join(p.name(v) for p, v in chosen),
             f" (resumes {name})" * (action == "resume"))
    context = HydraContext(config_loader=GlobalHydra.instance().config_loader(), callbacks=Callbacks())
    pruning = Pruning(trial, cfg.tune.metric, cfg.epochs)
    result = run_job(lambda c: run(c, folder, callbacks=(pruning,)), job,
                     "hydra.sweep.dir", "hydra.sweep.subdir", context)
    if result.status == JobStatus.FAILED:
        trial.study.tell(trial, state=TrialState.FAIL)  # not counted: fixed, the same command trains it
        trial.study.enqueue_trial(trial.params, user_attrs={"run": name})
        mistake = failed(folder, task, returned(result), in_sweep=False)
        if mistake is not None:
            raise UsageError(f"trial {trial.number}: {mistake}")
        raise returned(result)
    metrics, value = result.return_value, result.return_value.get(cfg.tune.metric)
    if metrics["status"] == "pruned":
        trial.study.tell(trial, state=TrialState.PRUNED)
    elif metrics["status"] == "interrupted":  # not counted: the next command resumes it in its folder
        trial.study.tell(trial, state=TrialState.FAIL)
        trial.study.enqueue_trial(trial.params, user_attrs={"run": name})
    elif isinstance(value, (int, float)) and math.isfinite(value):
        trial.study.tell(trial, value)
    else:  # diverged before its first epoch ended: nothing to compare; the study goes on
        trial.set_user_attr("diverged", True)
        trial.study.tell(trial, state=TrialState.FAIL)
    return metrics


def restore(own: DictConfig) -> None:
    """After a trial's run_job: the tune command's Hydra config and its log file (tune.log) again."""
    from hydra.core.utils import configure_log

    set_hydra_config(own)
    configure_log(own.hydra.job_logging, own.hydra.verbose)
