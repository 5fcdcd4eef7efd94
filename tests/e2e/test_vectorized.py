"""Vectorized sweeps: a member of a stacked group is the run it would be alone, frozen when it
diverges without touching the others, and an ordinary run folder for everything downstream."""

from __future__ import annotations

import csv
import json
import shlex
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from helpers import make_config, optlab
from test_survival import paste, wait_for_epoch

from optlab.jobs.train import train
from optlab.jobs.vectorize import group_key, train_group
from optlab.store.files import load_checkpoint

SMALL = ["model.hidden=[32]", "epochs=5"]

# per optimizer: what both members share, and what each member sets of its own
CASES = {
    "sgd": (["optimizer=sgd"], [["optimizer.lr=0.05"], ["seed=1", "optimizer.weight_decay=0.001"]]),
    "momentum": (["optimizer=momentum", "scheduler=step"],
                 [["scheduler.gamma=0.5"], ["seed=1", "scheduler.gamma=0.1", "scheduler.step_size=2"]]),
    "nesterov": (["optimizer=nesterov", "weight_decay_mode=decoupled", "optimizer.weight_decay=0.001"],
                 [[], ["seed=1", "optimizer.momentum=0.5"]]),
    "adam": (["optimizer=adam", "batchnorm=true"], [[], ["seed=1", "optimizer.betas=[0.8,0.99]", "optimizer.eps=1e-6"]]),
    "adamw": (["optimizer=adamw", "scheduler=exponential"], [["scheduler.k=0.01"], ["seed=1", "optimizer.lr=0.003"]]),
    "rmsprop": (["optimizer=rmsprop"], [["l2=0.001"], ["seed=1", "optimizer.alpha=0.9"]]),
    "adagrad": (["optimizer=adagrad", "weight_decay_mode=l2", "optimizer.weight_decay=0.001"],
                [[], ["seed=1", "optimizer.lr=0.05", "init=xavier_uniform"]]),
    "adamax": (["optimizer=adamax"], [[], ["seed=1", "optimizer.betas=[0.8,0.99]", "optimizer.weight_decay=0.001"]]),
    "rprop": (["optimizer=rprop"], [[], ["seed=1", "optimizer.etas=[0.3,1.5]", "optimizer.lr=0.005"]]),
    "quickprop": (["optimizer=quickprop"], [[], ["seed=1", "optimizer.mu=1.5", "optimizer.decay=0.001"]]),
    "nadam": (["optimizer=nadam"], [[], ["seed=1", "optimizer.momentum_decay=0.01", "optimizer.lr=0.003"]]),
    "radam": (["optimizer=radam"], [[], ["seed=1", "optimizer.betas=[0.8,0.99]", "optimizer.weight_decay=0.001"]]),
    "adadelta": (["optimizer=adadelta"], [[], ["seed=1", "optimizer.rho=0.8", "optimizer.lr=0.5"]]),
    "linear": (["model=linear", "optimizer=momentum"], [[], ["seed=1", "optimizer.momentum=0.5"]]),
    "dropout": (["optimizer=momentum"], [["dropout=0.2"], ["seed=1", "dropout=0.5"]]),
    # a stacked convolution is one grouped convolution; batch norm keeps each member's statistics
    "cnn": (["model=cnn", "model.channels=[4,8]", "model.hidden=[16]", "batchnorm=true", "optimizer=momentum"],
            [["dropout=0.1"], ["seed=1", "dropout=0.3", "optimizer.momentum=0.5"]]),
}


def history(run: Path, key: str = "val_loss") -> list[float]:
    return [float(row[key]) for row in csv.DictReader((run / "history.csv").open())]


@pytest.mark.parametrize("name", CASES)
def test_each_member_equals_the_same_run_trained_alone(tmp_path, name):
    shared, own = CASES[name]
    cfgs = [make_config(*SMALL, *shared, *extra) for extra in own]
    assert group_key(cfgs[0]) is not None and group_key(cfgs[0]) == group_key(cfgs[1])
    members = [tmp_path / f"member{k}" for k in range(len(cfgs))]
    train_group(cfgs, members)
    for cfg, member in zip(cfgs, members):
        alone = tmp_path / f"alone-{member.name}"
        train(cfg, alone)
        initial = [load_checkpoint(run / "checkpoints" / "init.pt") for run in (member, alone)]
        assert all(torch.equal(initial[0][k], initial[1][k]) for k in initial[1])  # same initial weights
        assert history(member, "examples") == history(alone, "examples")
        # every epoch; batch statistics are summed in another order in a stacked model, and Adam's
        # division by √v amplifies that float32 rounding to ~1e-4 after five epochs on some CPUs
        rtol = 1e-3 if cfg.batchnorm and cfg.optimizer._target_.endswith("Adam") else 1e-4
        torch.testing.assert_close(history(member), history(alone), rtol=rtol, atol=0)
        assert history(member, "lr") == pytest.approx(history(alone, "lr"), rel=1e-6)  # its own schedule


def test_a_diverged_member_is_frozen_and_the_others_are_as_without_it(tmp_path):
    lrs = {"a": 0.05, "blows_up": 1e4, "b": 0.1}
    cfgs = {name: make_config(*SMALL, "optimizer=momentum", f"optimizer.lr={lr}", f"seed={i}")
            for i, (name, lr) in enumerate(lrs.items())}
    train_group(list(cfgs.values()), [tmp_path / "with" / name for name in cfgs])
    train_group([cfgs["a"], cfgs["b"]], [tmp_path / "without" / name for name in ("a", "b")])
    for name in ("a", "b"):
        assert history(tmp_path / "with" / name) == history(tmp_path / "without" / name)
    blown = json.loads((tmp_path / "with" / "blows_up" / "metrics.json").read_text())
    assert blown["status"] == "diverged" and blown["diverged_step"] >= 1
    kept = load_checkpoint(tmp_path / "with" / "blows_up" / "checkpoints" / "last.pt")
    assert kept["epoch"] == blown["epochs_run"] - 1  # the last finished epoch, before the blow-up
    assert all(torch.isfinite(v).all() for v in kept["model"].values())


def test_members_have_their_own_dropout_rate_and_masks(tmp_path):
    """Rates differ inside a group: the member without dropout draws no mask; the other draws
    its masks from its own stream, so each is its run alone (and dropout changes the run)."""
    cfgs = [make_config(*SMALL, "optimizer=adam", f"dropout={p}") for p in (0.0, 0.5)]
    assert group_key(cfgs[0]) == group_key(cfgs[1])
    train_group(cfgs, [tmp_path / "none", tmp_path / "half"])
    for name, cfg in zip(("none", "half"), cfgs):
        train(cfg, tmp_path / f"{name}-alone")
        torch.testing.assert_close(history(tmp_path / name), history(tmp_path / f"{name}-alone"), rtol=1e-4, atol=0)
    assert history(tmp_path / "half") != history(tmp_path / "none")
    assert json.loads((tmp_path / "half" / "metrics.json").read_text())["best_val_acc"] > 0.7  # it learns


SWEEP = ["-m", "optimizer=sgd,lbfgs", "seed=0,1", "epochs=3", "model.hidden=[16]", "hydra/launcher=vectorized"]


@pytest.mark.slow
def test_a_sweep_mixing_stacked_and_single_runs_writes_ordinary_run_folders(tmp_path):
    result = optlab("train", *SWEEP, "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "training 2 runs as one stacked model" in result.stdout  # sgd's seeds; lbfgs alone
    runs = sorted(p.parent for p in (tmp_path / "sweep").glob("**/metrics.json"))
    assert len(runs) == 4
    for run in runs:
        files = {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()}
        assert {".hydra/config.yaml", ".hydra/overrides.yaml", "train.log", "history.csv", "metrics.json",
                "checkpoints/init.pt", "checkpoints/best.pt", "checkpoints/last.pt"} <= files
        assert any(f.startswith("events.out.tfevents") for f in files)
        assert json.loads((run / "metrics.json").read_text())["status"] == "completed"
        assert "epoch 3 " in (run / "train.log").read_text()
    assert (tmp_path / "sweep" / "summary.csv").exists()

    again = optlab("train", *SWEEP, "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.count("skipped:") == 4  # finished: nothing retrained
    capped = optlab("train", *SWEEP[:2], "seed=0,1,2", *SWEEP[3:], "vectorize.max_members=2",
                    "hydra.sweep.dir=capped", cwd=tmp_path)
    assert capped.returncode == 0 and "training 2 runs as one stacked model" in capped.stdout
    assert len(list((tmp_path / "capped").glob("**/metrics.json"))) == 6  # sgd's third seed alone
    member = next(r for r in runs if "optimizer=sgd" in str(r))
    landscape = optlab("landscape", str(member), cwd=tmp_path)
    assert landscape.returncode == 0, landscape.stderr


def test_members_whose_names_read_alike_train_in_folders_of_their_own(tmp_path):
    from optlab.models import MLP

    for path in ("w/a/b.pt", "w/a_b.pt"):  # both read `_w_a_b.pt` once made safe
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        torch.save(MLP(64, 10, [16]).state_dict(), tmp_path / path)
    result = optlab("train", "-m", "init=pretrained", f"init.path={tmp_path}/w/a/b.pt,{tmp_path}/w/a_b.pt", "epochs=1",
                    "model.hidden=[16]", "hydra/launcher=vectorized", "hydra.sweep.dir=s", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "training 2 runs as one stacked model" in result.stdout
    runs = list((tmp_path / "s").glob("*/seed=0"))
    assert len(runs) == 2 and not any((run / ".previous").exists() for run in runs)
    assert [json.loads((run / "metrics.json").read_text())["status"] for run in runs] == ["completed"] * 2


def test_a_mistake_in_one_member_fails_that_run_alone(tmp_path):
    """torch refuses Nesterov without momentum only as the group is built: the group falls back
    to one run at a time, and only that run fails."""
    result = optlab("train", "-m", "optimizer=nesterov", "optimizer.momentum=0,0.9", "epochs=1",
                    "model.hidden=[16]", "hydra/launcher=vectorized", "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "each runs alone" in result.stdout
    last = result.stderr.strip().splitlines()[-1]
    assert "1 run of the sweep failed" in last and "optimizer.momentum=0/" in last
    statuses = {p.parent.parent.name.rpartition("momentum=")[2]: json.loads(p.read_text())["status"]
                for p in (tmp_path / "sweep").glob("*/*/metrics.json")}
    assert statuses == {"0.9": "completed", "0": "failed"}, statuses


@pytest.mark.slow
def test_ctrl_c_stops_the_group_resumably_and_the_same_command_finishes_it(tmp_path):
    sweep = ["-m", "optimizer.lr=0.05,0.1,0.2", "epochs=25", "model.hidden=[16]", "hydra/launcher=vectorized",
             "hydra.sweep.dir=sweep"]
    whole = optlab("train", *sweep[:-1], "hydra.sweep.dir=whole", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    process = subprocess.Popen([sys.executable, "-m", "optlab", "train", *sweep], cwd=tmp_path, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for_epoch(tmp_path / "sweep" / "*" / "*", 3, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    said, _, line = stderr.strip().splitlines()[-1].partition("; finish the sweep with: ")
    assert said.startswith("optlab train: interrupted after epoch ") and shlex.split(line) == ["optlab", "train", *sweep]
    runs = sorted(p.parent for p in (tmp_path / "sweep").glob("*/*/metrics.json"))
    records = [json.loads((run / "metrics.json").read_text()) for run in runs]
    assert len(runs) == 3 and {r["status"] for r in records} == {"interrupted"}
    assert len({r["epochs_run"] for r in records}) == 1 and records[0]["epochs_run"] < 25

    alone = optlab("train", f"resume={runs[0]}", cwd=tmp_path)  # one member, as any run
    assert alone.returncode == 0, alone.stderr
    again = paste(line, tmp_path)  # the other two, as a group; the first is finished
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("skipped:") == 1 and "training 2 runs as one stacked model (resumed)" in again.stdout
    for run in runs:
        finished = tmp_path / "whole" / run.relative_to(tmp_path / "sweep")
        assert json.loads((run / "metrics.json").read_text())["status"] == "completed"
        if run == runs[0]:  # went on alone: a run's own matmuls round in the last bits
            torch.testing.assert_close(history(run), history(finished), rtol=1e-4, atol=0)
        else:  # went on in its group: as if it had never stopped
            assert history(run) == history(finished)


APP = """
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig


@hydra.main(config_path=".", config_name="app", version_base="1.3")
def main(cfg):
    Path(HydraConfig.get().runtime.output_dir, "out.txt").write_text(f"x={cfg.x}")


main()
"""


@pytest.mark.parametrize("plugins", [["hydra/launcher=vectorized"], ["hydra/sweeper=optlab"],
                                     ["hydra/sweeper=optlab", "hydra/launcher=vectorized"]])
def test_another_hydra_apps_sweep_runs_as_with_hydras_own_plugins(plugins, tmp_path):
    """optlab's plugins are installed for every Hydra app: another app may pick them, and its
    jobs run as Hydra's basic sweeper and launcher run them."""
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "app.yaml").write_text("x: 0\n")

    def files(*chosen: str, folder: str) -> dict[str, str]:
        result = subprocess.run([sys.executable, "app.py", "-m", *chosen, "x=1,2", f"hydra.sweep.dir={folder}"],
                                cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
        return {str(p.relative_to(tmp_path / folder)): p.read_text() if p.name == "out.txt" else ""
                for p in (tmp_path / folder).rglob("*") if p.is_file()}

    basic = files(folder="basic")
    assert basic["0/out.txt"] == "x=1" and basic["1/out.txt"] == "x=2"
    assert files(*plugins, folder="chosen") == basic


@pytest.mark.cuda
@pytest.mark.parametrize("members", [1, 3])
def test_on_cuda_a_run_and_a_group_sync_with_the_host_per_epoch_not_per_step(members):
    """Four times the steps in an epoch, about the same host syncs: none is paid per step."""
    from optlab.training import data as dataset
    from optlab.training.callbacks import StopOnSignal
    from optlab.training.single import Single, resolve_device
    from optlab.training.stacked import Stacked

    def syncs(batch_size: int) -> int:
        cfgs = [make_config("device=cuda", "epochs=1", f"batch_size={batch_size}", "optimizer=adam",
                            "model.hidden=[64]", "diagnostics_every=1", f"seed={s}") for s in range(members)]
        device = resolve_device("cuda")
        data = dataset.load(cfgs[0].data, device)
        engine = Single(cfgs[0], data, device, torch.Generator()) if members == 1 else Stacked(cfgs, data, device)
        engine.train_epoch(StopOnSignal())  # first calls may sync once (allocations, lazy init)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                engine.train_epoch(StopOnSignal())
            finally:
                torch.cuda.set_sync_debug_mode(0)
        return sum("synchroniz" in str(w.message) for w in caught)

    more = syncs(16) - syncs(64)  # 68 steps against 17
    assert more <= 2, f"{more} more host syncs for 51 more steps"


@pytest.mark.cuda
def test_on_cuda_a_member_equals_its_run_alone(tmp_path):
    cfgs = [make_config(*SMALL, "device=cuda", "optimizer=adam", f"seed={s}", f"optimizer.lr={lr}")
            for s, lr in ((0, 0.001), (1, 0.003))]
    train_group(cfgs, [tmp_path / "member0", tmp_path / "member1"])
    for k, cfg in enumerate(cfgs):
        train(cfg, tmp_path / f"alone{k}")
        torch.testing.assert_close(history(tmp_path / f"member{k}"), history(tmp_path / f"alone{k}"), rtol=1e-3, atol=0)
