"""Sweeps that compare: run names, HParams, the summary, seeds, divergence, re-runs, launchers."""

from __future__ import annotations

import csv
import json
import re
import shlex
import signal
import statistics
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, call, optlab
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata
from test_survival import paste, start, wait_for_epoch

from optlab.analysis.runs import RunFolder, group_runs
from optlab.analysis.summary import rank, table
from optlab.config.resolvers import register
from optlab.jobs.dispatch import sweep_again
from optlab.naming import job_dir, override, run_name
from optlab.store.files import load_checkpoint

TINY = ["epochs=1", "model.hidden=[16]"]


def sweep(tmp_path: Path, folder: str, *overrides: str, timeout: float = 240):
    result = optlab("train", "-m", *overrides, f"hydra.sweep.dir={tmp_path / folder}", cwd=tmp_path,
                    timeout=timeout)
    assert result.returncode == 0, result.stderr
    return result


def summary_rows(folder: Path) -> list[dict]:
    return list(csv.DictReader((folder / "summary.csv").open()))


def metrics_of(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_names_are_safe_and_put_the_seed_on_its_own_level():
    assert job_dir(["optimizer=adam", "batch_size=16", "seed=2"], 2) == "batch_size=16,optimizer=adam/seed=2"
    assert job_dir(["seed=1"], 1) == "defaults/seed=1"
    name = job_dir(["init.path=/runs/a b/c", "model.hidden=[8,8]"], 0)  # a list's brackets lose nothing
    assert re.fullmatch(r"init\.path=_runs_a_b_c_[0-9a-f]{8},model\.hidden=_8,8/seed=0", name), name
    assert re.fullmatch(r"2026-01-01_00-00-00_x=_a_b_[0-9a-f]{8}", run_name("2026-01-01_00-00-00", ["+x='a;b'"]))
    assert len(job_dir([f"k{i}=v" for i in range(60)], 0).split("/")[0]) <= 120
    # experiment=init's pretrained runs find their sibling, whatever else the command overrode
    sibling = job_dir(["experiment=init", "init=pretrained", "epochs=1", "seed=0"], 0, "init=xavier_uniform")
    assert sibling == job_dir(["experiment=init", "init=xavier_uniform", "epochs=1", "seed=0"], 0)
    assert sibling == "epochs=1,init=xavier_uniform/seed=0"


def test_values_that_read_alike_once_made_safe_get_names_of_their_own():
    values = ["/x/a/b.npz", "/x/a_b.npz", "/x/a b.npz", "/x/a:b.npz", "x/a/b.npz", "/x/a/b.npz/", "'/x/a/b.npz'",
              "/x/a/b.npz_", "_x_a_b.npz"]
    names = [job_dir([f"data.path={v}", "epochs=1"], 0) for v in values]
    assert len(set(names)) == len(values), names
    assert all(name.startswith("data.path=") and name.endswith(",epochs=1/seed=0") for name in names)
    assert names[-1] == "data.path=_x_a_b.npz,epochs=1/seed=0"  # nothing lost: the name earlier sweeps have


@pytest.mark.parametrize("text", ["汉" * 100, "é" * 130, "😀" * 40, "a" * 300])
def test_long_names_fit_a_file_name_by_bytes_whole_characters_and_a_hash(text, tmp_path):
    name = run_name("2026-01-01_00-00-00", [f"a={text}"])
    (tmp_path / name).mkdir()  # file names stop at 255 bytes, not characters
    kept, _, digest = name.rpartition("_")
    assert len(name.encode()) <= 130 and re.fullmatch(r"[0-9a-f]{8}", digest)
    assert f"2026-01-01_00-00-00_a={text}".startswith(kept)  # cut between characters, never inside one
    assert name != run_name("2026-01-01_00-00-00", [f"a={text}x"])


def test_two_jobs_whose_names_read_alike_train_in_folders_of_their_own(tmp_path):
    for path in ("x/a/b.npz", "x/a_b.npz"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        np.savez(tmp_path / path, X=np.random.default_rng(0).normal(size=(60, 4)), y=np.arange(60) % 2)
    result = sweep(tmp_path, "s", "data=npz", f"data.path={tmp_path}/x/a/b.npz,{tmp_path}/x/a_b.npz", *TINY)
    runs = list((tmp_path / "s").glob("*/seed=0"))
    assert len(runs) == 2 and not list((tmp_path / "s").glob("*/*/.previous"))
    assert sorted(metrics_of(run)["status"] for run in runs) == ["completed", "completed"]
    assert "2 runs in 2 configurations" in result.stdout


@pytest.mark.parametrize("launcher", ["basic", "vectorized", "joblib"])
def test_jobs_that_would_share_a_folder_are_refused_before_anything_starts(launcher, tmp_path):
    for jobs in (["seed=0,0"], ["optimizer.lr=0.1,0.10"], ["hydra.sweep.subdir=same", "seed=0,1"]):
        result = optlab("train", "-m", *jobs, *TINY, f"hydra/launcher={launcher}", "hydra.sweep.dir=s", cwd=tmp_path)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith("optlab train: the sweep's jobs ") and "would share the folder s/" in result.stderr
        assert not (tmp_path / "s").exists()


def test_a_2x2_sweep_names_runs_records_hparams_and_ends_with_a_summary(tmp_path):
    result = sweep(tmp_path, "sweep", "optimizer=sgd,adam", "batch_size=32,full", *TINY)
    root = tmp_path / "sweep"
    runs = sorted(p.parent for p in root.rglob("metrics.json"))
    names = sorted(str(p.relative_to(root)) for p in runs)
    assert names == [
        f"batch_size={b},epochs=1,model.hidden=_16_,optimizer={o}/seed=0"
        for b in ("32", "full") for o in ("adam", "sgd")
    ]
    # HParams inside each run's own folder: no timestamped subfolder
    for run in runs:
        assert sorted(p.name for p in run.iterdir() if p.is_dir()) == [".hydra", "checkpoints"]
        events = EventAccumulator(str(run))
        events.Reload()
        content = events.PluginTagToContent(metadata.PLUGIN_NAME)
        start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
        values = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
        overrides = dict(part.split("=") for part in run.parent.name.split(",") if "hidden" not in part)
        assert values["optimizer"] == overrides["optimizer"]
        assert values["batch_size"] == overrides["batch_size"] and values["status"] == "completed"
        assert values["seed"] == 0 and values["epochs"] == 1
        final = events.Scalars("final/best_val_acc")[0].value
        assert final == pytest.approx(metrics_of(run)["best_val_acc"])
        assert metadata.EXPERIMENT_TAG in content
    # the summary: console table, CSV and Markdown with one row per configuration, and plots
    rows = summary_rows(root)
    assert len(rows) == 4 and {r["n"] for r in rows} == {"1"}
    labels = {r["configuration"] for r in rows}
    assert labels == {f"batch_size={b} optimizer={o}" for b in ("32", "full") for o in ("sgd", "adam")}
    accuracies = [float(r["best_val_acc_mean"]) for r in rows]
    assert accuracies == sorted(accuracies, reverse=True)
    assert "ranked by best_val_acc, higher is better" in result.stdout
    assert (root / "summary.md").read_text().count("\n| ") == 5  # header and 4 rows
    for png in ("curves.png", "best_val_acc_vs_optimizer.png", "best_val_acc_vs_batch_size.png"):
        assert (root / png).read_bytes()[:4] == b"\x89PNG", png


def test_a_diverging_run_is_recorded_and_the_sweep_goes_on(tmp_path):
    result = sweep(tmp_path, "sweep", "optimizer.lr=1e6,0.1", "batch_size=full", "epochs=3", "model=linear")
    root = tmp_path / "sweep"
    diverged = metrics_of(next(root.glob("*lr=1000000.0*/seed=0")))
    assert diverged["status"] == "diverged" and diverged["diverged_step"] == 2
    assert diverged["epochs_run"] == 2 and diverged["test_acc"] is not None  # from epoch 1's weights
    assert metrics_of(next(root.glob("*lr=0.1*/seed=0")))["status"] == "completed"
    statuses = {r["configuration"]: r["status"] for r in summary_rows(root)}
    assert statuses == {"optimizer.lr=1000000.0": "1 diverged", "optimizer.lr=0.1": "1 completed"}
    assert "diverged at step 2" in result.stdout


def test_a_run_that_raises_is_recorded_as_failed_and_the_sweep_goes_on(tmp_path):
    """newton refuses a model over max_params; in a sweep that fails one run, not the sweep,
    and the sweep's exit code and last line say which run failed."""
    result = optlab("train", "-m", "optimizer=sgd,newton", "batch_size=full", "epochs=1",
                    "model.hidden=[128]", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    failed_dir = next((tmp_path / "sweep").glob("*newton*/seed=0"))
    failed = metrics_of(failed_dir)
    assert failed["status"] == "failed" and "9,610 parameters" in failed["error"]
    assert f"failed: {failed_dir}: newton: the model has 9,610 parameters" in result.stdout
    assert (failed_dir / "error.txt").exists()
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"optlab train: 1 run of the sweep failed (the lines above say why): {failed_dir.relative_to(tmp_path)}"]
    assert {r["status"] for r in summary_rows(tmp_path / "sweep")} == {"1 completed", "1 failed"}


def fake_run(path: str, seed: int, acc: float, **overrides: str) -> RunFolder:
    config = {"seed": seed, **{f"cfg.{k}": v for k, v in overrides.items()}}
    return RunFolder(Path(path), {"status": "completed", "best_val_acc": acc, "best_val_loss": 1 - acc},
               {**overrides, "seed": str(seed)}, config)


def test_runs_differing_only_in_seed_are_grouped_with_mean_and_std():
    accs = {"sgd": [0.90, 0.80, 0.70], "adam": [0.95, 0.97]}
    runs = [fake_run(f"/{o}/{s}", s, a, optimizer=o) for o, values in accs.items() for s, a in enumerate(values)]
    groups = {g.label: g for g in group_runs(runs)}
    assert set(groups) == {"optimizer=sgd", "optimizer=adam"}
    sgd = groups["optimizer=sgd"]
    assert len(sgd.runs) == 3 and sgd.mean("best_val_acc") == pytest.approx(0.8)
    assert sgd.std("best_val_acc") == pytest.approx(0.1)  # sample std of 0.9, 0.8, 0.7
    assert groups["optimizer=adam"].std("best_val_acc") == pytest.approx(statistics.stdev([0.95, 0.97]))
    assert [g.label for g in rank(list(groups.values()), "best_val_acc")] == ["optimizer=adam", "optimizer=sgd"]
    assert [g.label for g in rank(list(groups.values()), "best_val_loss")] == ["optimizer=adam", "optimizer=sgd"]
    header, rows = table(list(groups.values()), "best_val_acc")
    assert rows[1][:5] == ["2", "optimizer=sgd", "3", "3 completed", "0.8 ± 0.1"]


@pytest.mark.slow
def test_a_seeded_sweep_compare_across_two_sweeps_and_a_rerun_that_skips(tmp_path):
    args = ("optimizer=sgd,adam", "seed=0,1", "batch_size=full", *TINY)
    sweep(tmp_path, "a", *args)
    sweep(tmp_path, "b", "optimizer=momentum", "seed=0,1", "batch_size=full", *TINY)
    rows = summary_rows(tmp_path / "a")
    assert len(rows) == 2 and {r["n"] for r in rows} == {"2"}
    for row in rows:
        accs = [metrics_of(p)["best_val_acc"] for p in (tmp_path / "a").glob(
            f"*optimizer={row['configuration'].split('=')[1]}/seed=*")]
        assert float(row["best_val_acc_mean"]) == pytest.approx(statistics.fmean(accs))
        assert float(row["best_val_acc_std"]) == pytest.approx(statistics.stdev(accs))

    result = optlab("compare", str(tmp_path / "a"), str(tmp_path / "b"), "--metric", "best_val_loss",
                    "--x", "examples", "--out", str(tmp_path / "both"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    merged = summary_rows(tmp_path / "both")
    assert {r["configuration"] for r in merged} == {"optimizer=sgd", "optimizer=adam", "optimizer=momentum"}
    losses = [float(r["best_val_loss_mean"]) for r in merged]
    assert losses == sorted(losses) and {r["n"] for r in merged} == {"2"}
    assert (tmp_path / "both" / "curves.png").exists()

    missing = optlab("compare", str(tmp_path / "nope"), cwd=tmp_path)
    assert missing.returncode == 2 and "no such folder" in missing.stderr
    empty = optlab("compare", str(tmp_path / "a" / "optimizer=sgd"), cwd=tmp_path)  # no such run
    assert empty.returncode == 2

    # re-running the sweep into its folder skips its finished runs; rerun=true trains them again
    runs = sorted((tmp_path / "a").glob("*/seed=*"))
    before = {run: metrics_of(run) for run in runs}
    again = sweep(tmp_path, "a", *args)
    assert again.stdout.count("skipped:") == 4
    assert {run: metrics_of(run) for run in runs} == before  # untouched
    record = files_of(tmp_path / "a")
    typo = optlab("train", "-m", *args, "summary.metric=best_val_los", f"hydra.sweep.dir={tmp_path / 'a'}",
                  cwd=tmp_path)
    assert typo.returncode == 2 and len(typo.stderr.strip().splitlines()) == 1
    assert typo.stderr.startswith("optlab train: invalid value for 'summary.metric': 'best_val_los'")
    assert files_of(tmp_path / "a") == record  # a mistake in the command touches no finished run
    forced = sweep(tmp_path, "a", *args, "rerun=true")
    assert "skipped:" not in forced.stdout
    for run in runs:  # trained again; the earlier attempt kept aside, out of TensorBoard's way
        assert metrics_of(run)["wall_time_s"] != before[run]["wall_time_s"]
        assert len(list(run.glob("events.out.tfevents.*"))) == 1
        assert len(list(run.glob(".previous/*/metrics.json"))) == 1


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_a_job_that_fails_when_run_again_never_writes_over_a_finished_run(tmp_path):
    data = tmp_path / "data.npz"
    np.savez(data, X=np.random.default_rng(0).normal(size=(60, 4)), y=np.arange(60) % 2)
    args = ("data=npz", f"data.path={data}", "seed=0,1", *TINY)
    sweep(tmp_path, "s", *args)
    runs = sorted((tmp_path / "s").glob("*/seed=*"))
    finished = {run: files_of(run) for run in runs}
    data.write_bytes(b"not an npz")  # the data is damaged: every job of the re-run fails as it starts
    again = optlab("train", "-m", *args, "rerun=true", f"hydra.sweep.dir={tmp_path / 's'}", cwd=tmp_path)
    assert again.returncode == 1
    assert again.stderr.strip().splitlines()[-1].startswith("optlab train: 2 runs of the sweep failed")
    assert again.stdout.count(f"cannot read {data}") == 2, again.stdout  # each failure says why
    for run in runs:  # the attempt that never trained is taken back: each finished run as it was
        assert files_of(run) == finished[run] and not (run / ".previous").exists()
    np.savez(data, X=np.random.default_rng(0).normal(size=(60, 4)), y=np.arange(60) % 2)
    assert sweep(tmp_path, "s", *args).stdout.count("skipped:") == 2  # and still counts as finished


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_parallel_and_cluster_launchers_complete_a_sweep(launcher, tmp_path):
    extra = ["hydra.launcher.n_jobs=2"] if launcher == "joblib" else ["hydra.launcher.timeout_min=5"]
    sweep(tmp_path, "sweep", f"hydra/launcher={launcher}", *extra, "optimizer=sgd,adam",
          "batch_size=full", *TINY, timeout=300)
    runs = list((tmp_path / "sweep").glob("*/seed=0/metrics.json"))
    assert len(runs) == 2 and all(json.loads(r.read_text())["status"] == "completed" for r in runs)
    assert len(summary_rows(tmp_path / "sweep")) == 2
    if launcher == "joblib":  # two jobs on this machine's cores: each gets its share of threads
        logs = "".join(p.read_text() for p in (tmp_path / "sweep").glob("*/seed=0/train.log"))
        assert "threads per job" in logs


@pytest.mark.parametrize("launcher", ["basic", "vectorized"])
def test_a_sweep_composes_each_defaults_list_once(launcher, tmp_path, monkeypatch):
    """optlab's sweeper composes each defaults list the sweep picks once (~0.08 s) and hands
    in-process launchers the jobs' configs: Hydra's launchers would compose every job again."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    from optlab.cli.main import main

    composed = []
    compose = ConfigLoaderImpl.load_sweep_config
    monkeypatch.setattr(ConfigLoaderImpl, "load_sweep_config",
                        lambda self, master, job: composed.append(job) or compose(self, master, job))
    monkeypatch.chdir(tmp_path)
    assert main(["train", "-m", "seed=0,1", "optimizer=sgd,momentum", "epochs=1", "model.hidden=[8]",
                 f"hydra/launcher={launcher}", "hydra.sweep.dir=sweep"]) == 0
    assert len(list((tmp_path / "sweep").glob("**/metrics.json"))) == 4
    assert sorted(job[1] for job in composed) == ["optimizer=momentum", "optimizer=sgd"]


def test_a_job_composed_from_its_defaults_lists_copy_equals_hydras_own(tmp_path):
    """The copy with a job's values set is the config Hydra composes for the job, whatever
    the overrides: group choices, values, lists, dicts (merged), additions."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from hydra_plugins.optlab_sweeper._core import compose_grid


    register()
    grid = [["optimizer=sgd", "optimizer.lr=0.1", "seed=0", "model.hidden=[8]"],
            ["optimizer=sgd", "optimizer.lr=0.3", "seed=1", "model.hidden=[16,16]"],
            ["optimizer=adam", "optimizer.lr=0.1", "seed=0", "model.hidden=[8]"],
            ["optimizer=adam", "optimizer.lr=0.2", "seed=2", "model.hidden=[8]"],
            ["optimizer=adam", "seed=0", "+extra=1"],
            ["optimizer=adam", "seed=0", "+extra=2"],
            ["optimizer=adam", "early_stopping={patience:3}"],
            ["optimizer=adam", "early_stopping={min_delta:0.1}"]]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        loader = GlobalHydra.instance().hydra.config_loader
        master = compose("config", [f"hydra.sweep.dir={tmp_path}"], return_hydra_config=True)
        for job, fast in zip(grid, compose_grid(loader, master, grid)):
            slow = loader.load_sweep_config(master, job)
            assert OmegaConf.to_container(fast) == OmegaConf.to_container(slow), job
            assert OmegaConf.is_struct(fast) and OmegaConf.is_struct(slow)
            assert fast.hydra.job.override_dirname == slow.hydra.job.override_dirname != ""

@pytest.mark.parametrize("launcher", ["basic", "vectorized"])
def test_a_sweep_run_again_after_a_kill_9_resumes_each_job_from_its_last_save(launcher, tmp_path):
    args = ["-m", "seed=0,1", "epochs=30", "model.hidden=[16]", "checkpoint_every_s=0", f"hydra/launcher={launcher}",
            "hydra.sweep.dir=s"]
    process = start(tmp_path, *args)
    wait_for_epoch(tmp_path / "s" / "*" / "seed=0", 2, process)
    process.kill()  # no record written: only the checkpoints tell where each job stands
    process.wait()
    saved = {run: load_checkpoint(run / "checkpoints" / "last.pt")["epoch"]
             for run in (tmp_path / "s").glob("*/seed=*") if (run / "checkpoints" / "last.pt").exists()}
    assert saved and not list((tmp_path / "s").glob("*/*/metrics.json"))
    again = optlab("train", *args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    for run, epoch in saved.items():  # went on from its save: not trained afresh, nothing archived
        assert f"after epoch {epoch} " in (run / "train.log").read_text() and "resumed" in again.stdout
        assert not (run / ".previous").exists()
        assert metrics_of(run)["status"] == "completed" and metrics_of(run)["epochs_run"] == 30
        assert [int(row["epoch"]) for row in csv.DictReader((run / "history.csv").open())] == list(range(1, 31))
    assert len(list((tmp_path / "s").glob("*/seed=*/metrics.json"))) == 2


@pytest.mark.slow
def test_ctrl_c_in_a_sweep_in_its_default_folder_prints_the_command_that_finishes_it(tmp_path):
    args = ["-m", "optimizer.lr=0.05,0.1", "epochs=30", "model.hidden=[16]"]
    process = start(tmp_path, *args)
    wait_for_epoch(tmp_path / "outputs" / "sweeps" / "*" / "*lr=0.05*" / "seed=0", 2, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    (folder,) = (tmp_path / "outputs" / "sweeps").iterdir()  # named by the time it started
    said, _, line = stderr.strip().splitlines()[-1].partition("; finish the sweep with: ")
    assert said.startswith("optlab train: interrupted after epoch ")
    assert shlex.split(line) == ["optlab", "train", *args, f"hydra.sweep.dir={folder.relative_to(tmp_path)}"]
    again = paste(line, tmp_path)
    assert again.returncode == 0, again.stderr
    assert list((tmp_path / "outputs" / "sweeps").iterdir()) == [folder]  # that sweep, not a new one
    assert again.stdout.count("resumed") == 1  # the interrupted job; the other trains
    assert sorted(metrics_of(run)["status"] for run in folder.glob("*/seed=0")) == ["completed", "completed"]


@pytest.mark.parametrize("folder", ["-dashed", "a b", "it's", "x=1,y=[2]", "$HOME"])
def test_a_sweep_hint_names_its_folder_for_bash_and_hydra(folder):
    """The words bash reads from the hint are the command given, less its folder, and the
    folder in Hydra's grammar; the command line's words are quoted as typed."""
    from hydra.core.override_parser.overrides_parser import OverridesParser


    given = ["optlab", "train", "-m", "seed=0,1", "data.path=/a b", "hydra.sweep.dir=old"]
    words = shlex.split(sweep_again(given, Path(folder)))
    assert words[:-1] == ["optlab", "train", "-m", "seed=0,1", "data.path=/a b"]
    assert words[-1] == override("hydra.sweep.dir", folder)
    assert OverridesParser.create().parse_overrides([words[-1]])[0].value() == folder


def test_the_tensorboard_command_reads_a_folder_starting_with_a_dash(tmp_path):
    from tensorboard import program

    result = sweep(tmp_path, "-dashed", "seed=0", *TINY)
    line = next(line for line in result.stdout.splitlines() if line.startswith("curves:"))
    words = shlex.split(line.removeprefix("curves:"))
    board = program.TensorBoard()
    assert board.configure(argv=words) == ["tensorboard"]
    (run,) = (tmp_path / "-dashed").glob("*/seed=0")
    assert Path(board.flags.logdir) == run.relative_to(tmp_path)


def test_a_sweep_whose_jobs_compose_seconds_apart_stays_in_one_folder(tmp_path, monkeypatch, capfd):
    """Each job composes its config anew: on a busy machine a `${now:...}` folder read a second
    later would name another sweep."""
    import datetime as real

    import hydra.core.utils

    class Clock(real.datetime):
        ticks = 0

        @classmethod
        def now(cls, tz=None):  # a second passes between any two readings
            cls.ticks += 1
            return real.datetime(2026, 1, 1) + real.timedelta(seconds=cls.ticks)

    monkeypatch.setattr(hydra.core.utils, "datetime", Clock)
    monkeypatch.chdir(tmp_path)
    code, _, err = call(capfd, "train", "-m", "seed=0,1", "epochs=1", "model.hidden=[8]")
    assert code == 0, err
    (folder,) = (tmp_path / "outputs" / "sweeps").iterdir()
    assert len(list(folder.glob("*/seed=*/metrics.json"))) == 2 and (folder / "summary.csv").exists()


@pytest.mark.parametrize("args, says", [
    (["data=npz", "epochs=1,2"], "data.path is not set: point it at an .npz file with arrays X and y"),
    (["data=csv", "data.path=good.csv,nope.csv"], "data.path: nope.csv does not exist (expected a .csv file with a "
                                                  "header row)"),
])
def test_a_sweep_whose_data_file_is_missing_is_refused_before_any_job(tmp_path, args, says):
    (tmp_path / "good.csv").write_text("a,label\n1,0\n2,1\n3,0\n4,1\n5,0\n6,1\n7,0\n8,1\n9,0\n10,1\n")
    result = optlab("train", "-m", *args, f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip() == f"optlab train: {says}", result.stderr
    assert not (tmp_path / "sweep").exists()
