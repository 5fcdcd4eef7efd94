"""Where a study lives, and how a trial whose process died is noticed on any host.

- One machine (the default): the file journal in the study's folder, `study.journal`
  (Optuna's JournalStorage), shared by the processes there under a file lock.
- Several machines: a database server, `tune.storage=postgresql://…` (Optuna's RDBStorage;
  any SQLAlchemy URL Optuna supports). Optuna's documentation recommends it for workers on
  several hosts: locks on a network file system are not reliable.

Both keep a running trial alive by a heartbeat every `tune.grace_s`/4 seconds; a trial whose
heartbeat is older than `tune.grace_s` has lost its process, on whichever host, and the next
worker to ask for a trial fails it and queues its settings again (`retry`). The database judges
by its own clock; the journal by the hosts' clocks, assumed to agree to a few seconds.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

from omegaconf import DictConfig
from optuna.storages import JournalStorage, RetryHeartbeatStaleTrialCallback

# Optuna's private heartbeat module (checked against Optuna 4.9-5.1): its RDBStorage's heartbeat, for a journal
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import TrialState

from optlab.errors import UsageError, reason

log = logging.getLogger("optlab")


JOURNAL = "study.journal"


class Journal(JournalStorage, BaseHeartbeat):
    """Optuna's JournalStorage with the heartbeat of its RDBStorage (`heartbeat_interval`,
    `grace_period`, a stale trial's callback): Optuna's heartbeat thread records the time in a
    running trial (system attr `heartbeat`), and `optuna.storages.fail_stale_trials` fails a
    running trial whose heartbeat is older than `grace_s`."""

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
        return retry(self.grace_s)


def retry(grace_s: float):
    """What happens to a trial whose heartbeat stopped: a warning naming its host and process,
    then Optuna's RetryHeartbeatStaleTrialCallback queues its settings again, its user attrs
    (its `run` folder) with them."""
    def stale(study, trial) -> None:
        log.warning("trial %d (%s, pid %s) has sent no heartbeat for %g s: its process is gone, and it is "
                    "trained again", trial.number, trial.user_attrs.get("host", "another host"),
                    trial.user_attrs.get("pid", "?"), grace_s)
        RetryHeartbeatStaleTrialCallback()(study, trial)

    return stale


def database(url: str, grace_s: float):
    """Optuna's RDBStorage at `url` with heartbeats (whole seconds, as it takes them), or a
    one-line UsageError naming the database (its password hidden) when it cannot be reached."""
    from optuna.storages import RDBStorage

    try:
        return RDBStorage(url, engine_kwargs={"pool_pre_ping": True},  # a connection the server dropped is renewed
                          heartbeat_interval=max(1, round(grace_s / 4)), grace_period=max(1, math.ceil(grace_s)),
                          heartbeat_stale_trial_callback=retry(grace_s))
    except ImportError as error:  # the URL's driver (Optuna raises its own, from SQLAlchemy's)
        raise UsageError(f"tune.storage={masked(url)}: its database driver is not installed "
                         f"({reason(error.__cause__ or error)}): for PostgreSQL pip install 'optlab[postgres]', "
                         "for another database its SQLAlchemy driver") from None
    except Exception as error:  # a server that does not answer, a refused login, a URL SQLAlchemy cannot read
        raise UsageError(f"tune.storage={masked(url)}: cannot open the study database: {reason(error)}") from None


def masked(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("://", 1)[0] + "://…"


def name(cfg: DictConfig) -> str:
    """The study's name in a database: `tune.study_name`, else the study folder's name (every
    worker of a study names the same `tune.dir`)."""
    return cfg.tune.get("study_name") or Path(cfg.tune.dir).name


def where(cfg: DictConfig) -> str:
    """The study, as messages name it: its journal, or its database and name."""
    if cfg.tune.get("storage"):
        return f"{masked(cfg.tune.storage)} (study {name(cfg)!r})"
    return str(Path(cfg.tune.dir) / JOURNAL)


def hosts(study) -> set[str]:
    """The hosts whose workers asked for the study's trials."""
    return {t.user_attrs["host"] for t in study.get_trials(deepcopy=False) if isinstance(t.user_attrs.get("host"), str)}
