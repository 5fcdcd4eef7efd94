"""Runs that survive: interrupt and resume exactly, files never half-written, bad input never
ends in a traceback."""

from __future__ import annotations

import csv
import errno
import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import call, make_config, optlab
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from optlab.jobs.train import train
from optlab.store.folder import archive

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


def paste(line: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run a command optlab printed as a person would: pasted into bash, as printed."""
    return subprocess.run(["bash", "-c", line], cwd=cwd, capture_output=True, text=True, timeout=120)


def timing(run: Path) -> dict:
    return {k: v for k, v in json.loads((run / "metrics.json").read_text()).items() if k in TIMING}


@pytest.mark.slow
def test_sigterm_saves_the_run_and_the_printed_resume_command_ends_it_exactly(tmp_path):
    train(make_config(*RUN), tmp_path / "whole")  # in this process: the same numbers, sooner

    name = "cut a=1,b [2]"  # what Hydra's grammar and the shell would both split
    run = tmp_path / name
    process = start(tmp_path, *RUN, f"hydra.run.dir='{run}'")
    wait_for_epoch(Path(str(run).replace("[", "[[]")), 5, process)
    process.send_signal(signal.SIGTERM)  # a cluster preempting the job
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143
    last = stderr.strip().splitlines()[-1]
    assert last == f"optlab train: interrupted after epoch {metrics_of(run)['epochs_run']}; " \
        f"resume with: optlab train resume='{name}'"  # from the cwd, quoted for bash
    assert metrics_of(run)["status"] == "interrupted" and 5 <= metrics_of(run)["epochs_run"] < 40
    assert len(list(csv.DictReader((run / "history.csv").open()))) == metrics_of(run)["epochs_run"]
    before = timing(run)

    resumed = paste(last.split("resume with: ")[1], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert metrics_of(run) == metrics_of(tmp_path / "whole")  # every number, exactly
    events = EventAccumulator(str(run))
    events.Reload()
    steps = [e.step for e in events.Scalars("step/loss")]
    assert steps == list(range(1, metrics_of(run)["steps"] + 1))  # no point twice, none rewound
    assert [e.step for e in events.Scalars("val/loss")] == list(range(1, 41))

    # one clock across the resume: elapsed time keeps rising, timings cover the whole run
    rows = list(csv.DictReader((run / "history.csv").open()))
    elapsed = [float(row["elapsed_s"]) for row in rows]
    assert all(b > a for a, b in zip(elapsed, elapsed[1:]))
    after = timing(run)
    assert after["train_time_s"] >= elapsed[-1] > before["train_time_s"]
    assert after["wall_time_s"] > before["wall_time_s"]
    assert after["epoch_time_s"] == pytest.approx(after["train_time_s"] / 40)
    assert after["train_samples_per_s"] == pytest.approx(int(rows[-1]["examples"]) / after["train_time_s"])

    curves = next(line for line in resumed.stdout.splitlines() if "tensorboard --logdir" in line)
    inspected = paste(curves.split("curves:")[1].strip() + " --inspect", cwd=tmp_path)
    assert inspected.returncode == 0 and f"Found event files in:\n{name}\n" in inspected.stdout

    again = optlab("train", f"resume={run}", cwd=tmp_path)
    assert again.returncode == 0 and "already completed: nothing to resume" in again.stdout


class Evil:
    """A pickle that runs a command as it loads: what a crafted checkpoint can do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line(code: int, err: str) -> str:
    assert code == 2 and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("optlab train: "), err
    return lines[0]


def damage(folder: Path, name: str, how: str, marker: Path) -> None:
    file = folder / name
    if how == "truncated":
        file.write_bytes(file.read_bytes()[: len(file.read_bytes()) // 3])
    elif how == "garbage":
        file.write_bytes(b"{{{ not what it should be \x00\xff")
    elif how == "evil":
        torch.save({"model": Evil(marker)}, file)
    elif how == "foreign":
        torch.save({"model": {"weight": torch.zeros(3)}}, file)
    elif how == "deleted":
        file.unlink()


DAMAGE = [("checkpoints/last.pt", "truncated"), ("checkpoints/last.pt", "evil"), ("checkpoints/last.pt", "foreign"),
          ("checkpoints/best.pt", "truncated"), ("checkpoints/best.pt", "evil"), ("checkpoints/init.pt", "garbage"),
          ("checkpoints/init.pt", "deleted"), (".hydra/config.yaml", "garbage"), (".hydra/overrides.yaml", "garbage"),
          ("checkpoints/last.pt", "deleted")]


def test_resume_refuses_changes_and_any_damage_in_one_line_naming_the_file_and_changes_nothing(
        tmp_path, capfd):
    from optlab.cli.main import main

    run = tmp_path / "cut"
    process = start(tmp_path, *RUN, f"hydra.run.dir={run}")
    wait_for_epoch(run, 2, process)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=60)
    assert process.returncode == 130
    record = files_of(run)

    changed = optlab("train", f"resume={run}", "epochs=50", "optimizer.lr=0.2", cwd=tmp_path)
    line = one_line(changed.returncode, changed.stderr)
    assert "epochs: 40 → 50" in line and "optimizer.lr: 0.1 → 0.2" in line and "resume.allow_changes=true" in line
    assert files_of(run) == record  # the run's record is untouched

    marker = tmp_path / "pwned"
    for i, (name, how) in enumerate(DAMAGE):
        copy = tmp_path / f"damaged{i}"
        shutil.copytree(run, copy)
        damage(copy, name, how, marker)
        before = files_of(copy)
        capfd.readouterr()
        try:
            code = main(["train", f"resume={copy}"])
        except SystemExit as stop:
            code = stop.code
        line = one_line(code, capfd.readouterr().err)
        assert str(copy / name) in line or str(copy) in line and name in line, (name, how, line)
        if how == "evil":
            assert "refused to load" in line and "weights_only=True" in line
        assert files_of(copy) == before, (name, how)  # nothing written, nothing rewritten
        assert not marker.exists(), (name, how)  # and no code ran

    nothing = optlab("train", f"resume={tmp_path / 'nowhere'}", cwd=tmp_path)
    assert "is not a run folder" in one_line(nothing.returncode, nothing.stderr)


def test_a_crafted_pickle_runs_no_code_wherever_optlab_reads_a_checkpoint(tmp_path, trained_run):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"model": Evil(marker)}, evil)
    torch.load(evil, weights_only=False)  # the file really runs code when loaded unsafely
    assert marker.exists()
    marker.unlink()

    pretrained = optlab("train", "init=pretrained", f"init.path={evil}", "epochs=1", cwd=tmp_path)
    assert f"refused to load {evil}" in one_line(pretrained.returncode, pretrained.stderr)
    assert not marker.exists()

    batches = tmp_path / "cifar" / "cifar10" / "cifar-10-batches-py"  # CIFAR-10's files are pickles too
    batches.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (batches / name).write_bytes(pickle.dumps({b"data": Evil(marker), b"labels": [0]}))
    cifar = optlab("train", "data=cifar10", f"data.root={tmp_path / 'cifar'}", cwd=tmp_path)
    assert "refused to load posix.system" in one_line(cifar.returncode, cifar.stderr)
    assert f"cannot read {batches / 'data_batch_1'}" in cifar.stderr and not marker.exists()

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    torch.save({"model": Evil(marker)}, run / "checkpoints" / "best.pt")
    landscape = optlab("landscape", str(run), cwd=tmp_path)
    assert landscape.returncode == 2 and "Traceback" not in landscape.stderr
    assert f"refused to load {run / 'checkpoints' / 'best.pt'}" in landscape.stderr
    assert not marker.exists()


def test_a_mistake_leaves_no_folder_behind(tmp_path):
    np.savez(tmp_path / "bad.npz", X=np.zeros((50, 3)), y=np.zeros(40))
    np.savez(tmp_path / "four.npz", X=np.zeros((4, 3)), y=np.array([0, 1, 0, 1]))
    for args in (["optimizer.lr=-1"], ["data=npz", "data.path=bad.npz"], ["data=npz", "data.path=four.npz"],
                 ["surface=quadratic", "scheduler=onecycle", "scheduler.epochs=5"], ["~scheduler"],
                 ["-m", "optimizer=sgd,adam", "summary.metric=best_val_los"]):
        result = optlab("train", *args, cwd=tmp_path)
        one_line(result.returncode, result.stderr)
        assert not list((tmp_path / "outputs").glob("*/*")), args  # no run or sweep folder


@pytest.mark.slow
def test_a_rerun_archives_every_file_of_the_earlier_attempt_under_a_new_name(tmp_path):


    run = tmp_path / "run"
    first = optlab("train", "epochs=1", "curvature.final=true", "curvature.samples=64", f"hydra.run.dir={run}",
                   cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    earlier = files_of(run)
    assert {".hydra/config.yaml", "train.log", "metrics.json", "curvature.json", "landscape.png"} <= set(earlier)
    same = optlab("train", "curvature.samples=64", "curvature.final=true", "epochs=1", "summary.metric=test_acc",
                  f"hydra.run.dir={run}", cwd=tmp_path)  # the same config, written otherwise: skipped
    assert same.returncode == 0 and "skipped:" in same.stdout
    now = files_of(run)
    assert now.pop("train.log").startswith(earlier.pop("train.log"))  # the log only grows
    assert now == earlier  # its record, .hydra/ included, as it was
    earlier = files_of(run)
    again = optlab("train", "epochs=2", f"hydra.run.dir={run}", cwd=tmp_path)  # another config
    assert again.returncode == 0, again.stderr
    (archived,) = (run / ".previous").iterdir()
    assert files_of(archived) == earlier  # every file, byte for byte
    assert not (run / "curvature.json").exists()  # nothing stale beside the new run
    assert json.loads((run / "metrics.json").read_text())["epochs_run"] == 2
    finished = files_of(run)
    typo = optlab("train", "data=npz", "data.path=nowhere.npz", f"hydra.run.dir={run}", cwd=tmp_path)
    assert "nowhere.npz does not exist" in one_line(typo.returncode, typo.stderr)
    assert files_of(run) == finished  # an attempt that never trained is taken back, whole

    folder = tmp_path / "twice"
    names = set()
    for _ in range(3):  # within one second: the names still differ
        folder.mkdir(exist_ok=True)
        (folder / "metrics.json").write_text("{}")
        names.add(archive(folder).name)
    assert len(names) == 3


def test_the_first_ctrl_c_asks_to_stop_the_second_stops_at_once(tmp_path, monkeypatch, capsys):
    from optlab.training.callbacks import StopOnSignal

    before = signal.getsignal(signal.SIGINT)
    with StopOnSignal() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.signal == signal.SIGINT  # noted; training stops after this step
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before  # handlers put back

    import optlab.jobs.train
    from optlab.cli.main import main

    def second_ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(optlab.jobs.train, "train", second_ctrl_c)
    assert main(["train", f"hydra.run.dir={tmp_path / 'run'}"]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and err == "optlab train: stopped before the run began: nothing was kept\n"
    assert not (tmp_path / "run").exists()  # nothing had trained: the folder is taken back


@pytest.mark.slow
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
                assert isinstance(torch.load(file, weights_only=True), dict)  # safe to load
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


def interrupted_run(capfd, run: Path) -> dict[str, bytes]:
    """A finished one-epoch run whose record says it was interrupted (so that it resumes): its files."""
    assert call(capfd, "train", "epochs=1", "model.hidden=[8]", f"hydra.run.dir={run}")[0] == 0
    record = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({**record, "status": "interrupted"}))
    return files_of(run)


def no_space(*args, **kwargs):
    """A write on a full disk, as the kernel reports it: ENOSPC, and no file name."""
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def save_on_a_full_disk(obj, f):
    """torch.save on a full disk: its zip writer raises a RuntimeError while handling the OSError."""
    try:
        no_space()
    except OSError:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1088 vs 982") from None


def test_a_full_disk_ends_in_one_line_naming_the_file_and_takes_back_the_attempt(tmp_path, monkeypatch, capfd):
    import pathlib

    from torch.utils import tensorboard

    run, fresh = tmp_path / "run", tmp_path / "fresh"
    small = ["model.hidden=[8]", f"hydra.run.dir={run}"]
    assert call(capfd, "train", "epochs=1", *small)[0] == 0
    finished = files_of(run)
    for target, name, fake, what in [(pathlib.Path, "write_text", no_space, run),  # the job's .hydra/, as Hydra writes it
                                     (torch, "save", save_on_a_full_disk, run / "checkpoints" / "init.pt")]:
        with monkeypatch.context() as patch:
            patch.setattr(target, name, fake)
            code, out, err = call(capfd, "train", "epochs=2", *small)  # a changed config: the run is archived
            assert one_line(code, err) == f"optlab train: cannot write {what}: No space left on device"
            assert "moved to" in out and "taken back" in out.split("moved to")[1], out  # says what happened
            assert files_of(run) == finished and not (run / ".previous").exists()  # the finished run, back in place
            code, _, err = call(capfd, "train", "epochs=2", "model.hidden=[8]", f"hydra.run.dir={fresh}")
            assert one_line(code, err) == f"optlab train: cannot write {str(what).replace(str(run), str(fresh))}: " \
                "No space left on device"
            assert not fresh.exists()  # a refused start leaves no folder

    cut = tmp_path / "cut"
    before = interrupted_run(capfd, cut)
    with monkeypatch.context() as patch:  # the event writer's thread meets the full disk
        patch.setattr(tensorboard.writer.EventFileWriter, "__init__", no_space)
        code, _, err = call(capfd, "train", f"resume={cut}")
    assert one_line(code, err) == f"optlab train: cannot write {cut}: No space left on device"
    after = files_of(cut)
    assert after.pop("train.log").startswith(before.pop("train.log")) and after == before  # resumable as it was


def test_a_folder_that_cannot_be_written_ends_in_one_line_naming_the_file(tmp_path, monkeypatch, capfd):
    import logging

    cut = tmp_path / "cut"
    before = interrupted_run(capfd, cut)

    def read_only(handler):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), handler.baseFilename)

    monkeypatch.setattr(logging.FileHandler, "_open", read_only)  # what a non-root user meets in a read-only folder
    code, _, err = call(capfd, "train", f"resume={cut}")
    assert one_line(code, err) == f"optlab train: cannot write {cut / 'train.log'}: Permission denied"
    code, _, err = call(capfd, "lr-find", f"hydra.run.dir={tmp_path / 'lr'}")
    assert one_line(code, err.replace("optlab lr-find", "optlab train")) == \
        f"optlab train: cannot write {tmp_path / 'lr' / 'lr_find.log'}: Permission denied"
    assert files_of(cut) == before and not (tmp_path / "lr").exists()


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MB tmpfs, and a read-only view of it (where this user may mount them; elsewhere the
    test is skipped)."""
    disk, view = tmp_path / "disk", tmp_path / "view"
    disk.mkdir()
    view.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("no tmpfs can be mounted here")
    try:
        subprocess.run(["mount", "--bind", str(disk), str(view)], check=True)
        subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], check=True)
        yield disk, view
    finally:
        for mounted in (view, disk):
            subprocess.run(["umount", "-l", str(mounted)], capture_output=True)


def fill(disk: Path) -> None:
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        with pytest.raises(OSError, match="No space left"):
            while True:
                os.write(fd, bytes(4096))
    finally:
        os.close(fd)


def test_a_real_full_disk_and_read_only_folder_end_in_one_line_and_change_nothing(small_disk, capfd):
    disk, view = small_disk
    assert call(capfd, "train", "epochs=1", "model.hidden=[8]", f"hydra.run.dir={disk / 'done'}")[0] == 0
    interrupted_run(capfd, disk / "cut")
    fill(disk)
    for folder in (disk, view):  # full, then read-only
        before = {run: files_of(folder / run) for run in ("done", "cut")}
        for args in (["epochs=2", "model.hidden=[8]", f"hydra.run.dir={folder / 'done'}"], [f"resume={folder / 'cut'}"],
                     ["epochs=1", "model.hidden=[8]", f"hydra.run.dir={folder / 'fresh'}"]):
            code, _, err = call(capfd, "train", *args)
            assert "cannot write" in one_line(code, err), args
        assert not (folder / "fresh").exists()
        for run, files in before.items():  # nothing lost or rewritten (a resume's log may only grow)
            now = files_of(folder / run)
            assert now.pop("train.log").startswith(files.pop("train.log"))
            assert {k: v for k, v in now.items() if v} == {k: v for k, v in files.items() if v}, run  # an empty event file aside


@pytest.mark.slow
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


def test_a_run_saved_before_a_feature_existed_still_resumes_its_config():
    """lr_find, noise and target came later: a saved config without them is the same run."""
    from omegaconf import OmegaConf

    from optlab.config.identity import config_changes

    cfg = make_config("epochs=3")
    saved = OmegaConf.masked_copy(cfg, [k for k in cfg if k not in ("lr_find", "noise", "target")])
    assert config_changes(saved, cfg) == []
    watched = config_changes(saved, make_config("epochs=3", "target.val_acc=0.9"))
    assert "target.val_acc: None → 0.9" in watched  # a feature the run now uses is a change


def test_a_full_disk_in_a_sweep_ends_in_one_line_and_puts_back_what_did_not_train(tmp_path, monkeypatch, capfd):
    import hydra.core.utils

    sweep = tmp_path / "sweep"
    args = ["-m", "seed=0,1,2", "epochs=1", "model.hidden=[8]", f"hydra.sweep.dir={sweep}"]
    assert call(capfd, "train", *args)[0] == 0
    before = files_of(sweep)
    save, calls = hydra.core.utils._save_config, []

    def full_at_the_second_job(cfg, filename, output_dir):
        calls.append(output_dir)
        if len({str(c) for c in calls}) >= 2:
            no_space()
        save(cfg, filename, output_dir)

    monkeypatch.setattr(hydra.core.utils, "_save_config", full_at_the_second_job)
    code, _, err = call(capfd, "train", *args, "rerun=true")  # every job's earlier run is moved aside first
    assert one_line(code, err).endswith("No space left on device")
    after = files_of(sweep)
    def of(seeds, files):
        return {name: data for name, data in files.items() if any(f"/seed={seed}/" in name for seed in seeds)}

    assert of((1, 2), before) and of((1, 2), after) == of((1, 2), before)  # put back as they were, no .previous/
    retrained = next(sweep.glob("*/seed=0"))
    assert json.loads((retrained / "metrics.json").read_text())["status"] == "completed"  # the job that trained stays


def test_a_ctrl_c_as_a_run_starts_leaves_no_folder_and_says_so(tmp_path, monkeypatch, capfd):
    """Before training takes SIGINT itself, Python raises KeyboardInterrupt wherever it is."""
    from optlab.jobs import dispatch


    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    run, sweep = tmp_path / "run", tmp_path / "sweep"
    assert call(capfd, "train", "epochs=1", "model.hidden=[8]", f"hydra.run.dir={run}")[0] == 0
    finished = files_of(run)
    monkeypatch.setattr(dispatch, "run", interrupted)
    code, _, err = call(capfd, "train", "epochs=2", "model.hidden=[8]", f"hydra.run.dir={tmp_path / 'new'}")
    assert (code, err.strip()) == (130, "optlab train: stopped before the run began: nothing was kept")
    assert not (tmp_path / "new").exists()
    code, _, err = call(capfd, "train", "epochs=2", "model.hidden=[8]", f"hydra.run.dir={run}")  # archives the run
    assert (code, err.strip()) == (130, f"optlab train: stopped before the run began: {run} is as it was before "
                                        "this command")
    assert files_of(run) == finished
    code, _, err = call(capfd, "train", "-m", "seed=0,1", "epochs=1", f"hydra.sweep.dir={sweep}")
    said, _, again = err.strip().partition("; finish the sweep with: ")
    assert (code, said) == (130, "optlab train: stopped at once"), err
    assert again.endswith(f"hydra.sweep.dir={sweep}")
