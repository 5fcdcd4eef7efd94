"""A study in a real database (`tune.storage`): a PostgreSQL server started here (pgserver, a
self-contained server installed with pip), workers on several hosts, one killed with kill -9,
and every trial accounted for exactly once. A worker's host is its own name for itself
(`socket.gethostname`, which optlab records in each trial): each worker process here is given
another, as if it ran on another machine with its own disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import optlab

# a worker that calls itself `host`: `python -c WORKER host tune ...`
WORKER = ("import socket, sys; host = sys.argv[1]; socket.gethostname = lambda: host; "
          "from optlab.cli.main import main; sys.exit(main(sys.argv[2:]))")
SEARCH = ["optimizer.lr=tag(log,interval(0.01,1))", "model.hidden=[16]", "tune.pruner=none", "tune.study_name=shared"]


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    """A PostgreSQL server of its own, stopped when the module's tests are done; its URL."""
    import pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    yield server.get_uri()
    server.cleanup()


def worker(host: str, folder: Path, *args: str) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, "-c", WORKER, host, "tune", *args], cwd=folder,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def study_of(url: str, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=url)


@pytest.mark.slow
def test_workers_on_three_hosts_share_a_study_and_a_killed_ones_trial_is_trained_again_once(database, tmp_path):
    from optuna.trial import TrialState

    url = database.replace("postgres:@", "postgres:S3cret@")  # the server trusts local logins: any password passes
    storage = f"tune.storage='{url}'"
    args = [*SEARCH, "epochs=40", "tune.trials=6", "tune.grace_s=4", storage, "tune.dir=study"]
    alpha = worker("alpha", tmp_path / "alpha", *args)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "alpha" / "study").glob("*/train.log")):  # alpha is training its first trial
        assert alpha.poll() is None and time.monotonic() < deadline, alpha.stdout.read() if alpha.poll() else "slow"
        time.sleep(0.05)
    others = [worker(host, tmp_path / host, *args) for host in ("beta", "gamma")]
    os.kill(alpha.pid, signal.SIGKILL)  # no goodbye: its trial stays running, with a heartbeat that stops
    alpha.wait()
    outputs = [p.communicate(timeout=240)[0] for p in others]
    assert [p.returncode for p in others] == [0, 0], outputs

    trials = study_of(database, "shared").get_trials(deepcopy=False)
    killed = [t for t in trials if t.state == TrialState.FAIL]  # alpha's stacked group (tune.stack=4)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert killed and {t.user_attrs["host"] for t in killed} == {"alpha"}
    # nothing left running or queued; at least tune.trials finished (hosts count without a common lock: one
    # more per host may start at the very end, as with Optuna's MaxTrialsCallback)
    assert len(done) >= 6 and len(trials) == len(done) + len(killed)
    for trial in killed:  # each trained again once, elsewhere, with its settings
        (again,) = [t for t in done if t.system_attrs.get("failed_trial") == trial.number]
        assert again.params == trial.params and again.user_attrs["host"] in ("beta", "gamma")
        assert not (tmp_path / "alpha" / "study" / trial.user_attrs["run"] / "metrics.json").exists()
    said = "".join(outputs).count("has sent no heartbeat for 4 s: its process is gone, and it is trained again")
    assert said == len(killed)
    assert {t.user_attrs["host"] for t in done} == {"beta", "gamma"}  # both shared the work
    # each finished trial is one finished run folder, on the host that trained it, and nowhere else
    finished = {(host, folder.parent.name) for host in ("alpha", "beta", "gamma")
                for folder in (tmp_path / host / "study").glob("*/metrics.json")
                if json.loads(folder.read_text())["status"] == "completed"}
    assert finished == {(t.user_attrs["host"], t.user_attrs["run"]) for t in done}
    best = json.loads((tmp_path / "beta" / "study" / "best_trial.json").read_text())
    assert best["number"] == max(done, key=lambda t: t.value).number and best["host"] in ("beta", "gamma")

    # the password reaches no console and no file optlab wrote (submitit's job files carry the command)
    assert not [line for line in outputs if "S3cret" in line]
    written = [p for p in tmp_path.rglob("*") if p.is_file() and ".submitit" not in p.parts]
    assert not [p for p in written if b"S3cret" in p.read_bytes()]
    # another search under the study's name is refused, naming the study and hiding the password
    (tmp_path / "delta").mkdir()
    refused = optlab("tune", *SEARCH, "epochs=5", storage, "tune.dir=study", cwd=tmp_path / "delta")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "the study 'shared' in postgresql://postgres:***@" in refused.stderr and "is another search" in refused.stderr
    assert "S3cret" not in refused.stderr
    assert not (tmp_path / "delta" / "study").exists()


def test_a_journal_shared_by_two_hosts_says_a_database_is_for_several_machines(tmp_path):
    args = [*SEARCH[:3], "epochs=2", "tune.dir=study"]
    first = subprocess.run([sys.executable, "-c", WORKER, "alpha", "tune", *args, "tune.trials=1"], cwd=tmp_path,
                           capture_output=True, text=True)
    assert first.returncode == 0 and "file journal" not in first.stdout + first.stderr, first.stderr
    second = subprocess.run([sys.executable, "-c", WORKER, "beta", "tune", *args, "tune.trials=2"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    said = [line for line in (second.stdout + second.stderr).splitlines() if "file journal" in line]
    assert len(said) == 1 and "has workers on 2 hosts (alpha, beta)" in said[0], said
    assert "tune.storage=postgresql://" in said[0]


def test_a_study_name_without_a_database_is_refused(tmp_path):
    result = optlab("tune", "optimizer.lr=interval(0.01,0.1)", "tune.study_name=mine", "tune.dir=study", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "tune.study_name=mine names a study in a database, and tune.storage is not set" in result.stderr
    assert not (tmp_path / "study").exists()


@pytest.mark.parametrize("url, words", [
    ("postgresql://me:secret@127.0.0.1:1/studies", "tune.storage=postgresql://me:***@127.0.0.1:1/studies: cannot "
                                                   "open the study database: "),
    ("postgresql://me:p@secret:w@rd@127.0.0.1:1/db", "tune.storage=postgresql://me:***@127.0.0.1:1/db: cannot open"),
    ("postgresql://me@127.0.0.1:1/db?password=secret", "tune.storage=postgresql://me@127.0.0.1:1/db?password=***: "),
    ("Postgresql://me:secret@127.0.0.1:1/db", "tune.storage=Postgresql://me:***@127.0.0.1:1/db: cannot open"),
    ("mysql://me@127.0.0.1:1/studies", "its database driver is not installed (No module named 'MySQLdb')"),
    ("studies.db", "invalid value for 'tune.storage': 'studies.db' (allowed: null (the journal in tune.dir), or a "
                   "database URL"),
])
def test_a_database_that_cannot_be_opened_is_one_line_and_writes_nothing(tmp_path, url, words):
    result = optlab("tune", "optimizer.lr=interval(0.01,0.1)", f"tune.storage='{url}'", "tune.dir=study", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert words in result.stderr and "secret" not in result.stderr
    assert not (tmp_path / "study").exists()


def test_a_check_that_refuses_leaves_the_database_without_tables_and_a_journal_folder_takes_no_database(tmp_path):
    import sqlite3

    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "notes.txt").write_text("mine")
    refused = optlab("tune", "optimizer.lr=interval(0.01,0.1)", f"tune.storage=sqlite:///{tmp_path}/s.db",
                     "tune.dir=study", cwd=tmp_path)
    assert refused.returncode == 2 and "holds other files" in refused.stderr, refused.stderr
    tables = sqlite3.connect(tmp_path / "s.db").execute("select name from sqlite_master").fetchall()
    assert tables == []
    (tmp_path / "journal").mkdir()
    (tmp_path / "journal" / "study.journal").write_text("")
    mixed = optlab("tune", "optimizer.lr=interval(0.01,0.1)", f"tune.storage=sqlite:///{tmp_path}/s.db",
                   "tune.dir=journal", cwd=tmp_path)
    assert mixed.returncode == 2 and mixed.stderr.count("\n") == 1
    assert "tune.dir=journal holds a study in its study.journal: go on with it without tune.storage" in mixed.stderr


def test_a_stop_at_once_keeps_the_study_and_says_how_to_go_on(tmp_path):
    """A Ctrl-C outside a training step (a study starting, its summary) never takes the study's
    folder back, as it would a single run that had not begun; the line to go on hides a password."""
    from optlab.cli.apps import _study_goes_on
    from optlab.jobs.command import Command

    study = tmp_path / "study"
    (study / "000_optimizer.lr=0.05").mkdir(parents=True)
    (study / "study.journal").write_text("{}\n")
    asked = Command(words=["optlab", "tune", "tune.storage=postgresql://me:S3cret@db/x", "tune.dir=elsewhere"],
                    search=["optimizer.lr=interval(0.01,0.1)"], study_dir=study)
    said = _study_goes_on(asked)
    assert said.startswith("stopped at once; go on with the study: optlab tune tune.storage=")
    assert "postgresql://me:***@db/x" in said and "S3cret" not in said and "(with the password where *** stands)" in said
    assert (study / "study.journal").exists() and (study / "000_optimizer.lr=0.05").is_dir()
