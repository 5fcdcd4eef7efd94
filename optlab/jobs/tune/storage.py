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

import contextlib
import logging
import math
import re
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
    """Optuna's RDBStorage at `url` with heartbeats (whole seconds, as it takes them), its tables
    made where there are none; a one-line UsageError when it cannot be opened (`opening`)."""
    from optuna.storages import RDBStorage

    with opening(url):
        return RDBStorage(url, engine_kwargs={"pool_pre_ping": True},  # a connection the server dropped is renewed
                          heartbeat_interval=max(1, round(grace_s / 4)), grace_period=max(1, math.ceil(grace_s)),
                          heartbeat_stale_trial_callback=retry(grace_s))


def has_studies(url: str) -> bool:
    """Whether Optuna's tables are in the database: a check that may refuse makes none."""
    import sqlalchemy

    with opening(url):
        engine = sqlalchemy.create_engine(url)
        try:
            return sqlalchemy.inspect(engine).has_table("studies")
        finally:
            engine.dispose()


@contextlib.contextmanager
def opening(url: str):
    """A database that cannot be opened, as one line naming it, its password hidden."""
    try:
        yield
    except ImportError as error:  # the URL's driver (Optuna raises its own, from SQLAlchemy's)
        raise UsageError(f"tune.storage={masked(url)}: its database driver is not installed "
                         f"({hidden(reason(error.__cause__ or error), url)}): for PostgreSQL pip install "
                         "'optlab[postgres]', for another database its SQLAlchemy driver") from None
    except Exception as error:  # a server that does not answer, a refused login, a URL SQLAlchemy cannot read
        raise UsageError(f"tune.storage={masked(url)}: cannot open the study database: "
                         f"{hidden(reason(error), url)}") from None


def _parts(url: str) -> tuple[str, str, str, str, str]:
    """A URL's `scheme://`, user, password (the text between the user's `:` and the address's
    last `@`: a password may hold `@` or `:` unescaped), the rest of its address, and its query."""
    scheme, sep, rest = url.partition("://")
    address, _, query = rest.partition("?")
    login, at, host = address.rpartition("@")
    user, _, password = login.partition(":") if at else ("", "", "")
    return scheme + sep, user, password, host if at else address, query


def masked(url: str) -> str:
    """The URL with its password hidden, for messages, logs and files: in its address and in
    any `password=` of its query."""
    scheme, user, password, address, query = _parts(url)
    shown = f"{user}:***@{address}" if password else url.partition("://")[2].partition("?")[0]
    query = re.sub(r"(?i)(\bpassword=)[^&]*", r"\1***", query)
    return f"{scheme}{shown}{'?' * ('?' in url)}{query}"


def secret(url: str) -> str | None:
    """The URL's password (from its address or its query), or None."""
    _, _, password, _, query = _parts(url)
    found = re.search(r"(?i)\bpassword=([^&]*)", query)
    return password or (found.group(1) if found else None) or None


def hidden(text: str, url: str) -> str:
    """`text` (an error's words) with every run of 3 or more characters that is part of the
    URL's password hidden: a parser that split the URL at an unescaped `@` or `:` in the password
    may quote any piece of it."""
    password, out, i = secret(url), [], 0
    if not password:
        return text
    while i < len(text):
        longest = max((n for n in range(3, len(text) - i + 1) if text[i:i + n] in password), default=0)
        out.append("***" if longest else text[i])
        i += longest or 1
    return "".join(out)


def hide_in(folder: Path, url: str) -> None:
    """The URL's password hidden in the files Hydra wrote of the command (`.hydra/*.yaml`)."""
    from optlab.store.files import atomic_write

    if not secret(url):
        return
    for file in sorted(folder.glob("*.yaml")):
        text = file.read_text()
        if url in text:
            atomic_write(file, lambda f, text=text: f.write(text.replace(url, masked(url)).encode()))


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
