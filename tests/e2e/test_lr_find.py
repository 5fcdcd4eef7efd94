"""The learning-rate range test: its smoothing and stop by hand, its suggestion against log(lr),
its agreement with the curvature on a quadratic, and `optimizer.lr=find` training exactly as the
suggested rate does."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from helpers import call, make_config, optlab
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from optlab import curvature, models
from optlab.config.checks import validate
from optlab.errors import UsageError
from optlab.training import data as dataset
from optlab.training import rng
from optlab.training.range_test import _sweep, range_test, suggest

BETA = 0.98


class FakeEngine:
    """One batch an epoch; the loss at each step is `loss(lr)` at the rate the test set."""

    def __init__(self, loss):
        self.loss = loss
        self.optimizer = type("Optimizer", (), {"param_groups": [{"lr": None}]})()
        self.model = torch.nn.Identity()

    def batches(self):
        return [(None, None)]

    def train_step(self, x, y):
        value = torch.tensor(self.loss(self.optimizer.param_groups[0]["lr"]))
        return None, value, value


def test_the_bias_corrected_average_of_a_constant_loss_is_that_loss_and_never_blows_up():
    test = OmegaConf.create({"min_lr": 1e-4, "max_lr": 1.0, "steps": 20, "stop_factor": 4.0, "beta": BETA})
    result = _sweep(FakeEngine(lambda lr: 1.5), test)
    assert result.blowup_lr is None and len(result.lrs) == 20
    assert result.smoothed == pytest.approx([1.5] * 20, rel=1e-12)
    assert result.lrs[0] == pytest.approx(1e-4) and result.lrs[-1] == pytest.approx(1.0)
    assert result.lrs[1] / result.lrs[0] == pytest.approx(10 ** (4 / 19))  # exponential steps


def test_the_test_stops_at_the_step_whose_smoothed_loss_passes_four_times_the_best():
    """Loss 1 for 10 steps, then 100. By hand: the average after 10 steps is 1 − β¹⁰; after the
    11th, β(1 − β¹⁰) + (1 − β)·100, which bias-corrected by 1 − β¹¹ is 10.93 > 4 × 1: stop there."""
    test = OmegaConf.create({"min_lr": 1e-4, "max_lr": 1.0, "steps": 30, "stop_factor": 4.0, "beta": BETA})
    lrs = 1e-4 * 1e4 ** (np.arange(30) / 29)
    result = _sweep(FakeEngine(lambda lr: 1.0 if lr < lrs[10] * 0.999 else 100.0), test)
    expected = (BETA * (1 - BETA**10) + (1 - BETA) * 100) / (1 - BETA**11)
    assert expected == pytest.approx(10.93, abs=0.01)
    assert len(result.lrs) == 11 and result.smoothed[-1] == pytest.approx(expected)
    assert result.blowup_lr == pytest.approx(lrs[10])


def test_the_suggestion_is_the_steepest_descent_against_log_lr_not_against_lr():
    """A loss that falls fastest per decade at lr = 1e-2 (a tanh in log10 lr); against lr itself
    the steepest point is elsewhere (Lightning #21141)."""
    lrs = list(10 ** np.linspace(-5, 0, 101))
    smoothed = [2 - math.tanh(math.log10(lr) + 2) for lr in lrs]
    assert suggest(lrs, smoothed, None) == pytest.approx(1e-2)
    against_lr = lrs[int(np.argmin(np.gradient(smoothed, lrs)))]
    assert not 0.5e-2 < against_lr < 2e-2


def test_on_a_quadratic_the_blow_up_and_the_suggestion_agree_with_lambda_max():
    """Full-batch gradient descent on least squares (model=linear, data=regression) is stable for
    lr < 2/λ_max and diverges above: the test must not blow up below 2/λ_max and must blow up
    soon above it, and its suggestion must be a stable rate."""
    cfg = make_config("data=regression", "model=linear", "batch_size=full", "optimizer=sgd", "device=cpu",
                      "lr_find.min_lr=0.01", "lr_find.steps=300")
    device = torch.device("cpu")
    data = dataset.load(cfg.data, device)
    result = range_test(cfg, data, device)
    rng.seed(cfg.seed)
    model = models.build(cfg, data)  # the Hessian of least squares is the same at any weights
    edge = 2 / curvature.lambda_max(model, curvature.subset_loss(model, data, len(data.train)), iters=100)
    assert result.suggested_lr < edge < result.blowup_lr < 3 * edge
    assert all(math.isfinite(s) for s in result.smoothed[:-1])


def test_lr_find_writes_its_files_curves_and_the_command_to_train(tmp_path):
    run = tmp_path / "found"
    result = optlab("lr-find", "optimizer=adam", "model.hidden=[16]", "lr_find.steps=40", "device=cpu",
                    f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    record = json.loads((run / "lr_find.json").read_text())
    rows = list(csv.DictReader((run / "lr_find.csv").open()))
    assert len(rows) == record["steps_run"] <= 40
    assert record["suggested_lr"] in [float(r["lr"]) for r in rows]
    assert (run / "lr_find.png").stat().st_size > 0 and (run / ".hydra" / "config.yaml").exists()
    events = EventAccumulator(str(run)).Reload()
    assert {"lr_find/lr", "lr_find/loss", "lr_find/smoothed_loss"} <= set(events.Tags()["scalars"])
    assert f"optlab train optimizer=adam model.hidden='[16]' device=cpu optimizer.lr={record['suggested_lr']!r}" \
        in result.stdout


def test_training_with_lr_find_equals_training_at_the_suggested_rate(tmp_path):
    """The test trains a copy: the run starts from the untouched model, optimizer and streams."""
    common = ["optimizer=momentum", "model.hidden=[16]", "epochs=2", "lr_find.steps=40", "device=cpu"]
    found = optlab("train", *common, "optimizer.lr=find", f"hydra.run.dir={tmp_path / 'find'}", cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    lr = json.loads((tmp_path / "find" / "lr_find.json").read_text())["suggested_lr"]
    plain = optlab("train", *common, f"optimizer.lr={lr!r}", f"hydra.run.dir={tmp_path / 'plain'}", cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    histories = [list(csv.DictReader((tmp_path / name / "history.csv").open())) for name in ("find", "plain")]
    columns = ("train_loss", "val_loss", "val_acc", "lr")
    assert [[r[c] for c in columns] for r in histories[0]] == [[r[c] for c in columns] for r in histories[1]]
    assert float(histories[0][0]["lr"]) == lr


def test_a_range_whose_ratio_overflows_is_refused_for_that_not_blamed_on_min_lr(capfd, tmp_path):
    with pytest.raises(UsageError, match=r"'lr_find.max_lr': 1e\+300 .*at most 1.8e\+08 .*ratio max_lr / min_lr overflows"):
        validate(make_config("lr_find.min_lr=1e-300", "lr_find.max_lr=1e300"))
    validate(make_config("lr_find.min_lr=1e-300", "lr_find.max_lr=1e8"))  # wide, but every rate is a number
    code, _, err = call(capfd, "lr-find", "lr_find.min_lr=1e-300", "lr_find.max_lr=1e300",
                        f"hydra.run.dir={tmp_path / 'lr'}")
    assert code == 2 and err.count("\n") == 1 and "overflows" in err and not (tmp_path / "lr").exists()


def test_a_refused_lr_find_leaves_no_folder_and_puts_an_earlier_one_back(capfd, tmp_path):
    np.savez(tmp_path / "nan.npz", X=np.full((40, 2), np.nan), y=np.arange(40) % 2)
    small = ["model.hidden=[8]", "lr_find.steps=10"]
    earlier = tmp_path / "earlier"
    assert call(capfd, "lr-find", *small, f"hydra.run.dir={earlier}")[0] == 0
    files = {p: p.read_bytes() for p in earlier.rglob("*") if p.is_file()}
    for i, mistake in enumerate([["data=npz", f"data.path={tmp_path / 'nowhere.npz'}"],  # a data file that is not there
                                 ["data=npz", f"data.path={tmp_path / 'nan.npz'}"],  # data that is not numbers
                                 ["optimizer=lbfgs"],  # an optimizer the rate does not drive
                                 ["lr_find.min_lr=100", "lr_find.max_lr=1000"]]):  # a loss that blows up at once
        for folder in (tmp_path / f"new{i}", earlier):
            code, out, err = call(capfd, "lr-find", *small, *mistake, f"hydra.run.dir={folder}")
            assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
            assert not (tmp_path / f"new{i}").exists(), mistake  # nothing left behind
        assert {p: p.read_bytes() for p in earlier.rglob("*") if p.is_file()} == files, mistake  # back as it was
        assert "taken back" in out.split("moved to")[1], out  # the move is not left claimed
