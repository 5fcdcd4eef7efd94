"""`optlab tune`: search, not only grids. Optuna samples each trial's settings from a space
(optlab/space.py); every trial is an ordinary run that reports to the study after each epoch, so
a hopeless one is pruned in-process (no Hydra sweeper can: a launcher only hands back a trial's
final value, Hydra #1954).

- The study lives in `<tune.dir>/study.journal` (Optuna's JournalStorage). Trials are counted
  and asked for under a file lock, so several processes on one folder share the study and stop
  at `tune.trials` together; the same command again goes on where the study stopped.
- Trial k trains in `<tune.dir>/<k>_<its settings>/` through Hydra's own `run_job` (`.hydra/`,
  `train.log`) and `jobs.run`, as a sweep's job does; a pruned one ends `status: pruned`.
- At the end: the sweep summary, the best trial as an `optlab train` command
  (`best_trial.json`), and Optuna's plots (`optuna_*.png`).
"""

from __future__ import annotations

import logging
import math
import os
import random
import socket
import warnings
from collections import Counter
from functools import partial
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from optlab import jobs, space
from optlab.config import ConfigError, UsageError, validate
from optlab.files import locked, write_json
from optlab.naming import command, overrides_name, relative

log = logging.getLogger("optlab")

JOURNAL = "study.journal"
# a searched metric as it stands after some epochs: the history column and how it is reduced
SO_FAR = {"best_val_acc": ("val_acc", max), "best_val_loss": ("val_loss", min), "final_val_acc": ("val_acc", None),
          "final_val_loss": ("val_loss", None), "final_train_acc": ("train_acc", None),
          "final_train_loss": ("train_loss", None)}


def entries(cfg: DictConfig) -> dict[str, str]:
    """key → search expression: the preset's `tune.params`, then the command line's."""
    found = dict(OmegaConf.to_container(cfg.tune.params))
    found.update(arg.split("=", 1) for arg in jobs.current.search)
    if not found:
        raise UsageError(f"nothing to search: give keys like optimizer.lr='tag(log,interval(1e-4,1))' or "
                         f"search=<preset> (allowed: {space.GRAMMAR})")
    return found


def base_overrides() -> list[str]:
    """The command line's plain overrides that every trial gets (not `tune.*` or `search=`)."""
    return [o for o in HydraConfig.get().overrides.task if not o.lstrip("+~").startswith(("tune.", "search="))]


def direction(cfg: DictConfig) -> str:
    from optlab.compare import MINIMIZED

    if cfg.tune.direction != "auto":
        return cfg.tune.direction
    return "minimize" if cfg.tune.metric in MINIMIZED else "maximize"


def identity(cfg: DictConfig, params: list[space.Param]) -> dict:
    """What a study is of: a folder holds one, and another search must not join it."""
    return {"metric": cfg.tune.metric, "direction": direction(cfg), "space": space.described(params),
            "overrides": sorted(base_overrides())}


def same_study(held: dict | None, cfg: DictConfig, params: list[space.Param]) -> None:
    mine = identity(cfg, params)
    if held is not None and held != mine:
        differs = "; ".join(f"{k}: {held.get(k)} here, {mine[k]} now" for k in mine if held.get(k) != mine[k])
        raise UsageError(f"tune.dir={cfg.tune.dir} holds another study ({differs}); give another tune.dir")


class StudyGuard(Callback):
    """Hydra callback (conf/tune.yaml): the config, the search space and the study folder are
    checked before Hydra writes into the folder."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        try:
            with jobs.as_job(config):
                validate(config)
                params = space.parse(entries(config))
                if config.tune.sampler == "grid":
                    loose = [p for p in params if not hasattr(p.distribution, "choices") and
                             getattr(p.distribution, "step", None) is None]
                    if loose:
                        raise ConfigError("tune.sampler", "grid", f"tpe, random or cmaes: {loose[0].key}="
                                          f"{loose[0].text} is not a list of values (grid: choice or range)")
                space.check(params, base_overrides())
                folder = Path(config.tune.dir)
                if (folder / JOURNAL).exists():  # `run` checks again under the lock
                    same_study(_held(folder / JOURNAL), config, params)
                elif folder.is_dir() and any(folder.iterdir()):
                    raise UsageError(f"tune.dir={config.tune.dir} holds other files and no study; give a new "
                                     "or empty folder")
        except Exception as error:  # Hydra would only warn, and run the job unchecked
            raise jobs.Refused(error) from error


def _held(journal: Path) -> dict | None:
    """What the study in `journal` is of; None while another process is still making it."""
    try:
        return load(journal).user_attrs.get("study")
    except KeyError:  # the journal holds no study yet
        return None
    except Exception as error:  # not a journal Optuna can read
        raise UsageError(f"tune.dir: cannot read the study in {journal}: {type(error).__name__}: {error}") from None


def load(journal: Path, direction: str | None = None):
    """The study in `journal`; made there with `direction` if there is none yet."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(journal)))
    if direction is None:
        return optuna.load_study(study_name="optlab", storage=storage)
    return optuna.create_study(study_name="optlab", storage=storage, direction=direction, load_if_exists=True)


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
    taken = [t.params or t.system_attrs.get("fixed_params", {}) for t in study.get_trials(deepcopy=False) if counted(t)
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


class Pruning:
    """Reports the searched metric after every epoch to the trial; the study's pruner decides."""

    def __init__(self, trial, metric: str):
        self.trial, self.metric = trial, metric

    def should_prune(self, epoch: int, history: list[dict]) -> bool:
        column, best = SO_FAR[self.metric]
        values = [row[column] for row in history]
        self.trial.report(best(values) if best else values[-1], epoch)
        return self.trial.should_prune()


def counted(trial) -> bool:
    """A trial that used up its share of `tune.trials`: finished, pruned, running, or one that
    diverged before it had a value (not queued, nor interrupted, failed, or left by a dead process)."""
    if trial.state.name == "FAIL":
        return trial.user_attrs.get("diverged", False)
    return trial.state.name != "WAITING"


def next_trial(study, distributions: dict, trials: int):
    """A new trial if the study has fewer than `trials`, else None. Trials left running by a
    process of this machine that is gone (killed) fail first, and their settings are queued."""
    for stale in study.get_trials(deepcopy=False, states=(_state("RUNNING"),)):
        attrs = stale.user_attrs
        if attrs.get("host") == socket.gethostname() and not _alive(attrs.get("pid", 0)):
            study.tell(stale.number, state=_state("FAIL"))
            study.enqueue_trial(stale.params, user_attrs={"run": attrs.get("run")})
    if sum(map(counted, study.get_trials(deepcopy=False))) >= trials:
        return None
    trial = study.ask(distributions)
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())
    return trial


def _state(name: str):
    from optuna.trial import TrialState

    return TrialState[name]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0


def run(cfg: DictConfig, study_dir: Path) -> dict:
    """The study: trials until `tune.trials` are done (by this process or others), then the summary."""
    params = space.parse(entries(cfg))
    trials = cfg.tune.trials
    with locked(study_dir):  # one process makes the study; the others load it
        study = load(study_dir / JOURNAL, direction(cfg))
        same_study(study.user_attrs.get("study"), cfg, params)
        study.set_user_attr("study", identity(cfg, params))
        worker = study.user_attrs.get("workers", 0)  # each process its own seed: workers spread out
        study.set_user_attr("workers", worker + 1)
        if cfg.tune.sampler == "grid":
            trials = min(trials, queue_grid(study, params, cfg.tune.seed))
    study.sampler = sampler(cfg.tune.sampler, cfg.tune.seed + worker)
    study.pruner = pruner(cfg.tune.pruner, cfg.epochs)
    distributions = {p.key: p.distribution for p in params}
    own = HydraConfig.instance().cfg  # the tune command's: each trial's run_job sets its own
    log.info("study %s: %s %s over %s, up to %d trials (%s sampler, %s pruner)", relative(study_dir),
             study.direction.name.lower(), cfg.tune.metric, " ".join(p.override(p.text) for p in params),
             trials, cfg.tune.sampler, cfg.tune.pruner)
    while True:
        with locked(study_dir):
            trial = next_trial(study, distributions, trials)
        if trial is None:
            break
        try:
            metrics = run_trial(trial, params, cfg, study_dir)
        finally:
            restore(own)
        value = metrics.get(cfg.tune.metric)
        log.info("trial %d: %s, %s %s", trial.number, metrics["status"], cfg.tune.metric,
                 f"{value:.4f}" if isinstance(value, float) else value)
        if metrics["status"] == "interrupted":
            return metrics
    if not study.get_trials(deepcopy=False, states=(_state("COMPLETE"),)):
        log.info("no trial of the study has finished with a %s yet: nothing to summarize", cfg.tune.metric)
        return {"status": "completed"}
    return finish(study, cfg, study_dir, params)


def run_trial(trial, params: list[space.Param], cfg: DictConfig, study_dir: Path) -> dict:
    """Train one trial in its folder, as a sweep's job trains (Hydra's run_job, then
    `jobs.run`), and tell the study how it went. A failed trial stops the study: a user's
    mistake there would fail every trial alike."""
    from hydra import compose
    from hydra._internal.callbacks import Callbacks
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.utils import JobStatus, run_job
    from hydra.types import HydraContext

    chosen = [(p, trial.params[p.key]) for p in params]
    # a trial queued again after an interruption goes on in its own folder
    name = trial.user_attrs.get("run") or f"{trial.number:03d}_{overrides_name([p.name(v) for p, v in chosen])}"
    trial.set_user_attr("run", name)
    job = compose("config", [*base_overrides(), *(p.override(v) for p, v in chosen)], return_hydra_config=True)
    with read_write(job.hydra), open_dict(job.hydra):
        job.hydra.sweep.dir, job.hydra.sweep.subdir, job.hydra.job.name = str(study_dir), name, "train"
        job.hydra.job.num, job.hydra.job.id = trial.number, f"trial_{trial.number}"
    folder, task = study_dir / name, OmegaConf.masked_copy(job, [k for k in job if k != "hydra"])
    action = jobs.prepare(folder, task)  # `resume` after an interruption; else an earlier attempt is moved aside
    log.info("trial %d: %s%s", trial.number, " ".join(p.name(v) for p, v in chosen),
             f" (resumes {name})" * (action == "resume"))
    context = HydraContext(config_loader=GlobalHydra.instance().config_loader(), callbacks=Callbacks())
    result = run_job(lambda c: jobs.run(c, folder, pruner=Pruning(trial, cfg.tune.metric)), job,
                     "hydra.sweep.dir", "hydra.sweep.subdir", context)
    if result.status == JobStatus.FAILED:
        trial.study.tell(trial, state=_state("FAIL"))  # not counted: fixed, the same command trains it
        trial.study.enqueue_trial(trial.params, user_attrs={"run": name})
        mistake = jobs.failed(folder, task, result._return_value, in_sweep=False)
        if mistake is not None:
            raise UsageError(f"trial {trial.number}: {mistake}")
        raise result._return_value
    metrics, value = result.return_value, result.return_value.get(cfg.tune.metric)
    if metrics["status"] == "pruned":
        trial.study.tell(trial, state=_state("PRUNED"))
    elif metrics["status"] == "interrupted":  # not counted: the next command resumes it in its folder
        trial.study.tell(trial, state=_state("FAIL"))
        trial.study.enqueue_trial(trial.params, user_attrs={"run": name})
    elif isinstance(value, (int, float)) and math.isfinite(value):
        trial.study.tell(trial, value)
    else:  # diverged before its first epoch ended: nothing to compare; the study goes on
        trial.set_user_attr("diverged", True)
        trial.study.tell(trial, state=_state("FAIL"))
    return metrics


def restore(own: DictConfig) -> None:
    """After a trial's run_job: the tune command's Hydra config and its log file (tune.log) again."""
    from hydra.core.utils import configure_log

    HydraConfig.instance().cfg = own
    configure_log(own.hydra.job_logging, own.hydra.verbose)


def finish(study, cfg: DictConfig, study_dir: Path, params: list[space.Param]) -> dict:
    """The summary of every trial, the best as a command to paste, and Optuna's plots."""
    from optlab.compare import summarize

    summarize([study_dir], study_dir, cfg.tune.metric, cfg.summary.x)
    best = study.best_trial
    overrides = [*base_overrides(), *(p.override(best.params[p.key]) for p in params)]
    states = Counter(t.state.name.lower() for t in study.get_trials(deepcopy=False))
    record = {"number": best.number, cfg.tune.metric: best.value, "params": best.params,
              "run": str(relative(study_dir / best.user_attrs["run"])), "command": command("optlab", "train", *overrides),
              "trials": dict(states)}
    write_json(study_dir / "best_trial.json", record)
    plots = optuna_plots(study, study_dir)
    log.info("best: trial %d, %s %.4f (%s)", best.number, cfg.tune.metric, best.value, record["run"])
    log.info("train it: %s", record["command"])
    log.info("written: best_trial.json, %s; the study: optuna-dashboard %s", ", ".join(p.name for p in plots),
             command(relative(study_dir / JOURNAL)))
    return {"status": "completed", **record}


def optuna_plots(study, out: Path) -> list[Path]:
    """Optuna's own figures as PNGs: history, importances, parallel coordinates, intermediate
    values. One that the study cannot draw yet (importances need two finished trials) is skipped."""
    import optuna.visualization.matplotlib as vis

    from optlab.plots import pyplot, save_figure

    pyplot()  # the file-only backend, before Optuna imports pyplot
    written = []
    for name in ("optimization_history", "param_importances", "parallel_coordinate", "intermediate_values"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna's matplotlib plots are "experimental"
                axes = getattr(vis, f"plot_{name}")(study)
        except (ValueError, RuntimeError, ZeroDivisionError) as error:
            log.info("optuna_%s.png: not drawn (%s)", name, error)
            continue
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        figure.set_size_inches(8, 5)
        save_figure(figure, out / f"optuna_{name}.png")
        written.append(out / f"optuna_{name}.png")
    return written

