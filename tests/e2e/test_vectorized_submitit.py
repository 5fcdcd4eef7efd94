"""Vectorized sweeps on a cluster: each group is one job of submitit (the engine of Hydra's
submitit launcher), tested with submitit's local executor as Hydra's own submitit plugin is. A
member's folder is the one an in-process group writes; a job stopped before its time limit
saves its runs, and the command it prints finishes the sweep."""

from __future__ import annotations

import csv
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import optlab
from test_survival import metrics_of, paste, wait_for_epoch
from test_vectorized import APP

SWEEP = ["-m", "optimizer.lr=0.01,0.1", "seed=0,1", "epochs=2", "model.hidden=[16]",
         "vectorize.max_members=3"]  # a group of three and a job alone


def members(sweep: Path) -> dict[str, Path]:
    return {str(p.parent.relative_to(sweep)): p.parent for p in sorted(sweep.glob("*/seed=*/metrics.json"))}


def files(run: Path) -> list[str]:
    """A run folder's files; TensorBoard's event file is named by its time, host and process."""
    return sorted("events.out.tfevents" if p.name.startswith("events.out.tfevents") else str(p.relative_to(run))
                  for p in run.rglob("*") if p.is_file())


def history(run: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "elapsed_s"} for row in csv.DictReader((run / "history.csv").open())]


def jobs(sweep: Path) -> list[Path]:
    """submitit's job folders (`.submitit/%j`, one per job)."""
    return [p for p in (sweep / ".submitit").iterdir() if p.name.isdigit()]


@pytest.mark.slow
def test_each_group_is_one_job_and_its_members_folders_are_an_in_process_groups(tmp_path):
    here = optlab("train", *SWEEP, "hydra/launcher=vectorized", "hydra.sweep.dir=here", cwd=tmp_path)
    assert here.returncode == 0, here.stderr
    there = optlab("train", *SWEEP, "hydra/launcher=vectorized_submitit_local", "hydra.launcher.timeout_min=5",
                   "hydra.sweep.dir=there", cwd=tmp_path)
    assert there.returncode == 0, there.stderr
    assert "4 runs as 2 jobs" in there.stdout and len(jobs(tmp_path / "there")) == 2
    assert "training 3 runs as one stacked model" in there.stdout  # what each job printed comes back
    runs, alike = members(tmp_path / "there"), members(tmp_path / "here")
    assert len(runs) == 4 and runs.keys() == alike.keys()
    for name, run in runs.items():
        assert files(run) == files(alike[name]), name
        assert metrics_of(run) == metrics_of(alike[name]), name  # the same numbers, to the last bit
        assert history(run) == history(alike[name]), name
        assert metrics_of(run)["status"] == "completed"
    assert (tmp_path / "there" / "summary.csv").exists()


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="finds the job's worker in /proc")
def test_a_job_warned_of_its_time_limit_saves_its_runs_and_the_printed_command_finishes_the_sweep(tmp_path):
    sweep = ["-m", "optimizer.lr=0.05,0.1", "seed=0,1", "epochs=20", "model.hidden=[16]",
             "hydra/launcher=vectorized_submitit_local", "hydra.sweep.dir=sweep"]
    process = subprocess.Popen([sys.executable, "-m", "optlab", "train", *sweep], cwd=tmp_path, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for_epoch(tmp_path / "sweep" / "*" / "*", 2, process)
    (job,) = jobs(tmp_path / "sweep")  # one group: one job, its folder named by the process submitit started
    (worker,) = Path(f"/proc/{job.name}/task/{job.name}/children").read_text().split()  # the job's one task
    os.kill(int(worker), signal.SIGUSR2)  # as submitit warns a job before its time limit
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr  # stopped as by a SIGTERM
    said, _, line = stderr.strip().splitlines()[-1].partition("; finish the sweep with: ")
    assert said.startswith("optlab train: interrupted after epoch ") and shlex.split(line) == ["optlab", "train", *sweep]
    records = [metrics_of(run) for run in members(tmp_path / "sweep").values()]
    assert len(records) == 4 and {r["status"] for r in records} == {"interrupted"}
    assert len({r["epochs_run"] for r in records}) == 1 and records[0]["epochs_run"] < 20

    again = paste(line, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "training 4 runs as one stacked model (resumed)" in again.stdout
    records = [metrics_of(run) for run in members(tmp_path / "sweep").values()]
    assert {(r["status"], r["epochs_run"]) for r in records} == {("completed", 20)}


def test_a_mistake_in_one_member_fails_that_run_alone_as_in_process(tmp_path):
    """torch refuses Nesterov without momentum only as the group is built, in the job: its runs
    go one at a time there, only that one fails, and the sweep's console says why."""
    result = optlab("train", "-m", "optimizer=nesterov", "optimizer.momentum=0,0.9", "epochs=1", "model.hidden=[16]",
                    "hydra/launcher=vectorized_submitit_local", "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "each runs alone" in result.stdout and "Nesterov momentum requires a momentum" in result.stdout
    last = result.stderr.strip().splitlines()[-1]
    assert "1 run of the sweep failed" in last and "optimizer.momentum=0/" in last
    statuses = {run.parent.name.rpartition("momentum=")[2]: metrics_of(run)["status"]
                for run in members(tmp_path / "sweep").values()}
    assert statuses == {"0.9": "completed", "0": "failed"}, statuses


BLOCKED = """import sys
sys.modules["submitit"] = sys.modules["hydra_plugins.hydra_submitit_launcher"] = None  # as if not installed
from optlab.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("missing", ["slurm", "plugin"])
def test_a_launcher_this_machine_cannot_run_is_refused_in_one_line_before_anything_is_written(missing, tmp_path):
    if missing == "slurm" and shutil.which("sbatch"):
        pytest.skip("SLURM is here")
    args = ["train", "-m", "seed=0,1", "hydra/launcher=vectorized_submitit_slurm", "hydra.launcher.partition=gpu",
            "hydra.sweep.dir=sweep"]
    head = [sys.executable, "-c", BLOCKED] if missing == "plugin" else [sys.executable, "-m", "optlab"]
    result = subprocess.run([*head, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    if missing == "plugin":
        assert last == "optlab train: hydra/launcher=vectorized_submitit_slurm needs Hydra's submitit launcher, " \
                       'not installed here: pip install -e ".[slurm]"'
    else:
        assert last.startswith("optlab train: hydra/launcher=vectorized_submitit_slurm: no SLURM on this machine")
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("plugins", [[], ["hydra/sweeper=optlab"]])
def test_another_hydra_apps_sweep_runs_as_with_hydras_submitit_launcher(plugins, tmp_path):
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "app.yaml").write_text("x: 0\n")
    result = subprocess.run([sys.executable, "app.py", "-m", *plugins, "hydra/launcher=vectorized_submitit_local",
                             "x=1,2", "hydra.sweep.dir=s"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "Submitit 'local' sweep output dir" in result.stdout  # Hydra's own launcher ran them
    assert [(tmp_path / "s" / job / "out.txt").read_text() for job in ("0", "1")] == ["x=1", "x=2"]
