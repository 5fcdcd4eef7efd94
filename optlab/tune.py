"""`optlab tune`: search, not only grids. Optuna samples each trial's settings from a space
(optlab/space.py); every trial is an ordinary run that reports to the study after each epoch, so
a hopeless one is pruned in-process (no Hydra sweeper can: a launcher only hands back a trial's
final value, Hydra #1954).

- The study lives in `<tune.dir>/study.journal` (Optuna's JournalStorage). Trials are counted
  and asked for under a file lock, so several processes on one folder share the study and stop
  at `tune.trials` together; the same command again goes on where the study stopped. Processes
  started at once on a new folder all join the one study. A torn last line (a full disk, a
  partial copy) is moved aside to `study.journal.torn-<time>`; an empty, damaged or foreign
  journal is refused in one line.
- Heartbeats, as Optuna's RDBStorage has them (`Journal`): while a trial trains, its process
  writes the time into it every `tune.grace_s`/4 seconds (30 s by default). A running trial whose
  heartbeat is older than `tune.grace_s` (120 s), on whatever host it ran (killed, a node lost),
  is failed and its settings queued again with its folder: the next process that asks for a
  trial trains it, and a process with no trial left to ask waits for the trials running
  elsewhere, so a dead one is trained again at most `tune.grace_s` + 5 s after its last heartbeat.
- Trial k trains in `<tune.dir>/<k>_<its settings>/` through Hydra's own `run_job` (`.hydra/`,
  `train.log`) and `jobs.run`, as a sweep's job does; a pruned one ends `status: pruned`.
- At the end: the sweep summary, the best trial as an `optlab train` command
  (`best_trial.json`), and Optuna's plots (`optuna_*.png`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import socket
import time
import warnings
from collections import Counter
from functools import partial
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from optuna.storages import JournalStorage, RetryHeartbeatStaleTrialCallback
# Optuna's private heartbeat module (checked against Optuna 4.9-5.1): its RDBStorage's heartbeat, for a journal
from optuna.storages._heartbeat import BaseHeartbeat, get_heartbeat_thread
from optuna.trial import TrialState

from optlab import jobs, space
from optlab.config import ConfigError, UsageError, reason, validate
from optlab.files import atomic_write, locked, refuse_links, stamped, write_json
from optlab.naming import command, override, overrides_name, path_word, relative

log = logging.getLogger("optlab")

JOURNAL = "study.journal"
# what processes starting a study in a new folder write there before the study exists
STARTING = {".hydra", "tune.log", ".lock", f"{JOURNAL}.lock"}
WAIT_S = 5  # at most this long between two looks at the trials running elsewhere, with no trial left to ask
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


def same_study(study, cfg: DictConfig, params: list[space.Param]) -> None:
    """Refuse another search in a study's folder. A study none of whose trials has a result
    (finished, pruned or running: its space was refused, say) takes a corrected space, metric or
    overrides instead (`take_over`); its direction is Optuna's and stays."""
    held, mine = study.user_attrs.get("study"), identity(cfg, params)
    if held is None or held == mine:
        return
    if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)) \
            or held.get("direction") != mine["direction"]:
        differs = "; ".join(f"{k}: {held.get(k)} here, {mine[k]} now" for k in mine if held.get(k) != mine[k])
        raise UsageError(f"tune.dir={cfg.tune.dir} holds another study ({differs}); give another tune.dir")


def take_over(study, cfg: DictConfig, params: list[space.Param]) -> None:
    """Make the study this search's (`same_study` allowed it): trials queued for its earlier
    space fail, and the trials so far no longer count toward `tune.trials`."""
    held = study.user_attrs.get("study")
    if held == identity(cfg, params):
        return
    if held is not None:
        for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        study.set_user_attr("since", len(study.get_trials(deepcopy=False)))
        log.info("the study in %s takes this search (none of its trials had a result): its %d earlier trials "
                 "no longer count", relative(Path(cfg.tune.dir)), study.user_attrs["since"])
    study.set_user_attr("study", identity(cfg, params))


def current(study) -> list:
    """The trials of the study's search (those since it last took another space)."""
    since = study.user_attrs.get("since", 0)
    return [t for t in study.get_trials(deepcopy=False) if t.number >= since]


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
                # tune.log, the journal, the trials' folders; Optuna locks its journal with a link
                refuse_links(folder, itself=False, own=(f"{JOURNAL}.lock",))
                names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
                if JOURNAL in names:  # made under the lock: whole there (`run` checks again)
                    with locked(folder):
                        same_study(load(folder / JOURNAL), config, params)
                elif names - STARTING:  # not another process making the study
                    raise UsageError(f"tune.dir={config.tune.dir} holds other files and no study; give a new "
                                     "or empty folder")
        except Exception as error:  # Hydra would only warn, and run the job unchecked
            raise jobs.Refused(error) from error


class Journal(JournalStorage, BaseHeartbeat):
    """Optuna's JournalStorage with the heartbeat of its RDBStorage (`heartbeat_interval`,
    `grace_period`, `RetryHeartbeatStaleTrialCallback`): Optuna's heartbeat thread records the
    time in a running trial (system attr `heartbeat`) every `grace_s`/4 seconds, and
    `optuna.storages.fail_stale_trials` fails a running trial whose heartbeat is older than
    `grace_s` (host clocks are assumed to agree to a few seconds), whichever host ran it, and
    queues it again with its user attrs (its `run` folder)."""

    def __init__(self, path: Path, grace_s: float = 120):
        from optuna.storages.journal import JournalFileBackend

        super().__init__(JournalFileBackend(str(path)))
        self.grace_s = grace_s

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, "heartbeat", time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        return [t._trial_id for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
                if now - t.system_attrs.get("heartbeat", t.datetime_start.timestamp()) > self.grace_s]

    def get_heartbeat_interval(self) -> float:
        return self.grace_s / 4

    def get_heartbeat_stale_trial_callback(self):
        return self.retry

    def retry(self, study, trial) -> None:
        log.warning("trial %d (%s, pid %s) has sent no heartbeat for %g s: its process is gone, and it is "
                    "trained again", trial.number, trial.user_attrs.get("host", "another host"),
                    trial.user_attrs.get("pid", "?"), self.grace_s)
        RetryHeartbeatStaleTrialCallback()(study, trial)


def load(journal: Path, direction: str | None = None, grace_s: float = 120):
    """The study in `journal` (its trials' heartbeats judged with `grace_s`, see Journal), made
    there with `direction` when there is no journal yet. A journal that is empty, damaged, or not
    an optlab study is refused in one line naming it, and nothing is written to it; once every
    check passed, a torn last line is moved aside (`repair`)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # the heartbeat's
    # optlab asks and tells itself, with Optuna's heartbeat thread around each trial as `optimize` has
    warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used with Study.optimize")
    if not journal.exists():
        if direction is None:
            raise UsageError(f"{journal} does not exist: no study there")
        return optuna.create_study(study_name="optlab", storage=Journal(journal, grace_s), direction=direction)
    if b"\n" not in _head(journal):  # empty, or torn in its first line: no study was ever recorded
        raise UsageError(f"{journal} holds no study (it is empty or its first line is torn): give another "
                         "tune.dir, or remove the file")
    line = _damaged_line(journal)  # Optuna skips a damaged last line, and would fail once one follows it
    if line:
        raise UsageError(f"cannot read the study in {journal}: line {line} is not an Optuna journal entry (its "
                         f"first {line - 1} lines are the study as it was before: keep them to go on with it)")
    study = _optlab_study(journal, grace_s)  # every check first: a refusal writes nothing
    if repair(journal):  # read again without the torn tail it skipped
        study = optuna.load_study(study_name="optlab", storage=Journal(journal, grace_s))
    return study


def _optlab_study(journal: Path, grace_s: float):
    """The optlab study in a journal that Optuna reads, or a one-line refusal naming it."""
    import optuna

    try:
        storage = Journal(journal, grace_s)
        studies = [s.study_name for s in storage.get_all_studies()]
    except Exception as error:  # entries Optuna cannot replay
        raise UsageError(f"cannot read the study in {journal}: {reason(error)}") from None
    if studies != ["optlab"]:
        raise UsageError(f"{journal} is not an optlab study (it holds {', '.join(map(repr, studies)) or 'no study'}): "
                         "give another tune.dir")
    study = optuna.load_study(study_name="optlab", storage=storage)
    held, since = study.user_attrs.get("study"), study.user_attrs.get("since", 0)
    if not isinstance(held, dict) and (held is not None or study.get_trials(deepcopy=False)) or \
            not isinstance(since, int) or not isinstance(study.user_attrs.get("workers", 0), int):
        raise UsageError(f"{journal} is not an optlab study (its study 'optlab' has trials and no search): "
                         "give another tune.dir")
    finished: dict[str, int] = {}  # a finished trial's folder is its record: no other trial trains there
    trials = study.get_trials(deepcopy=False)
    for trial in trials:
        name = run_folder(trial, journal.parent)
        if trial.state == TrialState.COMPLETE and not (
                len(trial.values) == 1 and isinstance(trial.value, (int, float)) and math.isfinite(trial.value)):
            raise UsageError(f"{journal}: trial {trial.number}'s value {trial.values!r} is not a finite number")
        if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
            if name is None or name in finished:
                raise UsageError(f"{journal}: trial {trial.number} finished "
                                 f"{f'in the folder of trial {finished[name]}' if name else 'in no folder'}")
            finished[name] = trial.number
    for trial in trials:
        name = trial.user_attrs.get("run")
        if trial.state == TrialState.WAITING and name in finished:
            raise UsageError(f"{journal}: trial {trial.number} would train in the folder of finished trial "
                             f"{finished[name]} ({name})")
    return study


def repair(journal: Path) -> bool:
    """Move a torn last line (no line end: a full disk, a partial copy) aside to
    `study.journal.torn-<time>` and cut the journal back to its last whole line. Optuna skips
    such a line, and a line appended after it would make the whole journal unreadable. Done under
    Optuna's own journal lock: a line being appended is not torn. Returns whether it cut."""
    from optuna.storages.journal import JournalFileSymlinkLock

    if _whole(journal):
        return False
    lock = JournalFileSymlinkLock(str(journal))
    try:
        lock.acquire()
    except OSError as error:
        raise UsageError(f"cannot repair {journal} (its last line is torn): {reason(error)}") from None
    try:
        data = journal.read_bytes()
        cut = data.rfind(b"\n") + 1
        if cut == len(data):
            return False
        aside = next(p for p in stamped(journal.parent, f"{journal.name}.torn-") if not p.exists())
        atomic_write(aside, lambda f: f.write(data[cut:]))
        os.truncate(journal, cut)
    finally:
        lock.release()
    log.warning("%s: its last line was torn (a full disk, a partial copy): moved aside to %s", journal, aside.name)
    return True


def _whole(journal: Path) -> bool:
    """Whether the journal ends with a line end (or is empty)."""
    with journal.open("rb") as f:
        if f.seek(0, os.SEEK_END) == 0:
            return True
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _head(journal: Path) -> bytes:
    with journal.open("rb") as f:
        return f.read(1 << 16)


def _damaged_line(journal: Path) -> int | None:
    """The number of the first whole line of `journal` that is not an Optuna journal entry (a
    torn last line, with no line end, is `repair`'s)."""
    with journal.open("rb") as f:
        for number, line in enumerate(f, 1):
            if not line.endswith(b"\n"):
                return None
            try:
                entry = json.loads(line)
            except ValueError:
                return number
            if not isinstance(entry, dict) or "op_code" not in entry:
                return number
    return None


def run_folder(trial, study_dir: Path) -> str | None:
    """The trial's folder name as the journal records it (`run`), refused in one line naming the
    journal unless it is a trial's folder right inside the study's (`<number>_<settings>`)."""
    name = trial.user_attrs.get("run")
    if name is not None and not (isinstance(name, str) and re.fullmatch(r"\d+_[^/\\\x00-\x1f\x7f]+", name)):
        raise UsageError(f"{study_dir / JOURNAL}: trial {trial.number}'s run folder {name!r} is not a trial's "
                         "folder in the study's (<number>_<settings>)")
    return name


def go_on(words: list[str], study_dir: Path) -> str:
    """The command that goes on with the study: the same arguments, the study's folder quoted
    for Hydra's grammar and for bash."""
    kept = [w for w in words if not w.startswith("tune.dir=")]
    return command("optlab", "tune", *kept, override("tune.dir", relative(study_dir)))


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
    taken = [t.params or t.system_attrs.get("fixed_params", {}) for t in current(study) if counted(t)
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
    """A new trial if the study has fewer than `trials`, else None (called under the study's
    lock). Trials whose process died (no heartbeat for `tune.grace_s`, see Journal) fail first,
    and their settings are queued again."""
    from optuna.storages import fail_stale_trials

    fail_stale_trials(study)
    if sum(map(counted, current(study))) >= trials:
        return None
    trial = study.ask(distributions)
    study._storage.record_heartbeat(trial._trial_id)  # a queued trial's old heartbeat is not its own
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())
    return trial


def run(cfg: DictConfig, study_dir: Path) -> dict:
    """The study: trials until `tune.trials` are done (by this process or others), then the summary."""
    params = space.parse(entries(cfg))
    trials = cfg.tune.trials
    with locked(study_dir):  # one process makes the study; the others load it
        made = not (study_dir / JOURNAL).exists()
        study = load(study_dir / JOURNAL, direction(cfg), cfg.tune.grace_s)
        same_study(study, cfg, params)
        take_over(study, cfg, params)
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
    waiting = None
    while True:
        with locked(study_dir):
            trial = next_trial(study, distributions, trials)
        if trial is None:
            running = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
            if not running:
                break
            if running != waiting:
                log.info("waiting for trial %s, running elsewhere (trained again here if its heartbeat stops "
                         "for tune.grace_s=%g s)", ", ".join(map(str, running)), cfg.tune.grace_s)
            waiting = running
            time.sleep(min(WAIT_S, cfg.tune.grace_s / 4))
            continue
        with get_heartbeat_thread(trial._trial_id, study._storage):
            try:
                metrics = run_trial(trial, params, cfg, study_dir)
            except UsageError:
                if made and alone(study):  # a refused start leaves no folder, as a refused run leaves none
                    jobs.current.discard = study_dir
                raise
            finally:
                restore(own)
        value = metrics.get(cfg.tune.metric)
        log.info("trial %d: %s, %s %s", trial.number, metrics["status"], cfg.tune.metric,
                 f"{value:.4f}" if isinstance(value, float) else value)
        if metrics["status"] == "interrupted":
            return metrics
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        log.info("no trial of the study has finished with a %s yet: nothing to summarize", cfg.tune.metric)
        return {"status": "completed"}
    return finish(study, cfg, study_dir, params)


def alone(study) -> bool:
    """Whether only this process has worked on the study (no other joined, no trial of another's)."""
    return study.user_attrs.get("workers") == 1 and all(
        t.user_attrs.get("pid") == os.getpid() or t.state == TrialState.WAITING for t in study.get_trials(deepcopy=False))


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
    # a trial queued again after an interruption goes on in its own folder (never a finished one's: `load`)
    name = run_folder(trial, study_dir) or f"{trial.number:03d}_{overrides_name([p.name(v) for p, v in chosen])}"
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
        trial.study.tell(trial, state=TrialState.FAIL)  # not counted: fixed, the same command trains it
        trial.study.enqueue_trial(trial.params, user_attrs={"run": name})
        mistake = jobs.failed(folder, task, result._return_value, in_sweep=False)
        if mistake is not None:
            raise UsageError(f"trial {trial.number}: {mistake}")
        raise result._return_value
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

    HydraConfig.instance().cfg = own
    configure_log(own.hydra.job_logging, own.hydra.verbose)


def finish(study, cfg: DictConfig, study_dir: Path, params: list[space.Param]) -> dict:
    """The summary of every trial, the best as a command to paste, and Optuna's plots."""
    from optlab.compare import summarize

    summarize([study_dir], study_dir, cfg.tune.metric, cfg.summary.x)
    best = study.best_trial
    missing = [p.key for p in params if p.key not in best.params]
    if missing:
        raise UsageError(f"{study_dir / JOURNAL}: the best trial, {best.number}, has no value for {', '.join(missing)}")
    overrides = [*base_overrides(), *(p.override(best.params[p.key]) for p in params)]
    states = Counter(t.state.name.lower() for t in study.get_trials(deepcopy=False))
    record = {"number": best.number, cfg.tune.metric: best.value, "params": best.params,
              "run": str(relative(study_dir / run_folder(best, study_dir))),
              "command": command("optlab", "train", *overrides), "trials": dict(states)}
    write_json(study_dir / "best_trial.json", record)
    plots = optuna_plots(study, study_dir)
    log.info("best: trial %d, %s %.4f (%s)", best.number, cfg.tune.metric, best.value, record["run"])
    log.info("train it: %s", record["command"])
    log.info("written: best_trial.json, %s; the study: optuna-dashboard %s", ", ".join(p.name for p in plots),
             command(path_word(relative(study_dir / JOURNAL))))
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

