"""`optlab tune`: trials are ordinary runs, two processes share one study and stop at
tune.trials together, a second command goes on where the first stopped, pruned trials keep
their curves, a diverged trial does not stop the study, and a bad space stops before training."""

from __future__ import annotations

import csv
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import optlab
from optuna.trial import TrialState

from optlab.config.resolvers import register

TINY = ["epochs=2", "model.hidden=[8]", "device=cpu"]
# a study of one-epoch trials, for the tests that damage or craft its journal
SMALL = ["optimizer.lr=interval(0.05,0.5)", "tune.pruner=none", "epochs=1", "model.hidden=[8]", "device=cpu"]


def study(folder: Path):
    from optlab.jobs.tune.study import JOURNAL, load

    return load(folder / JOURNAL)


def trial_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name[:3].isdigit())


def metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def at_once(args: list[str], count: int, cwd: Path) -> None:
    """`optlab <args>` in `count` processes started together; each must end with exit code 0."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    processes = [subprocess.Popen([sys.executable, "-m", "optlab", *args], cwd=cwd, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(count)]
    for process in processes:
        _, err = process.communicate(timeout=240)
        assert process.returncode == 0, err


@pytest.mark.slow
def test_two_processes_share_one_study_and_a_second_command_goes_on(tmp_path):
    args = ["tune", "optimizer.lr=tag(log,interval(0.01,1))", "tune.sampler=random", "tune.pruner=none",
            "tune.trials=5", f"tune.dir={tmp_path / 'study'}", *TINY]
    at_once(args, 2, tmp_path)
    folder = tmp_path / "study"
    trials = study(folder).get_trials()
    assert sorted(t.number for t in trials) == [0, 1, 2, 3, 4]  # not one more: counted under a lock
    assert {t.state.name for t in trials} == {"COMPLETE"}
    assert len({t.user_attrs["pid"] for t in trials}) in (1, 2)
    runs = trial_folders(folder)
    assert [r.name[:3] for r in runs] == ["000", "001", "002", "003", "004"]
    for run, trial in zip(runs, sorted(trials, key=lambda t: t.number)):
        record = metrics(run)
        assert record["status"] == "completed" and record["best_val_acc"] == trial.value
        assert run.name == f"{trial.number:03d}_optimizer.lr={trial.params['optimizer.lr']:.4g}"
        assert (run / "history.csv").exists() and (run / "train.log").exists()
        assert list((run / "checkpoints").glob("*.pt")) and list(run.glob("events.out.tfevents.*"))
        overrides = (run / ".hydra" / "overrides.yaml").read_text()
        assert f"optimizer.lr={trial.params['optimizer.lr']!r}" in overrides and "epochs=2" in overrides
    before = {r.name: (r / "metrics.json").stat().st_mtime_ns for r in runs}

    again = optlab(*args, cwd=tmp_path)  # the same command: nothing to train
    assert again.returncode == 0, again.stderr
    assert {r.name: (r / "metrics.json").stat().st_mtime_ns for r in trial_folders(folder)} == before
    more = optlab(*[a.replace("tune.trials=5", "tune.trials=6") for a in args], cwd=tmp_path)
    assert more.returncode == 0, more.stderr
    assert len(trial_folders(folder)) == 6 and len(study(folder).get_trials()) == 6


@pytest.mark.slow
def test_the_summary_the_best_command_and_optunas_plots(tmp_path):
    """The study ends with the sweep summary, the best trial as a command that trains exactly
    that trial again, and Optuna's figures."""
    folder = tmp_path / "study"
    result = optlab("tune", "search=regularization", "tune.trials=3", "tune.pruner=none", f"tune.dir={folder}",
                    "epochs=2", "device=cpu", cwd=tmp_path, timeout=240)
    assert result.returncode == 0, result.stderr
    best = json.loads((folder / "best_trial.json").read_text())
    assert best["best_val_acc"] == max(t.value for t in study(folder).get_trials())
    assert best["command"] in result.stdout and set(best["params"]) == {"dropout", "optimizer.weight_decay",
                                                                          "model.hidden"}
    assert len(list(csv.DictReader((folder / "summary.csv").open()))) == 3
    for name in ("optimization_history", "param_importances", "parallel_coordinate", "intermediate_values"):
        assert (folder / f"optuna_{name}.png").stat().st_size > 0
    words = shlex.split(best["command"])[2:]  # as a user pastes it
    again = optlab("train", *words, f"hydra.run.dir={tmp_path / 'again'}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    trial = folder / Path(best["run"]).name
    assert metrics(tmp_path / "again")["best_val_acc"] == metrics(trial)["best_val_acc"]


@pytest.mark.slow
def test_pruned_trials_keep_their_curves_and_a_diverged_one_does_not_stop_the_study(tmp_path):
    """The grid in seed 9's order: 1000 diverges in its first epoch (recorded; the study goes
    on), then 0.5 trains; successive halving keeps the best quarter after epoch 1, so the slow
    rates 0.001 and 0.0001 are pruned there, with their curves so far."""
    folder = tmp_path / "study"
    result = optlab("tune", "optimizer.lr=choice(1000.0,0.5,0.001,0.0001)", "tune.sampler=grid", "tune.trials=10",
                    "tune.pruner=successive_halving", f"tune.dir={folder}", "epochs=4", "model.hidden=[8]",
                    "device=cpu", "tune.seed=9", cwd=tmp_path, timeout=240)  # 1000 first, then 0.5
    assert result.returncode == 0, result.stderr
    trials = {t.params["optimizer.lr"]: t for t in study(folder).get_trials()}
    assert len(trials) == 4  # the grid is 4 points: tune.trials stops there
    runs = {t.params["optimizer.lr"]: folder / t.user_attrs["run"] for t in trials.values()}
    assert metrics(runs["1000.0"])["status"] == "diverged" and trials["1000.0"].state.name == "FAIL"
    assert metrics(runs["0.5"])["status"] == "completed" and trials["0.5"].state.name == "COMPLETE"
    pruned = [lr for lr, t in trials.items() if t.state.name == "PRUNED"]
    assert sorted(pruned) == ["0.0001", "0.001"], {lr: t.state.name for lr, t in trials.items()}
    for lr in pruned:
        record = metrics(runs[lr])
        assert record["status"] == "pruned" and record["epochs_run"] < 4
        assert len(list(csv.DictReader((runs[lr] / "history.csv").open()))) == record["epochs_run"]
        assert set(trials[lr].intermediate_values) == set(range(1, record["epochs_run"] + 1))


@pytest.mark.parametrize("space, message", [
    (["optimizer.lrr=interval(0.1,1)"], "unknown key 'optimizer.lrr'"),
    (["dropout=interval(0.5,0)"], "reversed interval for 'dropout'"),
    (["optimizer.lr=tag(log,interval(0,1))"], "log scale through 0 for 'optimizer.lr'"),
    (["optimizer=choice(sgd,adamm)"], "unknown option for 'optimizer': 'adamm'"),
    (["dropout=interval(0,1.5)"], "invalid value for 'dropout': 1.5"),
    (["dropout=interval(0,0.5)", "tune.sampler=grid"], "invalid value for 'tune.sampler': 'grid'"),
    (["optimizer.lr=choice(0.1,nan)"], "NaN or infinity in 'optimizer.lr'"),
    (["data.val_fraction=interval(0.3,0.6)", "data.test_fraction=interval(0.3,0.6)"],
     "at data.val_fraction=0.6, data.test_fraction=0.6: invalid value for 'data.val_fraction': 0.6 "
     "(allowed: val_fraction + test_fraction < 1)"),
    ([], "nothing to search"),
])
def test_a_bad_search_space_ends_in_one_line_before_any_trial(space, message, tmp_path):
    result = optlab("tune", *space, f"tune.dir={tmp_path / 'study'}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "study").exists()


def test_a_study_folder_takes_no_other_study(tmp_path):
    folder = tmp_path / "study"
    first = optlab("tune", "optimizer.lr=interval(0.05,0.5)", "tune.trials=1", f"tune.dir={folder}", *TINY,
                   cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    saved = (folder / ".hydra" / "overrides.yaml").read_text()
    other = optlab("tune", "dropout=interval(0,0.5)", "tune.trials=1", f"tune.dir={folder}", *TINY, cwd=tmp_path)
    assert other.returncode == 2 and "holds another study" in other.stderr
    assert (folder / ".hydra" / "overrides.yaml").read_text() == saved and len(trial_folders(folder)) == 1


@pytest.mark.slow
def test_ctrl_c_stops_the_study_and_the_printed_command_resumes_the_trial_in_its_folder(tmp_path):
    """The study's folder holds what Hydra's grammar and bash would both read as syntax."""
    from test_survival import wait_for_epoch

    from optlab.naming import override

    folder = tmp_path / 'study, v=2 it\'s "mine"'
    args = ["tune", "optimizer.lr=interval(0.05,0.5)", "tune.trials=1", override("tune.dir", folder), "epochs=40",
            "model.hidden=[8]", "device=cpu", "checkpoint_every_s=0"]
    process = subprocess.Popen([sys.executable, "-m", "optlab", *args], cwd=tmp_path, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for_epoch(folder / "000_*", 2, process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and "interrupted; go on with: optlab tune" in err and "tune.dir=" in err
    (run,) = trial_folders(folder)
    stopped = metrics(run)
    assert stopped["status"] == "interrupted" and stopped["epochs_run"] < 40

    pasted = shlex.split(err.split("go on with: ", 1)[1].splitlines()[0])
    assert pasted[:2] == ["optlab", "tune"]
    again = optlab(*pasted[1:], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert trial_folders(folder) == [run] and f"resumes {run.name}" in again.stdout
    record = metrics(run)
    assert record["status"] == "completed" and record["epochs_run"] == 40
    assert [t.state.name for t in study(folder).get_trials()] == ["FAIL", "COMPLETE"]


@pytest.fixture(scope="module")
def small_study(tmp_path_factory) -> Path:
    """A finished study of one trial (SMALL); tests copy it before they change it."""
    folder = tmp_path_factory.mktemp("tune") / "study"
    result = optlab("tune", *SMALL, "tune.trials=1", f"tune.dir={folder}", cwd=folder.parent)
    assert result.returncode == 0, result.stderr
    return folder


def copy_of(study_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(study_dir, tmp_path / "study"))


@pytest.mark.slow
def test_a_torn_journal_is_repaired_and_the_study_goes_on(small_study, tmp_path):
    """A full disk or a partial copy cut the journal's last line (the finished trial's result):
    its torn tail is moved aside, never appended to, and the trial is trained again in its folder."""
    folder = copy_of(small_study, tmp_path)
    journal = folder / "study.journal"
    whole = journal.read_bytes()
    cut = len(whole) - 25  # inside the last line
    os.truncate(journal, cut)
    again = optlab("tune", *SMALL, "tune.trials=2", "tune.grace_s=1", f"tune.dir={folder}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    (aside,) = folder.glob("study.journal.torn-*")
    assert aside.read_bytes() == whole[whole.rfind(b"\n", 0, cut) + 1:cut]
    assert journal.read_bytes().startswith(whole[:whole.rfind(b"\n", 0, cut) + 1])
    assert all(json.loads(line) for line in journal.read_bytes().splitlines())  # every line whole
    trials = study(folder).get_trials()
    assert sum(t.state.name == "COMPLETE" for t in trials) == 2
    assert len(trial_folders(folder)) == 2  # the retried trial went on in its own folder
    third = optlab("tune", *SMALL, "tune.trials=2", f"tune.dir={folder}", cwd=tmp_path)
    assert third.returncode == 0, third.stderr


def craft(folder: Path, make) -> bytes:
    folder.mkdir()
    make(folder / "study.journal")
    return (folder / "study.journal").read_bytes()


def _foreign(journal: Path) -> None:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.create_study(study_name="another program", storage=JournalStorage(JournalFileBackend(str(journal))))


def _nameless(journal: Path) -> None:
    """A study called `optlab` with trials but none of optlab's record of its search."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    other = optuna.create_study(study_name="optlab", storage=JournalStorage(JournalFileBackend(str(journal))))
    other.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)


def _damaged(journal: Path) -> None:
    _foreign(journal)
    lines = journal.read_text().splitlines(keepends=True)
    journal.write_text("".join([lines[0], '{"op_code": 0, "worker_id": "x", "study_na', *lines[1:]]) + lines[0])


@pytest.mark.parametrize("make, words", [
    (lambda journal: journal.write_bytes(b""), "holds no study (it is empty or its first line is torn)"),
    (_foreign, "is not an optlab study (it holds 'another program')"),
    (_nameless, "is not an optlab study (its study 'optlab' has trials and no search)"),
    (_damaged, "line 2 is not an Optuna journal entry (its first 1 lines"),
    (lambda journal: journal.write_text("hello\n"), "line 1 is not an Optuna journal entry"),
])
def test_a_journal_that_is_not_an_optlab_study_is_refused_in_one_line(make, words, tmp_path):
    folder = tmp_path / "study"
    before = craft(folder, make)
    result = optlab("tune", *SMALL, "tune.trials=1", f"tune.dir={folder}", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert str(folder / "study.journal") in result.stderr and words in result.stderr, result.stderr
    assert (folder / "study.journal").read_bytes() == before and {p.name for p in folder.iterdir()} <= {
        "study.journal", ".lock"}


def test_a_run_folder_from_the_journal_stays_in_the_study(small_study, tmp_path):
    folder = copy_of(small_study, tmp_path)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("mine")
    study(folder).enqueue_trial({"optimizer.lr": 0.1}, user_attrs={"run": "../victim"})
    result = optlab("tune", *SMALL, "tune.trials=2", f"tune.dir={folder}", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert f"{folder / 'study.journal'}: trial 1's run folder '../victim' is not" in result.stderr
    assert [p.name for p in victim.iterdir()] == ["precious.txt"] and len(trial_folders(folder)) == 1


def test_a_trial_whose_heartbeat_stopped_is_retried_from_any_host_and_a_live_one_is_not(tmp_path):
    from optlab.jobs.tune import space
    from optlab.jobs.tune.study import load
    from optlab.jobs.tune.trial import next_trial

    distributions = {p.key: p.distribution for p in space.parse({"optimizer.lr": "interval(0.01,1)"})}
    shared = load(tmp_path / "study.journal", "maximize")
    for host, age in (("node-7", 1000), ("node-8", 5)):  # killed 1000 s ago; alive, beating
        trial = shared.ask(distributions)
        trial.set_user_attr("host", host)
        trial.set_user_attr("pid", 1)
        trial.set_user_attr("run", f"{trial.number:03d}_on_{host}")
        shared._storage.set_trial_system_attr(trial._trial_id, "heartbeat", time.time() - age)
    dead, alive = shared.get_trials()
    retried = next_trial(shared, distributions, trials=2)
    assert retried is not None and retried.params == dead.params and retried.user_attrs["run"] == "000_on_node-7"
    assert [t.state.name for t in shared.get_trials()] == ["FAIL", "RUNNING", "RUNNING"]
    assert next_trial(shared, distributions, trials=2) is None  # the live one still counts
    assert shared.get_trials()[1].state.name == "RUNNING"


def test_a_study_goes_on_past_a_trial_killed_on_another_host(small_study, tmp_path):
    """A trial another node started and then lost: its heartbeat stops, and this process
    trains it again in its folder (or waits for that, if the grace period is not yet over)."""
    folder = copy_of(small_study, tmp_path)
    shared = study(folder)
    lost = shared.ask()
    lost.suggest_float("optimizer.lr", 0.05, 0.5)
    lost.set_user_attr("host", "node-7")
    lost.set_user_attr("run", f"001_optimizer.lr={lost.params['optimizer.lr']:.4g}")
    shared._storage.set_trial_system_attr(lost._trial_id, "heartbeat", time.time())
    result = optlab("tune", *SMALL, "tune.trials=2", "tune.grace_s=3", f"tune.dir={folder}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    trials = study(folder).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert trials[2].params == trials[1].params and trials[2].user_attrs["run"] == lost.user_attrs["run"]
    assert [r.name for r in trial_folders(folder)] == ["000_" + small_study_run(small_study), lost.user_attrs["run"]]


def small_study_run(folder: Path) -> str:
    return trial_folders(folder)[0].name[4:]


def test_a_folder_another_process_is_starting_a_study_in_is_joined(tmp_path):
    """What a process starting a study writes before the study exists (Hydra's .hydra/ and
    tune.log, the lock) is no other files."""
    folder = tmp_path / "study"
    (folder / ".hydra").mkdir(parents=True)
    (folder / "tune.log").write_text("")
    (folder / ".lock").write_text("")
    result = optlab("tune", *SMALL, "tune.trials=1", f"tune.dir={folder}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(trial_folders(folder)) == 1


@pytest.mark.slow
def test_three_processes_started_at_once_on_a_new_folder_share_one_study(tmp_path):
    at_once(["tune", *SMALL, "tune.sampler=random", "tune.trials=4", f"tune.dir={tmp_path / 'study'}"], 3, tmp_path)
    trials = study(tmp_path / "study").get_trials()
    assert sorted(t.number for t in trials) == [0, 1, 2, 3] and {t.state.name for t in trials} == {"COMPLETE"}
    assert len(trial_folders(tmp_path / "study")) == 4


def test_a_study_whose_space_was_refused_takes_the_corrected_space(tmp_path):
    """A study made before its space's rule was checked: its one trial failed on that rule and
    was queued again. The corrected space is no other study: the queued trial is dropped and
    the new space gets its trials."""
    from optlab.jobs.tune import space
    from optlab.jobs.tune.study import load

    folder = tmp_path / "study"
    folder.mkdir()
    bad = space.parse({"data.val_fraction": "interval(0.3,0.6)", "data.test_fraction": "interval(0.3,0.6)"})
    old = load(folder / "study.journal", "maximize")
    old.set_user_attr("study", {"metric": "best_val_acc", "direction": "maximize", "space": space.described(bad),
                                "overrides": ["device=cpu", "epochs=1", "model.hidden=[8]"]})
    failed = old.ask({p.key: p.distribution for p in bad})
    old.tell(failed, state=TrialState.FAIL)
    old.enqueue_trial(failed.params, user_attrs={"run": "000_data.test_fraction=0.6,data.val_fraction=0.6"})
    fixed = ["data.val_fraction=interval(0.1,0.3)", "data.test_fraction=interval(0.1,0.3)"]
    result = optlab("tune", *fixed, "tune.trials=1", f"tune.dir={folder}", "epochs=1", "model.hidden=[8]",
                    "device=cpu", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    trials = study(folder).get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "FAIL", "COMPLETE"]
    assert 0.1 <= trials[2].params["data.val_fraction"] <= 0.3 and len(trial_folders(folder)) == 1
    other = optlab("tune", "data.val_fraction=interval(0.1,0.2)", "tune.trials=1", f"tune.dir={folder}",
                   "epochs=1", "model.hidden=[8]", "device=cpu", cwd=tmp_path)  # now it has a result
    assert other.returncode == 2 and "holds another study" in other.stderr


@pytest.mark.parametrize("name", ["a,b", "x=y", "it's", 'say "hi"', "two words", "all, of=them 'in\" one"])
def test_the_go_on_command_gives_back_the_study_folder(name, tmp_path):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from optlab.jobs.tune.search import go_on

    folder = tmp_path / name
    line = go_on(["optimizer.lr=tag(log,interval(1e-4,1))", "tune.dir=elsewhere", "epochs=3"], folder)
    words = shlex.split(line)  # as bash reads it pasted
    assert words[:4] == ["optlab", "tune", "optimizer.lr=tag(log,interval(1e-4,1))", "epochs=3"]
    assert OverridesParser.create().parse_override(words[4]).value() == str(folder)
    assert subprocess.run(["bash", "-n", "-c", line]).returncode == 0


def help_examples(text: str) -> list[str]:
    """The indented lines after a help's `examples:` line."""
    lines = text.split("xamples:\n", 1)[1].splitlines()
    return [line.strip() for line in lines[:next((i for i, l in enumerate(lines) if not l.startswith(" ")),
                                                 len(lines))] if line.strip()]


def test_every_example_of_both_helps_runs_in_bash_and_the_tune_ones_compose(tmp_path):
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from optlab.cli.main import USAGE
    from optlab.jobs.tune import space

    tune_help = optlab("tune", "--help", cwd=tmp_path)
    assert tune_help.returncode == 0, tune_help.stderr
    examples = help_examples(USAGE) + help_examples(tune_help.stdout)
    assert len(examples) >= 10 and sum(e.startswith("optlab tune ") for e in examples) == 6
    for line in examples:
        parsed = subprocess.run(["bash", "-n", "-c", line], capture_output=True, text=True)
        assert parsed.returncode == 0, f"{line}: {parsed.stderr}"
    register()
    GlobalHydra.instance().clear()
    with initialize_config_module("optlab.conf", version_base="1.3"):
        for line in examples:
            if line.startswith("optlab tune "):
                plain, search = space.split(shlex.split(line, comments=True)[2:])
                cfg = compose("tune", plain)
                params = space.parse({**cfg.tune.params, **dict(s.split("=", 1) for s in search)})
                space.check(params, [p for p in plain if not p.startswith(("tune.", "search="))])


def test_a_drawn_damaged_journal_is_read_repaired_or_refused_naming_it_and_loses_nothing(tmp_path):
    """Cut anywhere (a full disk, a partial copy), a line garbled or replaced, a foreign study
    appended: loading the journal gives the study, with a torn tail moved aside whole, or a
    one-line refusal naming the journal that leaves it byte for byte as it was."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from optlab.errors import UsageError
    from optlab.jobs.tune import space
    from optlab.jobs.tune.study import load

    made = tmp_path / "made" / "study.journal"
    made.parent.mkdir()
    distributions = {p.key: p.distribution for p in space.parse({"optimizer.lr": "interval(0.01,1)"})}
    original = load(made, "maximize")
    original.set_user_attr("study", {"metric": "best_val_acc"})
    for value in (0.5, 0.7):
        trial = original.ask(distributions)
        trial.set_user_attr("run", f"{trial.number:03d}_optimizer.lr=x")
        original.tell(trial, value)
    whole = made.read_bytes()
    lines = whole.splitlines(keepends=True)
    count = iter(range(10**6))

    @settings(max_examples=60, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.sampled_from(["cut", "garble", "replace", "foreign"]), st.integers(0, len(whole) - 1),
           st.integers(0, len(lines) - 1), st.sampled_from([b"[1, 2]\n", b"{}\n", b"\x00\xff\n", b"null\n",
                                                            b'{"op_code": 99}\n', b"\n"]))
    def check(how, cut, line, junk):
        journal = tmp_path / f"case{next(count)}" / "study.journal"
        journal.parent.mkdir()
        damaged = {"cut": whole[:cut], "garble": b"".join(lines[:line]) + junk + b"".join(lines[line + 1:]),
                   "replace": b"".join(lines[:line]) + lines[line][: len(lines[line]) // 2] + b"\n"
                   + b"".join(lines[line + 1:]),
                   "foreign": whole + lines[0].replace(b'"optlab"', b'"another"')}[how]
        journal.write_bytes(damaged)
        try:
            study = load(journal)
        except UsageError as refusal:
            assert str(journal) in str(refusal) and "\n" not in str(refusal)
            assert journal.read_bytes() == damaged  # a refusal writes nothing
            return
        aside = b"".join(p.read_bytes() for p in journal.parent.glob("study.journal.torn-*"))
        assert journal.read_bytes() + aside == damaged  # nothing lost: the torn tail lies beside it
        assert damaged.startswith(journal.read_bytes()) and journal.read_bytes().endswith(b"\n")
        assert all(t.value in (0.5, 0.7) for t in study.get_trials() if t.state == TrialState.COMPLETE)

    check()


def _trials_with(journal: Path, *attrs: tuple) -> None:
    """Finished trials of a new study with the given (run, value) each."""
    from optlab.jobs.tune import space
    from optlab.jobs.tune.study import load

    distributions = {p.key: p.distribution for p in space.parse({"optimizer.lr": "interval(0.01,1)"})}
    made = load(journal, "maximize")
    made.set_user_attr("study", {"metric": "best_val_acc"})
    for run, value in attrs:
        trial = made.ask(distributions)
        trial.set_user_attr("run", run)
        made.tell(trial, value)


@pytest.mark.parametrize("attrs, words", [
    ((("000_a\nb", 0.5),), "run folder '000_a\\nb' is not a trial's folder"),
    ((("000_a", 0.5), ("000_a", 0.6)), "trial 1 finished in the folder of trial 0"),
    (((None, 0.5),), "trial 0 finished in no folder"),
])
def test_a_journal_whose_trials_share_or_escape_folders_is_refused_naming_it(tmp_path, attrs, words):
    from optlab.errors import UsageError
    from optlab.jobs.tune.study import load

    journal = tmp_path / "study.journal"
    _trials_with(journal, *[(run, value) for run, value in attrs])
    before = journal.read_bytes()
    with pytest.raises(UsageError) as refusal:
        load(journal)
    assert str(journal) in str(refusal.value) and words in str(refusal.value), refusal.value
    assert journal.read_bytes() == before


def test_a_queued_trial_never_trains_in_a_finished_trials_folder(small_study, tmp_path):
    folder = copy_of(small_study, tmp_path)
    (finished,) = trial_folders(folder)
    before = metrics(finished)
    study(folder).enqueue_trial({"optimizer.lr": 0.06}, user_attrs={"run": finished.name})
    result = optlab("tune", *SMALL, "tune.trials=2", f"tune.dir={folder}", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert f"would train in the folder of finished trial 0 ({finished.name})" in result.stderr
    assert metrics(finished) == before and not (finished / ".previous").exists()


@pytest.mark.parametrize("database", [False, True])
def test_a_study_whose_first_trial_is_refused_leaves_no_folder(tmp_path, database):
    """As a refused run leaves none: a data file that does not read stops the study it made,
    and a study it made in a database is deleted from it."""
    import numpy as np
    import optuna

    np.savez(tmp_path / "bad.npz", X=np.array([[1.0, np.inf]] * 20), y=np.arange(20) % 2)
    folder, url = tmp_path / "study", f"sqlite:///{tmp_path / 'studies.db'}"
    result = optlab("tune", *SMALL, "data=npz", f"data.path={tmp_path / 'bad.npz'}", "tune.trials=1",
                    f"tune.dir={folder}", *[f"tune.storage={url}"] * database, cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "X[0, 1] is inf" in result.stderr and not folder.exists()
    if database:
        assert optuna.get_all_study_names(url) == []


def test_trials_asked_together_train_as_one_stacked_model_and_each_is_its_run_alone(tmp_path):
    """tune.stack=4: four trials of a grid asked at once train as one stacked model, each an
    ordinary run folder, each with the value it has trained alone (tune.stack=1)."""
    args = ["optimizer.lr=choice(0.3,0.1,0.03,0.01)", "tune.sampler=grid", "tune.pruner=none",
            "tune.metric=final_val_loss", "epochs=3", "model.hidden=[16]", "device=cpu"]
    values = {}
    for stack in (4, 1):
        result = optlab("tune", *args, f"tune.stack={stack}", f"tune.dir=s{stack}", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        log = (tmp_path / f"s{stack}" / "tune.log").read_text()
        assert ("trials 0, 1, 2, 3 train as one stacked model" in log) == (stack == 4)
        trials = study(tmp_path / f"s{stack}").get_trials()
        values[stack] = {t.params["optimizer.lr"]: t.value for t in trials}
        for trial in trials:
            run = tmp_path / f"s{stack}" / trial.user_attrs["run"]
            assert metrics(run)["final_val_loss"] == trial.value and metrics(run)["epochs_run"] == 3
            assert f"optimizer.lr={trial.params['optimizer.lr']}" in (run / ".hydra" / "overrides.yaml").read_text()
            assert (run / "history.csv").exists() and list(run.glob("events.out.tfevents.*"))
    assert values[4] == pytest.approx(values[1], rel=1e-4) and len(values[4]) == 4


def test_a_pruned_member_of_a_stack_stops_while_the_others_train_on(tmp_path):
    """Eight trials in one stacked group, successive halving after every epoch: a pruned member
    is frozen with its curves so far (`pruned`), the others train to the last epoch."""
    result = optlab("tune", "optimizer.lr=choice(1.0,0.3,0.1,0.03,0.01,0.003,0.001,0.0003)", "tune.sampler=grid",
                    "tune.stack=8", "tune.pruner=successive_halving", "epochs=4", "model.hidden=[16]", "device=cpu",
                    "tune.dir=study", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    states = {t.user_attrs["run"]: t.state for t in study(tmp_path / "study").get_trials()}
    ended = {run.name: metrics(run) for run in trial_folders(tmp_path / "study")}
    assert set(ended) == set(states) and len(ended) == 8
    pruned = {name for name, m in ended.items() if m["status"] == "pruned"}
    assert pruned == {name for name, state in states.items() if state == TrialState.PRUNED}
    assert 0 < len(pruned) < 8
    for name, m in ended.items():
        rows = list(csv.DictReader((tmp_path / "study" / name / "history.csv").open()))
        assert len(rows) == m["epochs_run"] == (m["epochs_run"] if name in pruned else 4)
        assert (m["epochs_run"] < 4) == (name in pruned)


@pytest.mark.slow
def test_the_command_starts_workers_as_submitit_jobs_that_share_the_study(tmp_path):
    """tune.workers=2 with submitit's local executor (as Hydra's own submitit plugin is tested):
    two worker processes train the study's trials, each a stacked group of two; this command
    waits, then writes the summary."""
    result = optlab("tune", "optimizer.lr=tag(log,interval(0.01,1))", "tune.trials=8", "tune.stack=2",
                    "tune.pruner=none", "epochs=10", "model.hidden=[16]", "device=cpu", "tune.dir=study",
                    "tune.workers=2", "tune.cluster=local", cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    said = result.stdout + result.stderr
    assert "submitit (local): 2 workers on the study" in said
    assert said.count("): ended; its log: study/.submitit/") == 2
    trials = study(tmp_path / "study").get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 8
    assert len({t.user_attrs["pid"] for t in trials}) == 2  # the two workers; none left for this command
    assert all(metrics(run)["status"] == "completed" for run in trial_folders(tmp_path / "study"))
    assert (tmp_path / "study" / "best_trial.json").exists() and (tmp_path / "study" / "summary.csv").exists()


def test_workers_on_slurm_without_slurm_are_refused_before_anything_is_written(tmp_path):
    result = optlab("tune", "optimizer.lr=interval(0.01,0.1)", "tune.workers=4", "tune.cluster=slurm",
                    "tune.dir=study", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "tune.cluster=slurm: no SLURM on this machine (sbatch and srun not found)" in result.stderr
    assert not (tmp_path / "study").exists()


@pytest.mark.slow
def test_an_interrupted_stacked_group_resumes_as_one_and_each_trial_ends_as_if_never_stopped(tmp_path):
    from test_survival import wait_for_epoch

    args = ["tune", "optimizer.lr=choice(0.05,0.2)", "tune.sampler=grid", "tune.stack=2", "tune.pruner=none",
            "tune.metric=final_val_loss", "epochs=30", "model.hidden=[8]", "device=cpu", "checkpoint_every_s=0"]
    process = subprocess.Popen([sys.executable, "-m", "optlab", *args, "tune.dir=stopped"], cwd=tmp_path, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for_epoch(tmp_path / "stopped" / "000_*", 2, process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and "interrupted; go on with: optlab tune" in err, err
    again = optlab(*shlex.split(err.split("go on with: ", 1)[1].splitlines()[0])[1:], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "trials 2, 3 train as one stacked model (resumed)" in (tmp_path / "stopped" / "tune.log").read_text()
    whole = optlab(*args, "tune.dir=whole", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    values = {name: {t.params["optimizer.lr"]: t.value for t in study(tmp_path / name).get_trials()
                     if t.state == TrialState.COMPLETE} for name in ("stopped", "whole")}
    assert len(values["whole"]) == 2 and values["stopped"] == pytest.approx(values["whole"], rel=1e-4)
