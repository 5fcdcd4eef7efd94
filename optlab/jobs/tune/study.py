"""A study: made or loaded where it lives (its folder's journal or a database, see
storage.py), checked against the search it was made for, its journal repaired after a torn
write, and guarded before Hydra writes into its folder."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import socket
import warnings
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from optlab import metrics
from optlab.config.checks import validate
from optlab.config.hydra_compat import as_job
from optlab.errors import ConfigError, Refused, UsageError, reason
from optlab.jobs.tune import space, storage
from optlab.jobs.tune.storage import JOURNAL, Journal
from optlab.naming import relative
from optlab.store.files import atomic_write, locked, refuse_links, stamped

log = logging.getLogger("optlab")


# what processes starting a study in a new folder write there before the study exists
STARTING = {".hydra", "tune.log", ".lock", f"{JOURNAL}.lock"}


def load(journal: Path, direction: str | None = None, grace_s: float = 120):
    """The study in `journal` (its trials' heartbeats judged with `grace_s`, see Journal), made
    there with `direction` when there is no journal yet. A journal that is empty, damaged, or not
    an optlab study is refused in one line naming it, and nothing is written to it; once every
    check passed, a torn last line is moved aside (`repair`)."""
    import optuna

    _quiet()
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


def open_study(cfg: DictConfig, direction: str | None = None):
    """The study `cfg` names (see storage.py): in its database when `tune.storage` is set, else
    in its folder's journal; made there with `direction` when there is none yet."""
    if cfg.tune.get("storage"):
        return load_database(cfg, direction)
    return load(Path(cfg.tune.dir) / JOURNAL, direction, cfg.tune.grace_s)


def load_database(cfg: DictConfig, direction: str | None = None):
    """The study `cfg` names in its database (`tune.storage`, `tune.study_name`), made there with
    `direction` when there is none yet (None when there is none and no `direction`); checked as a
    journal's study is."""
    import optuna

    _quiet()
    url, name = cfg.tune.storage, storage.name(cfg)
    if direction is None and not storage.has_studies(url):
        return None  # a database no study was ever made in: left as it is
    db = storage.database(url, cfg.tune.grace_s)
    try:
        made = name not in {s.study_name for s in db.get_all_studies()}
        if made and direction is None:
            return None
        # load_if_exists: another worker may make it first
        study = optuna.create_study(study_name=name, storage=db, direction=direction, load_if_exists=True) \
            if made else optuna.load_study(study_name=name, storage=db)
    except Exception as error:  # a server that does not answer, a table it cannot read
        raise UsageError(f"tune.storage={storage.masked(url)}: cannot open the study database: "
                         f"{storage.hidden(reason(error), url)}") from None
    return checked(study, storage.where(cfg))


def _quiet() -> None:
    """Optuna's log and warnings, as optlab uses it."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # the heartbeat's
    # optlab asks and tells itself, with Optuna's heartbeat thread around each trial as `optimize` has
    warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used with Study.optimize")


def _optlab_study(journal: Path, grace_s: float):
    """The optlab study in a journal that Optuna reads, or a one-line refusal naming it."""
    import optuna

    try:
        kept = Journal(journal, grace_s)
        studies = [s.study_name for s in kept.get_all_studies()]
    except Exception as error:  # entries Optuna cannot replay
        raise UsageError(f"cannot read the study in {journal}: {reason(error)}") from None
    if studies != ["optlab"]:
        raise UsageError(f"{journal} is not an optlab study (it holds {', '.join(map(repr, studies)) or 'no study'}): "
                         "give another tune.dir")
    return checked(optuna.load_study(study_name="optlab", storage=kept), str(journal))


def checked(study, where: str):
    """The study, once it is an optlab study whose trials' values and folders are sound; else a
    one-line refusal naming `where` it lives."""
    held, since = study.user_attrs.get("study"), study.user_attrs.get("since", 0)
    if not isinstance(held, dict) and (held is not None or study.get_trials(deepcopy=False)) or \
            not isinstance(since, int) or not isinstance(study.user_attrs.get("workers", 0), int):
        raise UsageError(f"{where} is not an optlab study (its study {study.study_name!r} has trials and no search): "
                         f"give another tune.dir{' or tune.study_name' * (not where.endswith(JOURNAL))}")
    finished: dict[str, int] = {}  # a finished trial's folder is its record: no other trial trains there
    trials = study.get_trials(deepcopy=False)
    for trial in trials:
        name = run_folder(trial, where)
        if trial.state == TrialState.COMPLETE and not (
                len(trial.values) == 1 and isinstance(trial.value, (int, float)) and math.isfinite(trial.value)):
            raise UsageError(f"{where}: trial {trial.number}'s value {trial.values!r} is not a finite number")
        if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
            if name is None or name in finished:
                raise UsageError(f"{where}: trial {trial.number} finished "
                                 f"{f'in the folder of trial {finished[name]}' if name else 'in no folder'}")
            finished[name] = trial.number
    for trial in trials:
        name = trial.user_attrs.get("run")
        if trial.state == TrialState.WAITING and name in finished:
            raise UsageError(f"{where}: trial {trial.number} would train in the folder of finished trial "
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


def run_folder(trial, where: str) -> str | None:
    """The trial's folder name as the study records it (`run`), refused in one line naming
    `where` the study lives unless it is a trial's folder right inside the study's
    (`<number>_<settings>`)."""
    name = trial.user_attrs.get("run")
    if name is not None and not (isinstance(name, str) and re.fullmatch(r"\d+_[^/\\\x00-\x1f\x7f]+", name)):
        raise UsageError(f"{where}: trial {trial.number}'s run folder {name!r} is not a trial's "
                         "folder in the study's (<number>_<settings>)")
    return name


def identity(cfg: DictConfig, params: list[space.Param]) -> dict:
    """What a study is of: a folder holds one, and another search must not join it."""
    held = {"metric": cfg.tune.metric, "direction": direction(cfg), "space": space.described(params),
            "overrides": sorted(base_overrides())}
    if cfg.tune.sampler == "pbt":  # a population goes on only as it began: its moves depend on these
        held["pbt"] = OmegaConf.to_container(cfg.tune.pbt)
    return held


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
        if cfg.tune.get("storage"):
            raise UsageError(f"the study {storage.name(cfg)!r} in {storage.masked(cfg.tune.storage)} is another "
                             f"search ({differs}); give another tune.study_name or tune.dir")
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


def searched(study) -> list:
    """The trials of the study's search (those since it last took another space)."""
    since = study.user_attrs.get("since", 0)
    return [t for t in study.get_trials(deepcopy=False) if t.number >= since]


class StudyGuard(Callback):
    """Hydra callback (conf/tune.yaml): the config, the search space and the study folder are
    checked before Hydra writes into the folder. `search`: the command line's search
    expressions as a JSON list, which `optlab tune` passes as this callback's own config key."""

    def __init__(self, search: str = "[]"):
        self.search = json.loads(search)

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        try:
            with as_job(config):
                validate(config)
                params = space.parse(entries(config, self.search))
                if config.tune.sampler == "grid":
                    loose = [p for p in params if not hasattr(p.distribution, "choices") and
                             getattr(p.distribution, "step", None) is None]
                    if loose:
                        raise ConfigError("tune.sampler", "grid", f"tpe, random or cmaes: {loose[0].key}="
                                          f"{loose[0].text} is not a list of values (grid: choice or range)")
                space.check(params, base_overrides())
                if config.tune.sampler == "pbt":
                    from optlab.jobs.tune.pbt import check

                    check(config, params)
                if config.tune.workers > 1:
                    from optlab.jobs.tune.workers import require

                    require(config)
                if config.tune.get("study_name") and not config.tune.get("storage"):
                    raise UsageError(f"tune.study_name={config.tune.study_name} names a study in a database, and "
                                     "tune.storage is not set (the study is tune.dir's journal): give tune.storage, "
                                     "or leave tune.study_name out")
                folder = Path(config.tune.dir)
                # tune.log, the journal, the trials' folders; Optuna locks its journal with a link
                refuse_links(folder, itself=False, own=(f"{JOURNAL}.lock",))
                names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
                if config.tune.get("storage"):  # the folder holds this host's trials, the database the study
                    if JOURNAL in names:
                        raise UsageError(f"tune.dir={config.tune.dir} holds a study in its {JOURNAL}: go on with "
                                         "it without tune.storage, or give another tune.dir")
                    study = load_database(config)
                    if study is not None:
                        same_study(study, config, params)
                    elif names - STARTING:
                        raise UsageError(f"tune.dir={config.tune.dir} holds other files and {storage.where(config)} "
                                         "is no study yet; give a new or empty folder")
                elif JOURNAL in names:  # made under the lock: whole there (`run` checks again)
                    with locked(folder):
                        same_study(load(folder / JOURNAL), config, params)
                elif names - STARTING:  # not another process making the study
                    raise UsageError(f"tune.dir={config.tune.dir} holds other files and no study; give a new "
                                     "or empty folder")
        except Exception as error:  # Hydra would only warn, and run the job unchecked
            raise Refused(error) from error


def alone(study) -> bool:
    """Whether only this process has worked on the study (no other joined, no trial of another's)."""
    me = (socket.gethostname(), os.getpid())
    return study.user_attrs.get("workers") == 1 and all(
        (t.user_attrs.get("host"), t.user_attrs.get("pid")) == me or t.state == TrialState.WAITING
        for t in study.get_trials(deepcopy=False))


def counted(trial) -> bool:
    """A trial that used up its share of `tune.trials`: finished, pruned, running, or one that
    diverged before it had a value (not queued, nor interrupted, failed, or left by a dead process)."""
    if trial.state.name == "FAIL":
        return trial.user_attrs.get("diverged", False)
    return trial.state.name != "WAITING"


def entries(cfg: DictConfig, search: list[str]) -> dict[str, str]:
    """key → search expression: the preset's `tune.params`, then the command line's `search`."""
    found = dict(OmegaConf.to_container(cfg.tune.params))
    found.update(arg.split("=", 1) for arg in search)
    if not found:
        raise UsageError(f"nothing to search: give keys like optimizer.lr='tag(log,interval(1e-4,1))' or "
                         f"search=<preset> (allowed: {space.GRAMMAR})")
    return found


def base_overrides() -> list[str]:
    """The command line's plain overrides that every trial gets (not `tune.*` or `search=`)."""
    return [o for o in HydraConfig.get().overrides.task if not o.lstrip("+~").startswith(("tune.", "search="))]


def direction(cfg: DictConfig) -> str:
    if cfg.tune.direction != "auto":
        return cfg.tune.direction
    return metrics.direction(cfg.tune.metric)
