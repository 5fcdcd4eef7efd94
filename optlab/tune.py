"""`optlab tune`: search, not only grids. Optuna samples each trial's settings from a space
written in Hydra's sweep grammar; every trial is an ordinary run, reported to the study after
each epoch, so that a hopeless one is pruned in-process (no Hydra sweeper can: a launcher only
hands back a trial's final value, Hydra #1954).

- The space: `key=choice(a,b)`, `key=interval(low,high)`, `key=range(start,stop,step)`, with
  `tag(log, ...)` for a log scale and `tag(int, interval(...))` for integers, on the command
  line or in a `conf/search/<name>.yaml` preset (`tune.params`). Checked whole, against the
  config, before any trial trains (`StudyGuard`).
- The study lives in `<tune.dir>/study.journal` (Optuna's JournalStorage). Trials are counted
  and asked for under a file lock, so several processes on one folder share the study and stop
  at `tune.trials` together; running the command again goes on where it stopped.
- Trial k trains in `<tune.dir>/<k>_<its settings>/` through Hydra's own `run_job` (its
  `.hydra/`, `train.log`), with `optlab train`'s files; a pruned one ends `status: pruned`.
- At the end: the sweep summary, the best trial as an `optlab train` command
  (`best_trial.json`), and Optuna's plots (`optuna_*.png`).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import logging
import math
import os
import random
import socket
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from optlab import jobs
from optlab.config import ConfigError, UsageError, describe, validate
from optlab.files import write_json
from optlab.naming import command, overrides_name, relative

log = logging.getLogger("optlab")

JOURNAL = "study.journal"
SEARCH = "choice(a,b), interval(low,high), range(start,stop,step), tag(log, interval(low,high)), tag(int, ...)"


@dataclass
class Param:
    """One searched key: its distribution, and the values a check composes (its ends, or every choice)."""

    key: str
    text: str  # as written: `tag(log, interval(1e-4, 1))`
    distribution: object  # an optuna.distributions object
    probes: list

    def override(self, value) -> str:
        return f"{self.key}={value!r}" if isinstance(value, float) else f"{self.key}={value}"

    def name(self, value) -> str:
        """`key=value` for a folder name: floats to 4 significant digits."""
        return f"{self.key}={value:.4g}" if isinstance(value, float) else f"{self.key}={value}"


def split_search(args: list[str]) -> tuple[list[str], list[str]]:
    """(plain overrides and flags, search expressions): Hydra would read `choice(...)` as a sweep."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    plain, search = [], []
    for arg in args:
        try:
            is_search = not arg.startswith("-") and parser.parse_override(arg).is_sweep_override()
        except HydraException:  # Hydra reports it, in its own words
            is_search = False
        (search if is_search else plain).append(arg)
    return plain, search


def space(cfg: DictConfig) -> dict[str, str]:
    """key → search expression: the preset's `tune.params`, then the command line's."""
    entries = dict(OmegaConf.to_container(cfg.tune.params))
    entries.update(arg.split("=", 1) for arg in jobs.current.search)
    if not entries:
        raise UsageError(f"nothing to search: give keys like optimizer.lr='tag(log,interval(1e-4,1))' or "
                         f"search=<preset> (allowed: {SEARCH})")
    return entries


def parse(entries: dict[str, str]) -> list[Param]:
    """The search space as Optuna distributions; a malformed entry is the user's to fix."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    parser = OverridesParser.create()
    params = []
    for key, text in entries.items():
        try:
            override = parser.parse_override(f"{key}={text}")
        except HydraException as error:
            raise ConfigError(key, text, SEARCH, "cannot parse the search expression for") from error
        value = override.value()
        if not override.is_sweep_override():
            raise ConfigError(key, text, SEARCH, "not a search expression for")
        if override.is_interval_sweep():
            low, high, tags = value.start, value.end, value.tags
            if not low < high:
                raise ConfigError(key, text, "interval(low, high) with low < high", "reversed interval for")
            if "log" in tags and low <= 0:
                raise ConfigError(key, text, "a log interval with 0 < low < high", "log scale through 0 for")
            if "int" in tags:
                if low != int(low) or high != int(high):
                    raise ConfigError(key, text, "integer ends with tag(int, ...)")
                params.append(Param(key, text, IntDistribution(int(low), int(high), log="log" in tags),
                                    [int(low), int(high)]))
            else:
                params.append(Param(key, text, FloatDistribution(low, high, log="log" in tags), [low, high]))
        else:
            choices = list(override.sweep_string_iterator())
            params.append(Param(key, text, CategoricalDistribution(choices), choices))
    return params


def check(params: list[Param], base: list[str]) -> None:
    """Compose and validate the config at every choice and both ends of every interval (the
    other keys at their first value): an unknown key, an unknown option or a value out of range
    ends the command before any trial trains."""
    from hydra import compose

    for param in params:
        for probe in param.probes:
            overrides = [*base, *(p.override(probe if p is param else p.probes[0]) for p in params)]
            try:
                validate(compose("config", overrides))
            except UsageError as error:
                raise UsageError(f"search space: {param.key}={param.text}: {error}") from None
            except Exception as error:  # Hydra's composition: an unknown key or option
                raise UsageError(f"search space: {param.key}={param.text}: {describe(error, overrides)}") from None


def base_overrides() -> list[str]:
    """The command line's plain overrides that every trial gets (not `tune.*` or `search=`)."""
    return [o for o in HydraConfig.get().overrides.task if not o.lstrip("+~").startswith(("tune.", "search="))]


def direction(cfg: DictConfig) -> str:
    from optlab.compare import MINIMIZED

    if cfg.tune.direction != "auto":
        return cfg.tune.direction
    return "minimize" if cfg.tune.metric in MINIMIZED else "maximize"


def describe_study(cfg: DictConfig, entries: dict[str, str]) -> dict:
    """What a study is of: a folder holds one, and a different command must not join it."""
    return {"metric": cfg.tune.metric, "direction": direction(cfg), "space": entries, "base": base_overrides()}


class StudyGuard(Callback):
    """Hydra callback (conf/tune.yaml): the search space and the config are checked, and a
    study already in `tune.dir` must be the same study, before Hydra writes into the folder."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        try:
            with jobs.as_job(config):
                validate(config)
                entries = space(config)
                params = parse(entries)
                if config.tune.sampler == "grid" and any(not hasattr(p.distribution, "choices") for p in params):
                    loose = next(p for p in params if not hasattr(p.distribution, "choices"))
                    raise ConfigError("tune.sampler", "grid", f"tpe, random or cmaes: {loose.key}={loose.text} "
                                      "is not a list of values (use choice(...) or range(...) for a grid)")
                check(params, base_overrides())
                existing = Path(config.tune.dir) / JOURNAL
                if existing.exists():  # `run` checks again under the lock: another process may be making it
                    same_study(_held(existing), config, entries)
        except Exception as error:  # Hydra would only warn, and run the job unchecked
            raise jobs.Refused(error) from error


def _held(journal: Path) -> dict | None:
    """What the study in `journal` is of; None while another process is still making it."""
    try:
        return load(journal).user_attrs.get("study")
    except KeyError:  # the journal holds no study yet
        return None


def same_study(held: dict | None, cfg: DictConfig, entries: dict[str, str]) -> None:
    if held is not None and held != describe_study(cfg, entries):
        raise UsageError(f"tune.dir={cfg.tune.dir} holds another study ({json.dumps(held)}); "
                         "give a new tune.dir, or that study's command")


def load(journal: Path, direction: str | None = None):
    """The study in `journal`: made there with `direction` if there is none yet."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(journal)))
    if direction is None:
        return optuna.load_study(study_name="optlab", storage=storage)
    return optuna.create_study(study_name="optlab", storage=storage, direction=direction, load_if_exists=True)


def sampler(name: str, seed: int):
    """The study's sampler; `grid` is served from the queue (`grid`), so any sampler would do."""
    import optuna

    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name in ("random", "grid"):
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)  # constant_liar: parallel workers spread out


def grid(params: list[Param], seed: int) -> list[dict]:
    """Every combination of the choices, in a seeded order. Optuna's GridSampler stops its study
    from inside `tell`, which only works within `study.optimize`; these are queued instead."""
    points = [dict(zip([p.key for p in params], values))
              for values in itertools.product(*(p.distribution.choices for p in params))]
    random.Random(seed).shuffle(points)
    return points


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
        self.trial.report(value_so_far(self.metric, history), epoch)
        return self.trial.should_prune()


def value_so_far(metric: str, history: list[dict]) -> float:
    """`metric` (one of config.TUNE_METRICS) as it stands after the epochs in `history`."""
    column = metric.removeprefix("best_").removeprefix("final_")
    values = [row[column] for row in history]
    if metric.startswith("final_"):
        return values[-1]
    return min(values) if "loss" in metric else max(values)


@contextlib.contextmanager
def locked(folder: Path):
    """One process at a time counts and asks for trials in `folder`."""
    with open(folder / "study.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def counted(trial) -> bool:
    """A trial that used up its share of `tune.trials`: finished, pruned, running, or failed on
    its own (not queued, interrupted, nor left by a process that died)."""
    from optuna.trial import TrialState

    if trial.state == TrialState.FAIL:
        return trial.user_attrs.get("failed", False)
    return trial.state != TrialState.WAITING


def next_trial(study, distributions: dict, trials: int):
    """A new trial if the study has fewer than `trials`, else None. Trials left running by a
    process of this machine that is gone (killed) fail first, so that they are run again."""
    from optuna.trial import TrialState

    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = stale.user_attrs
        if attrs.get("host") == socket.gethostname() and not _alive(attrs.get("pid", 0)):
            study.tell(stale.number, state=TrialState.FAIL)
            study.enqueue_trial(stale.params, user_attrs={"run": attrs.get("run")})  # its folder gets its run
    if sum(map(counted, study.get_trials(deepcopy=False))) >= trials:
        return None
    trial = study.ask(distributions)
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())
    return trial


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
    from optuna.trial import TrialState

    entries = space(cfg)
    params = parse(entries)
    with locked(study_dir):  # one process makes the study; the others load it
        study = load(study_dir / JOURNAL, direction(cfg))
        same_study(study.user_attrs.get("study"), cfg, entries)
        if "study" not in study.user_attrs:  # a new study
            study.set_user_attr("study", describe_study(cfg, entries))
            for point in grid(params, cfg.tune.seed) if cfg.tune.sampler == "grid" else []:
                study.enqueue_trial(point)
        worker = study.user_attrs.get("workers", 0)  # each process its own seed: workers spread out
        study.set_user_attr("workers", worker + 1)
    study.sampler = sampler(cfg.tune.sampler, cfg.tune.seed + worker)
    study.pruner = pruner(cfg.tune.pruner, cfg.epochs)
    trials = cfg.tune.trials
    if cfg.tune.sampler == "grid":
        trials = min(trials, math.prod(len(p.distribution.choices) for p in params))
    distributions = {p.key: p.distribution for p in params}
    own = HydraConfig.instance().cfg  # the tune command's: each trial's run_job sets its own
    log.info("study %s: %s %s by %s, up to %d trials (%s sampler, %s pruner)", relative(study_dir),
             study.direction.name.lower(), cfg.tune.metric, ", ".join(f"{k}={v}" for k, v in entries.items()),
             trials, cfg.tune.sampler, cfg.tune.pruner)
    while True:
        with locked(study_dir):
            trial = next_trial(study, distributions, trials)
        if trial is None:
            break
        try:
            outcome = run_trial(trial, params, cfg, study_dir)
        finally:
            restore(own)
        if outcome == "interrupted":
            return {"status": "interrupted", "interrupted_by": "SIGINT"}
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return finish(study, cfg, study_dir, params) if done else {"status": "completed", "trials": 0}


def run_trial(trial, params: list[Param], cfg: DictConfig, study_dir: Path) -> str:
    """Train one trial in its own folder through Hydra's run_job; tell the study how it went."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.utils import JobStatus, run_job
    from hydra.types import HydraContext
    from hydra._internal.callbacks import Callbacks
    from optuna.trial import TrialState

    chosen = [(p, trial.params[p.key]) for p in params]
    # a trial queued again after an interruption goes on in its own folder
    name = trial.user_attrs.get("run") or f"{trial.number:03d}_{overrides_name([p.name(v) for p, v in chosen])}"
    trial.set_user_attr("run", name)
    overrides = [*base_overrides(), *(p.override(v) for p, v in chosen)]
    job = compose("config", overrides, return_hydra_config=True)
    with read_write(job.hydra), open_dict(job.hydra):
        job.hydra.sweep.dir, job.hydra.sweep.subdir, job.hydra.job.name = str(study_dir), name, "train"
        job.hydra.job.num, job.hydra.job.id = trial.number, f"trial_{trial.number}"
    folder, task = study_dir / name, OmegaConf.masked_copy(job, [k for k in job if k != "hydra"])
    action = jobs.prepare(folder, task)  # `resume` after an interruption; else an earlier attempt is moved aside
    context = HydraContext(config_loader=GlobalHydra.instance().config_loader(), callbacks=Callbacks())
    log.info("trial %d: %s%s", trial.number, " ".join(p.name(v) for p, v in chosen),
             f" (resumes {name})" * (action == "resume"))
    result = run_job(partial(_train, Pruning(trial, cfg.tune.metric), action == "resume"), job,
                     "hydra.sweep.dir", "hydra.sweep.subdir", context)
    if result.status == JobStatus.FAILED:
        jobs.failed(folder, task, result._return_value, in_sweep=True)
        jobs.current.failed.append(str(folder))
        trial.set_user_attr("failed", True)
        study_tell(trial, TrialState.FAIL)
        return "failed"
    metrics = result.return_value
    value = metrics.get(cfg.tune.metric)
    if metrics["status"] == "pruned":
        study_tell(trial, TrialState.PRUNED)
    elif metrics["status"] == "interrupted":
        study_tell(trial, TrialState.FAIL)  # not counted: the next command resumes these settings
        trial.study.enqueue_trial(trial.params, user_attrs={"run": name})
    elif isinstance(value, (int, float)) and math.isfinite(value):
        study_tell(trial, TrialState.COMPLETE, value)
    else:  # diverged before its first epoch ended: nothing to compare; the study goes on
        trial.set_user_attr("failed", True)
        study_tell(trial, TrialState.FAIL)
    log.info("trial %d: %s, %s %s", trial.number, metrics["status"], cfg.tune.metric,
             f"{value:.4f}" if isinstance(value, float) else value)
    return metrics["status"]


def study_tell(trial, state, value: float | None = None) -> None:
    trial.study.tell(trial, value, state=state)


def _train(pruning: Pruning, resume: bool, cfg: DictConfig) -> dict:
    """A trial's job, inside run_job: an ordinary run that reports to the study."""
    from optlab.train import train

    validate(cfg)
    return train(cfg, Path(HydraConfig.get().runtime.output_dir), resume=resume, pruner=pruning)


def restore(own: DictConfig) -> None:
    """After a trial's run_job: the tune command's Hydra config and its log file (tune.log) again."""
    from hydra.core.utils import configure_log

    HydraConfig.instance().cfg = own
    configure_log(own.hydra.job_logging, own.hydra.verbose)


def finish(study, cfg: DictConfig, study_dir: Path, params: list[Param]) -> dict:
    """The summary of every trial, the best as a command to paste, and Optuna's plots."""
    from optlab.compare import summarize

    summarize([study_dir], study_dir, cfg.tune.metric, cfg.summary.x)
    best = study.best_trial
    overrides = [*base_overrides(), *(p.override(best.params[p.key]) for p in params)]
    record = {"number": best.number, cfg.tune.metric: best.value, "params": best.params,
              "run": str(relative(study_dir / best.user_attrs["run"])), "command": command("optlab", "train", *overrides),
              "trials": {state.name.lower(): n for state, n in _states(study).items()}}
    write_json(study_dir / "best_trial.json", record)
    plots = optuna_plots(study, study_dir)
    log.info("best: trial %d, %s %.4f (%s)", best.number, cfg.tune.metric, best.value, record["run"])
    log.info("train it: %s", record["command"])
    log.info("written: best_trial.json, %s; the study: optuna-dashboard %s", ", ".join(p.name for p in plots),
             command(relative(study_dir / JOURNAL)))
    return {"status": "completed", **record}


def _states(study) -> dict:
    counts: dict = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state] = counts.get(trial.state, 0) + 1
    return counts


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
