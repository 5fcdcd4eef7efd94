"""`optlab tune`: the study's loop (ask, train, tell, until `tune.trials` are done here or by
other processes sharing the study, on this host or others), then its summary, its best trial
as a command, and Optuna's plots."""

from __future__ import annotations

import logging
import socket
import time
import warnings
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

from omegaconf import DictConfig

# Optuna's private heartbeat module (checked against Optuna 4.9-5.1): the thread `optimize` runs around a trial
from optuna.storages._heartbeat import get_heartbeat_thread
from optuna.trial import TrialState

from optlab.config.hydra_compat import current_config
from optlab.errors import UsageError
from optlab.jobs.command import Command
from optlab.jobs.tune import space, storage
from optlab.jobs.tune.storage import JOURNAL
from optlab.jobs.tune.study import (
    alone,
    base_overrides,
    counted,
    direction,
    entries,
    open_study,
    run_folder,
    same_study,
    searched,
    take_over,
)
from optlab.jobs.tune.trial import (
    next_trial,
    pruner,
    queue_grid,
    restore,
    run_trials,
    sampler,
)
from optlab.metrics import BY_NAME
from optlab.naming import command, override, path_word, relative
from optlab.store.files import locked, write_json

log = logging.getLogger("optlab")


WAIT_S = 5  # at most this long between two looks at the trials running elsewhere, with no trial left to ask


def run(cfg: DictConfig, study_dir: Path, asked: Command) -> dict:
    """The study: trials until `tune.trials` are done (by this process or others), then the summary."""
    params = space.parse(entries(cfg, asked.search))
    if cfg.tune.get("storage"):
        storage.hide_in(study_dir / ".hydra", cfg.tune.storage)
    study, made, trials = join(cfg, study_dir, params)
    distributions = {p.key: p.distribution for p in params}
    own = current_config()  # the tune command's: each trial's run_job sets its own
    log.info("study %s: %s %s over %s, up to %d trials (%s sampler, %s pruner)", relative(study_dir),
             study.direction.name.lower(), cfg.tune.metric, " ".join(p.override(p.text) for p in params),
             trials, cfg.tune.sampler, "no" if cfg.tune.sampler == "pbt" else cfg.tune.pruner)
    if cfg.tune.workers > 1:  # they train the study; this process then finishes what is left
        from optlab.jobs.tune import workers

        workers.start(cfg, [*asked.words[2:], *asked.search], study_dir, study)
    if cfg.tune.sampler == "pbt":
        once(study, cfg, trials)
    hosts = one_host(study, cfg, set())
    waiting = None
    while True:
        with locked(study_dir):  # up to tune.stack trials at once, trained as one stacked model where they can
            asked_for = take(study, distributions, trials, trials if cfg.tune.sampler == "pbt" else cfg.tune.stack)
        if not asked_for:
            running = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
            if not running:
                break
            if running != waiting:
                log.info("waiting for trial %s, running elsewhere (trained again here if its heartbeat stops "
                         "for tune.grace_s=%g s)", ", ".join(map(str, running)), cfg.tune.grace_s)
            waiting = running
            time.sleep(min(WAIT_S, cfg.tune.grace_s / 4))
            continue
        with ExitStack() as beating:  # each trial's heartbeat, as Optuna's `optimize` keeps one
            for trial in asked_for:
                beating.enter_context(get_heartbeat_thread(trial._trial_id, study._storage))
            try:
                results = run_trials(asked_for, params, cfg, study_dir)
            except UsageError:
                if made and alone(study):  # a refused start leaves no folder, as a refused run leaves none
                    forget(study, cfg, study_dir, asked)
                raise
            finally:
                restore(own)
        for trial, metrics in zip(asked_for, results):
            value = metrics.get(cfg.tune.metric)
            log.info("trial %d: %s, %s %s", trial.number, metrics["status"], cfg.tune.metric,
                     f"{value:.4f}" if isinstance(value, float) else value)
        stopped = [metrics for metrics in results if metrics["status"] == "interrupted"]
        if stopped:
            return stopped[0]
        hosts = one_host(study, cfg, hosts)
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        log.info("no trial of the study has finished with a %s yet: nothing to summarize", cfg.tune.metric)
        return {"status": "completed"}
    return finish(study, cfg, study_dir, params)


def join(cfg: DictConfig, study_dir: Path, params: list[space.Param]):
    """The study this process works on, made if it is new, with its sampler (seeded by this
    process's arrival: workers spread out) and pruner; whether it is new; its trials to reach."""
    trials = cfg.tune.trials
    with locked(study_dir):  # one process of this host makes the study; the others load it
        study = open_study(cfg, direction(cfg))
        made = not study.user_attrs.get("workers")  # no process has worked on it yet
        same_study(study, cfg, params)
        take_over(study, cfg, params)
        worker = study.user_attrs.get("workers", 0)
        study.set_user_attr("workers", worker + 1)
        if cfg.tune.sampler == "grid":
            trials = min(trials, queue_grid(study, params, cfg.tune.seed))
    study.sampler = sampler(cfg.tune.sampler, cfg.tune.seed + worker)
    study.pruner = pruner("none" if cfg.tune.sampler == "pbt" else cfg.tune.pruner, cfg.epochs)  # pbt: exploit instead
    return study, made, trials


def once(study, cfg: DictConfig, trials: int) -> None:
    """A population trains once: a finished one takes no more members (they would be a population
    of their own); one that was interrupted resumes whole."""
    done = [t for t in searched(study) if counted(t)]
    if done and len(done) < trials and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        raise UsageError(f"tune.trials={trials}: {storage.where(cfg)} holds a population of {len(done)} that has "
                         "trained; a population trains once (give a new tune.dir for a larger one)")


def forget(study, cfg: DictConfig, study_dir: Path, asked: Command) -> None:
    """A new study whose first trials were refused: no folder is left, nor a study in a database."""
    asked.discard = study_dir
    if cfg.tune.get("storage"):
        import optuna

        optuna.delete_study(study_name=study.study_name, storage=study._storage)


def take(study, distributions: dict, trials: int, stack: int) -> list:
    """Up to `stack` new trials, while the study has fewer than `trials` (under its lock)."""
    taken = []
    while len(taken) < stack and (trial := next_trial(study, distributions, trials)) is not None:
        taken.append(trial)
    return taken


def one_host(study, cfg: DictConfig, seen: set[str]) -> set[str]:
    """Say once when a study in a file journal has workers on more than one host: a journal is
    for the processes of one machine. Returns the hosts seen so far."""
    hosts = storage.hosts(study) | {socket.gethostname()}
    if not cfg.tune.get("storage") and len(hosts) > 1 and len(seen) < 2:
        log.warning("%s has workers on %d hosts (%s): a file journal is for the processes of one machine (file "
                    "locks on a network file system are not reliable); for workers on several machines keep the "
                    "study in a database: tune.storage=postgresql://...", storage.where(cfg), len(hosts),
                    ", ".join(sorted(hosts)))
    return hosts


def finish(study, cfg: DictConfig, study_dir: Path, params: list[space.Param]) -> dict:
    """The summary of every trial, the best as a command to paste, and Optuna's plots."""
    from optlab.analysis.summary import summarize

    summarize([study_dir], study_dir, cfg.tune.metric, cfg.summary.x)
    best = study.best_trial
    missing = [p.key for p in params if p.key not in best.params]
    if missing:
        raise UsageError(f"{storage.where(cfg)}: the best trial, {best.number}, has no value for {', '.join(missing)}")
    overrides = [*base_overrides(), *(p.override(best.params[p.key]) for p in params)]
    states = Counter(t.state.name.lower() for t in study.get_trials(deepcopy=False))
    record = {"number": best.number, cfg.tune.metric: best.value, "params": best.params,
              "run": str(relative(study_dir / run_folder(best, storage.where(cfg)))),
              "host": best.user_attrs.get("host"), "command": command("optlab", "train", *overrides),
              "trials": dict(states)}
    plots = []
    if cfg.tune.sampler == "pbt":  # the best is a lineage: its schedule, replayed as one run
        record, plots = population_record(study, cfg, study_dir, params, record)
    write_json(study_dir / "best_trial.json", record)
    plots += optuna_plots(study, study_dir)
    log.info("best: trial %d, %s %.4f (%s)", record["number"], cfg.tune.metric, record[cfg.tune.metric], record["run"])
    log.info("train it: %s", record["command"])
    where = storage.masked(cfg.tune.storage) if cfg.tune.get("storage") else path_word(relative(study_dir / JOURNAL))
    log.info("written: best_trial.json, %s; the study: optuna-dashboard %s", ", ".join(p.name for p in plots),
             command(where))
    return {"status": "completed", **record}


def population_record(study, cfg: DictConfig, study_dir: Path, params: list[space.Param], record: dict):
    """best_trial.json for a population: its best lineage, the schedule it trained with and the
    command that replays it as one run; and the population's figure."""
    from optlab.analysis.figures import plot_population
    from optlab.jobs.tune import pbt
    from optlab.store.plots import save_figure

    found = pbt.winner(study, cfg, study_dir, params)  # its folders are those `checked` found sound
    replay = pbt.replay(base_overrides(), found["first"], found["at"], params)
    record = {**record, "number": found["number"], cfg.tune.metric: found["value"],
              "params": {p.key: pbt.as_type(p, found["first"][p.key]) for p in params},
              "run": str(relative(study_dir / found["run"])),
              "lineage": found["lineage"], "schedule": found["at"], "command": replay}
    keys = [p.key for p in params]
    figure = plot_population(found["lines"], found["number"], keys[0], BY_NAME[cfg.tune.metric].per_epoch)
    save_figure(figure, study_dir / "pbt.png")
    log.info("population: trial %d's lineage (%s) scored %s %.4f", found["number"], " → ".join(
        f"trial {n} epochs {a}-{b}" for n, a, b in found["lineage"]), cfg.tune.metric, found["value"])
    return record, [study_dir / "pbt.png"]


def optuna_plots(study, out: Path) -> list[Path]:
    """Optuna's own figures as PNGs: history, importances, parallel coordinates, intermediate
    values. One that the study cannot draw yet (importances need two finished trials) is skipped."""
    import optuna.visualization.matplotlib as vis

    from optlab.store.plots import pyplot, save_figure

    pyplot()  # the file-only backend, before Optuna imports pyplot
    written = []
    reported = any(t.intermediate_values for t in study.get_trials(deepcopy=False))  # pruning reports them
    for name in ("optimization_history", "param_importances", "parallel_coordinate", "intermediate_values"):
        if name == "intermediate_values" and not reported:
            log.info("optuna_intermediate_values.png: not drawn (no trial reported a value per epoch)")
            continue
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


def go_on(words: list[str], study_dir: Path) -> str:
    """The command that goes on with the study: the same arguments, the study's folder quoted
    for Hydra's grammar and for bash; a database's password hidden (give it again, or keep it
    in the database's own password file)."""
    kept = [w for w in words if not w.startswith("tune.dir=")]
    shown = [storage.masked(w) if w.startswith("tune.storage=") else w for w in kept]
    said = command("optlab", "tune", *shown, override("tune.dir", relative(study_dir)))
    return said + " (with the password where *** stands)" * (shown != kept)
