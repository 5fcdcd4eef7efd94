"""`optlab tune`: trials are ordinary runs, two processes share one study and stop at
tune.trials together, a second command goes on where the first stopped, pruned trials keep
their curves, a diverged trial does not stop the study, and a bad space stops before training."""

from __future__ import annotations

import csv
import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import optlab

TINY = ["epochs=2", "model.hidden=[8]", "device=cpu"]


def study(folder: Path):
    from optlab.tune import JOURNAL, load

    return load(folder / JOURNAL)


def trial_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name[:3].isdigit())


def metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_two_processes_share_one_study_and_a_second_command_goes_on(tmp_path):
    args = ["tune", "optimizer.lr=tag(log,interval(0.01,1))", "tune.sampler=random", "tune.pruner=none",
            "tune.trials=5", f"tune.dir={tmp_path / 'study'}", *TINY]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    both = [subprocess.Popen([sys.executable, "-m", "optlab", *args], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for process in both:
        out, err = process.communicate(timeout=240)
        assert process.returncode == 0, err
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


def test_ctrl_c_stops_the_study_and_the_same_command_resumes_the_trial_in_its_folder(tmp_path):
    from test_survival import wait_for_epoch

    folder = tmp_path / "study"
    args = ["tune", "optimizer.lr=interval(0.05,0.5)", "tune.trials=1", f"tune.dir={folder}", "epochs=40",
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

    again = optlab(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert trial_folders(folder) == [run] and f"resumes {run.name}" in again.stdout
    record = metrics(run)
    assert record["status"] == "completed" and record["epochs_run"] == 40
    assert [t.state.name for t in study(folder).get_trials()] == ["FAIL", "COMPLETE"]
