"""Runs that survive: interrupt and resume exactly, files never half-written, bad input never
ends in a traceback."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import make_config, optlab
from optlab.train import train

TIMING = {"wall_time_s", "train_time_s", "epoch_time_s", "train_samples_per_s"}
RUN = ["epochs=40", "model.hidden=[64]", "batch_size=32", "dropout=0.2", "scheduler=exponential",
       "early_stopping=val_loss", "early_stopping.patience=100"]


def start(cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "optlab", "train", *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_epoch(run: Path, epoch: int, process: subprocess.Popen, timeout: float = 60) -> None:
    """Until the train.log at `run` (a glob pattern) shows `epoch` finished; the log is written
    line by line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        for log in Path(run.anchor).glob(str(run.relative_to(run.anchor) / "train.log")):
            if f"epoch {epoch} " in log.read_text():
                return
        time.sleep(0.05)
    raise AssertionError(f"epoch {epoch} never came: {process.poll()}")


def metrics_of(run: Path) -> dict:
    return {k: v for k, v in json.loads((run / "metrics.json").read_text()).items() if k not in TIMING}


def test_sigterm_saves_the_run_and_resume_ends_exactly_as_an_uninterrupted_run(tmp_path):
    train(make_config(*RUN), tmp_path / "whole")  # in this process: the same numbers, sooner

    run = tmp_path / "cut"
    process = start(tmp_path, *RUN, f"hydra.run.dir={run}")
    wait_for_epoch(run, 5, process)
    process.send_signal(signal.SIGTERM)  # a cluster preempting the job
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143
    assert stderr.strip().splitlines()[-1] == f"optlab train: interrupted after epoch " \
        f"{metrics_of(run)['epochs_run']}; resume with: optlab train resume=cut"  # from the cwd
    assert metrics_of(run)["status"] == "interrupted" and 5 <= metrics_of(run)["epochs_run"] < 40
    assert len(list(csv.DictReader((run / "history.csv").open()))) == metrics_of(run)["epochs_run"]

    resumed = optlab("train", f"resume={run}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert metrics_of(run) == metrics_of(tmp_path / "whole")  # every number, exactly
    events = EventAccumulator(str(run))
    events.Reload()
    steps = [e.step for e in events.Scalars("step/loss")]
    assert steps == list(range(1, metrics_of(run)["steps"] + 1))  # no point twice, none rewound
    assert [e.step for e in events.Scalars("val/loss")] == list(range(1, 41))

    again = optlab("train", f"resume={run}", cwd=tmp_path)
    assert again.returncode == 0 and "already completed: nothing to resume" in again.stdout


def test_resuming_with_a_changed_config_is_refused_and_bad_files_are_named(tmp_path):
    run = tmp_path / "cut"
    process = start(tmp_path, *RUN, f"hydra.run.dir={run}")
    wait_for_epoch(run, 2, process)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=60)
    assert process.returncode == 130
    config = (run / ".hydra" / "config.yaml").read_text()

    changed = optlab("train", f"resume={run}", "epochs=50", "optimizer.lr=0.2", cwd=tmp_path)
    assert changed.returncode == 2 and "Traceback" not in changed.stderr
    assert "epochs: 40 → 50" in changed.stderr and "optimizer.lr: 0.1 → 0.2" in changed.stderr
    assert "resume.allow_changes=true" in changed.stderr
    assert (run / ".hydra" / "config.yaml").read_text() == config  # the run's record is untouched

    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])  # truncated
    broken = optlab("train", f"resume={run}", cwd=tmp_path)
    assert broken.returncode == 2 and f"cannot continue from {last}" in broken.stderr
    assert "Traceback" not in broken.stderr
    nothing = optlab("train", f"resume={tmp_path / 'nowhere'}", cwd=tmp_path)
    assert nothing.returncode == 2 and "is not a run folder" in nothing.stderr


def test_the_first_ctrl_c_asks_to_stop_the_second_stops_at_once(tmp_path, monkeypatch, capsys):
    from optlab.callbacks import StopOnSignal

    before = signal.getsignal(signal.SIGINT)
    with StopOnSignal() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.signal == signal.SIGINT  # noted; training stops after this step
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before  # handlers put back

    import optlab.train
    from optlab.cli import main

    def second_ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(optlab.train, "train", second_ctrl_c)
    assert main(["train", f"hydra.run.dir={tmp_path / 'run'}"]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("optlab train: stopped at once")


def test_files_left_by_a_kill_9_at_random_moments_all_load(tmp_path):
    rng = random.Random(0)
    for attempt in range(2):
        run = tmp_path / f"killed{attempt}"
        process = start(tmp_path, *RUN, "checkpoint_every_s=0", f"hydra.run.dir={run}")
        wait_for_epoch(run, 1, process)
        time.sleep(rng.uniform(0.0, 1.0))
        process.kill()
        process.wait()
        files = [p for p in run.rglob("*") if p.is_file() and not p.name.endswith(".tmp")]
        assert files
        for file in files:
            if file.suffix == ".pt":
                assert isinstance(torch.load(file, weights_only=False), dict)
            elif file.suffix == ".json":
                json.loads(file.read_text())
            elif file.suffix == ".csv":
                list(csv.DictReader(file.open()))
        EventAccumulator(str(run)).Reload()  # a cut-off last event is skipped, not fatal
    resumed = optlab("train", f"resume={run}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr  # the killed run continues from its last save


def test_an_output_folder_that_cannot_be_written_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = optlab("train", f"hydra.run.dir={blocker / 'run'}", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("optlab train: cannot write") and str(blocker) in result.stderr


def test_an_interrupted_sweep_keeps_its_finished_runs_and_a_rerun_resumes_the_rest(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "optimizer=sgd,adam", "epochs=40", "model.hidden=[64]", "batch_size=32",
            f"hydra.sweep.dir={sweep}"]
    process = start(tmp_path, *args)
    wait_for_epoch(sweep / "*optimizer=adam*" / "seed=0", 3, process)  # the second run
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=60)
    assert process.returncode == 130
    (first,), (second,) = (list(sweep.glob(f"*optimizer={o}*/seed=0")) for o in ("sgd", "adam"))
    finished = metrics_of(first)
    assert finished["status"] == "completed" and metrics_of(second)["status"] == "interrupted"

    again = optlab("train", *args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "skipped:" in again.stdout and "resumed" in again.stdout
    assert metrics_of(first) == finished and metrics_of(second)["status"] == "completed"
    assert (sweep / "summary.csv").exists()


# --- any configuration trains or says what is wrong in one line ------------------------------

VALUES = {
    "optimizer": ["sgd", "momentum", "adam", "rprop", "lbfgs", "quickprop", "newton", "nope"],
    "model": ["mlp", "linear", "cnn", "transformer"],
    "data": ["digits", "moons", "spirals", "regression", "mnist", "npz"],
    "init": ["default", "zeros", "xavier_uniform", "pretrained", "layerwise"],
    "scheduler": ["constant", "step", "exponential", "plateau", "onecycle"],
    "early_stopping": ["off", "val_loss"],
    "batch_size": ["1", "7", "64", "full", "0", "-3", "abc"],
    "optimizer.lr": ["0.01", "0.5", "1e9", "-1", "zero"],
    "model.hidden": ["[]", "[8]", "[16,8]", "[0]", "big"],
    "dropout": ["0", "0.3", "1.5"],
    "batchnorm": ["true", "false", "maybe"],
    "weight_decay_mode": ["coupled", "decoupled", "l2", "sideways"],
    "precision": ["fp32", "bf16", "fp8"],
    "l2": ["0", "0.01", "-1"],
    "init.path": ["/nonexistent/run"],
    "data.path": ["/nonexistent/data.npz"],
    "summary.metric": ["best_val_acc", "happiness"],
    "epochs": ["1", "0"],
    "misspeled_key": ["1"],
}


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    """`optlab train ...` in this process (a subprocess per example would take minutes)."""
    from optlab.cli import main

    folder = tmp_path_factory.mktemp("drawn")
    count = iter(range(10**6))

    def run(overrides: list[str]) -> tuple[int, Path]:
        run_dir = folder / f"run{next(count)}"
        try:
            code = main(["train", *overrides, f"hydra.run.dir={run_dir}"])
        except SystemExit as stop:
            code = stop.code
        return code, run_dir

    return run


def test_any_drawn_configuration_trains_or_exits_2_with_one_line(in_process, capfd):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    keys = st.lists(st.sampled_from(sorted(VALUES)), unique=True, max_size=5)

    @settings(max_examples=15, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(keys.flatmap(lambda ks: st.tuples(*(st.sampled_from([f"{k}={v}" for v in VALUES[k]])
                                                 for k in ks))))
    def check(overrides):
        overrides = list(overrides)
        if not any(o.startswith("epochs=") for o in overrides):
            overrides.append("epochs=1")
        capfd.readouterr()
        code, run_dir = in_process(overrides)
        err = capfd.readouterr().err
        assert "Traceback" not in err, (overrides, err)
        if code == 0:
            status = json.loads((run_dir / "metrics.json").read_text())["status"]
            assert status in ("completed", "diverged"), (overrides, status)
        else:
            lines = [line for line in err.splitlines() if line.startswith("optlab train:")]
            assert code == 2 and len(lines) == 1, (overrides, code, err)

    check()
