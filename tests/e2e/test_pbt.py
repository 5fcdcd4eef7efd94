"""`optlab tune tune.sampler=pbt`: a population trains as one stacked group whose bottom members go
on as top ones; every member is an ordinary run whose history carries the numbers it trained with
and the member it went on from; the best lineage is a command that trains it again as one run, with
the member's numbers; an interrupted population resumes as if never stopped; what PBT cannot run
is refused in one line before anything is written."""

from __future__ import annotations

import csv
import json
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import optlab

POPULATION = ["optimizer.lr=tag(log,interval(0.003,1))", "tune.sampler=pbt", "tune.trials=8", "tune.pbt.interval=2",
              "tune.metric=best_val_loss", "model.hidden=[16]", "device=cpu"]


def history(run: Path) -> list[dict]:
    return list(csv.DictReader((run / "history.csv").open()))


def members(folder: Path) -> dict[int, Path]:
    return {int(p.name[:3]): p for p in folder.iterdir() if p.is_dir() and p.name[:3].isdigit()}


def test_members_record_their_numbers_and_the_best_lineage_replays_as_one_run(tmp_path):
    from optlab.jobs.tune import pbt, space

    result = optlab("tune", *POPULATION, "epochs=8", "tune.dir=study", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    study = tmp_path / "study"
    log = (study / "tune.log").read_text()
    assert "trials 0, 1, 2, 3, 4, 5, 6, 7 train as one population" in log
    runs = members(study)
    assert len(runs) == 8 and (study / "pbt.png").stat().st_size > 0
    moves = 0
    for number, run in runs.items():
        rows = history(run)
        assert [int(r["epoch"]) for r in rows] == list(range(1, 9))
        assert json.loads((run / "metrics.json").read_text())["status"] == "completed"
        for before, row in zip(rows, rows[1:]):
            if row["copied_from"]:  # a move happens after an interval's epoch, to a member of the top quantile
                moves += 1
                assert int(before["epoch"]) % 2 == 0 and int(row["copied_from"]) in runs
                assert int(row["copied_from"]) != number
                source = history(runs[int(row["copied_from"])])[int(before["epoch"]) - 1]
                assert float(source["val_loss"]) <= float(before["val_loss"])  # it went on as a better one
                # explored: its number is the source's × 0.8 or × 1.2, or drawn afresh within the range
                assert 0.003 <= float(row["optimizer.lr"]) <= 1
            else:
                assert row["optimizer.lr"] == before["optimizer.lr"]  # numbers change only with a move
            assert float(row["lr"]) == float(row["optimizer.lr"])
    assert moves == 3 * 2  # 3 exploit steps (after epochs 2, 4, 6) × the bottom quarter of 8

    best = json.loads((study / "best_trial.json").read_text())
    assert best["lineage"][-1][0] == best["number"] and best["lineage"][0][1] == 1 and best["lineage"][-1][2] == 8
    lineage = [history(runs[n])[e - 1] for n, a, b in best["lineage"] for e in range(a, b + 1)]
    said = best["command"]
    assert said in log and said.startswith("optlab train ")
    if best["schedule"]:
        assert "scheduler=piecewise" in said
    replay = optlab(*shlex.split(said)[1:], "hydra.run.dir=replay", cwd=tmp_path)
    assert replay.returncode == 0, replay.stderr
    again = history(tmp_path / "replay")
    for key in ("train_loss", "val_loss", "val_acc", "lr"):
        assert [float(r[key]) for r in again] == pytest.approx([float(r[key]) for r in lineage], rel=1e-4), key
    assert best["best_val_loss"] == pytest.approx(min(float(r["val_loss"]) for r in again), rel=1e-4)

    # a population trains once, and goes on only with the settings it began with
    larger = optlab("tune", *[w.replace("trials=8", "trials=9") for w in POPULATION], "epochs=8", "tune.dir=study",
                    cwd=tmp_path)
    assert larger.returncode == 2 and "holds a population of 8 that has trained; a population trains once" \
        in larger.stderr and larger.stderr.count("\n") == 1, larger.stderr
    other = optlab("tune", *POPULATION, "tune.pbt.interval=3", "epochs=8", "tune.dir=study", cwd=tmp_path)
    assert other.returncode == 2 and "holds another study (pbt: " in other.stderr, other.stderr
    assert said.split()[2:] and f"best: trial {best['number']}," in log

    # every lineage trains again as one run, not only the best: one that went on from another member
    histories = {n: pbt.read_history(run / "history.csv") for n, run in runs.items()}
    moved = next(n for n in sorted(histories) if n != best["number"] and any(
        r["copied_from"] is not None for r in histories[n].values()))
    rows = [row for _, row in pbt.lineage(histories, moved)]
    first, at = pbt.schedule(rows, ["lr"])
    assert at  # it moved, so its numbers changed
    said = pbt.replay(["model.hidden=[16]", "device=cpu", "epochs=8"], first, at,
                      space.parse({"optimizer.lr": "tag(log,interval(0.003,1))"}))
    replay = optlab(*shlex.split(said)[1:], "hydra.run.dir=moved", cwd=tmp_path)
    assert replay.returncode == 0, replay.stderr
    assert [float(r["val_loss"]) for r in history(tmp_path / "moved")] == pytest.approx(
        [r["val_loss"] for r in rows], rel=1e-4)


@pytest.mark.slow
def test_an_interrupted_population_resumes_and_ends_as_if_never_stopped(tmp_path):
    from test_survival import wait_for_epoch

    args = ["tune", *POPULATION, "epochs=30", "checkpoint_every_s=0"]
    process = subprocess.Popen([sys.executable, "-m", "optlab", *args, "tune.dir=stopped"], cwd=tmp_path, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for_epoch(tmp_path / "stopped" / "000_*", 5, process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and "interrupted; go on with: optlab tune" in err, err
    again = optlab(*shlex.split(err.split("go on with: ", 1)[1].splitlines()[0])[1:], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "train as one population (resumed)" in (tmp_path / "stopped" / "tune.log").read_text()
    whole = optlab(*args, "tune.dir=whole", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    stopped, kept = members(tmp_path / "stopped"), members(tmp_path / "whole")
    assert stopped.keys() == kept.keys()
    for number in kept:
        a, b = history(stopped[number]), history(kept[number])
        assert [r["copied_from"] for r in a] == [r["copied_from"] for r in b]
        for key in ("val_loss", "optimizer.lr"):
            assert [float(r[key]) for r in a] == pytest.approx([float(r[key]) for r in b], rel=1e-4), key
    best = [json.loads((tmp_path / name / "best_trial.json").read_text()) for name in ("stopped", "whole")]
    assert best[0]["lineage"] == best[1]["lineage"] and best[0]["command"] == best[1]["command"]


@pytest.mark.parametrize("words, message", [
    (["model.hidden=choice([8],[16])"], "model.hidden=choice([8],[16]) must stay one value per member"),
    (["optimizer.weight_decay=interval(0,0.1)"], "not weight_decay"),
    (["scheduler=cosine"], "the default scheduler=constant"),
    (["early_stopping=val_loss"], "early_stopping=off"),
    (["tune.trials=3"], "invalid value for 'tune.trials': 3 (allowed: at least 4 with tune.sampler=pbt"),
    (["optimizer=lbfgs"], "the population must train as one stacked group"),
])
def test_what_a_population_cannot_be_is_refused_in_one_line(words, message, tmp_path):
    result = optlab("tune", *POPULATION, "epochs=2", *words, "tune.dir=study", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "study").exists() or not members(tmp_path / "study")


@pytest.mark.slow
def test_pbt_beats_the_best_of_as_many_fixed_setting_runs_with_the_same_epochs(tmp_path):
    """The problem of scripts/pbt_vs_fixed.py at its figure's seed: 8 members × 16 epochs against 8
    runs × 16 epochs at the population's own first draws (both samplers draw at random with the
    seed). The script prints every seed's ratio; this one holds PBT 10% below."""
    seed = 2
    problem = ["optimizer.lr=tag(log,interval(0.001,1))", "model.hidden=[64]", "epochs=16", "tune.trials=8",
               "tune.metric=best_val_loss", "device=cpu", f"tune.seed={seed}"]
    best = {}
    for kind, words in (("pbt", ["tune.sampler=pbt"]), ("fixed", ["tune.sampler=random", "tune.pruner=none",
                                                                   "tune.stack=8"])):
        result = optlab("tune", *problem, *words, f"tune.dir={kind}", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        best[kind] = json.loads((tmp_path / kind / "best_trial.json").read_text())
    first = {json.loads((run / "metrics.json").read_text())["best_val_loss"] for run in members(tmp_path / "fixed").values()}
    assert len(first) == 8 and best["fixed"]["best_val_loss"] == min(first)
    assert best["pbt"]["best_val_loss"] < 0.9 * best["fixed"]["best_val_loss"]
    assert len(best["pbt"]["lineage"]) > 1 and best["pbt"]["schedule"]  # it got there by moves
