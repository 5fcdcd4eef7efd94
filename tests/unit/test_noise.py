"""The gradient noise scale by hand, a run unchanged by measuring it, and when a run reaches a
target."""

from __future__ import annotations

import csv
import json
import math
from types import SimpleNamespace

import pytest
import torch
from helpers import optlab
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from optlab import noise


class Split:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def get(self, index):
        return self.x[index], self.y[index]


def least_squares(x, y):
    """A dataset of (x, y) with the loss (out − y)² per example."""
    return SimpleNamespace(loss=torch.nn.functional.mse_loss, train=Split(x, y))


def test_b_simple_from_per_example_gradients_by_hand():
    """y = w·x + b at w = 1, b = 0 on x = 1, 2, 3, 4 with targets 0, loss (out − y)²: example i's
    gradient is (2x², 2x) = (2, 2), (8, 4), (18, 6), (32, 8). Their mean is (15, 5), |ḡ|² = 250,
    Σ|gᵢ|² = 1536, so tr(Σ) = (1536 − 4·250)/3 = 178.67 and |G|² = 250 − 178.67/4 = 205.33."""
    model = torch.nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(0.0)
    data = least_squares(torch.tensor([[1.0], [2.0], [3.0], [4.0]]), torch.zeros(4, 1))
    measured = noise.measure(model, data, samples=4, chunk=3)  # two chunks: 3 + 1
    assert measured["trace_cov"] == pytest.approx(536 / 3)
    assert measured["grad_sq"] == pytest.approx(250 - 536 / 12)
    assert measured["b_simple"] == pytest.approx((536 / 3) / (250 - 536 / 12))


def test_b_simple_is_nan_where_the_mean_gradient_cannot_be_told_from_noise():
    """At w = 0, x = 1 with targets +1 and −1 the gradients −2(y)x are −2 and +2: mean 0, so
    |G|² estimates 0 − tr(Σ)/n = −4 < 0, and B_simple is NaN, not a huge or negative number."""
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    measured = noise.measure(model, least_squares(torch.ones(2, 1), torch.tensor([[1.0], [-1.0]])), samples=2)
    assert measured["trace_cov"] == pytest.approx(8) and measured["grad_sq"] == pytest.approx(-4)
    assert math.isnan(measured["b_simple"])


def history(run) -> list[dict]:
    return list(csv.DictReader((run / "history.csv").open()))


def test_measuring_the_noise_leaves_the_run_as_it_is_and_reports_it(tmp_path):
    """Dropout masks and batch-norm statistics included: the measurement runs in eval mode."""
    common = ["epochs=3", "model.hidden=[32]", "dropout=0.3", "batchnorm=true", "device=cpu"]
    on = optlab("train", *common, "noise.every=1", "noise.final=true", "noise.samples=64",
                f"hydra.run.dir={tmp_path / 'on'}", cwd=tmp_path)
    off = optlab("train", *common, f"hydra.run.dir={tmp_path / 'off'}", cwd=tmp_path)
    assert on.returncode == 0 and off.returncode == 0, on.stderr + off.stderr
    columns = ("train_loss", "val_loss", "val_acc", "lr")
    assert [[r[c] for c in columns] for r in history(tmp_path / "on")] == \
           [[r[c] for c in columns] for r in history(tmp_path / "off")]
    metrics = json.loads((tmp_path / "on" / "metrics.json").read_text())
    assert metrics["noise_b_simple"] == pytest.approx(metrics["noise_trace_cov"] / metrics["noise_grad_sq"])
    assert "noise_b_simple" not in json.loads((tmp_path / "off" / "metrics.json").read_text())
    scalars = EventAccumulator(str(tmp_path / "on")).Reload().Tags()["scalars"]
    assert {"noise/b_simple", "noise/grad_sq", "noise/trace_cov"} <= set(scalars)
    assert len(EventAccumulator(str(tmp_path / "on")).Reload().Scalars("noise/b_simple")) == 3


@pytest.mark.slow
def test_a_run_records_where_it_first_reached_its_target_and_can_stop_there(tmp_path):
    common = ["epochs=8", "model.hidden=[32]", "device=cpu", "target.val_acc=0.9"]
    full = optlab("train", *common, f"hydra.run.dir={tmp_path / 'full'}", cwd=tmp_path)
    stop = optlab("train", *common, "target.stop=true", f"hydra.run.dir={tmp_path / 'stop'}", cwd=tmp_path)
    assert full.returncode == 0 and stop.returncode == 0, full.stderr + stop.stderr
    rows = history(tmp_path / "full")
    first = next(r for r in rows if float(r["val_acc"]) >= 0.9)
    metrics = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert metrics["epoch_to_target"] == int(first["epoch"]) < 8
    assert metrics["steps_to_target"] == int(first["step"]) and metrics["examples_to_target"] == int(first["examples"])
    assert metrics["time_to_target"] == pytest.approx(float(first["elapsed_s"]))
    stopped = json.loads((tmp_path / "stop" / "metrics.json").read_text())
    assert stopped["epochs_run"] == int(first["epoch"]) and stopped["status"] == "completed"
    assert stopped["steps_to_target"] == metrics["steps_to_target"]

    never = optlab("train", "epochs=1", "model.hidden=[8]", "device=cpu", "target.val_loss=0.0001",
                   f"hydra.run.dir={tmp_path / 'never'}", cwd=tmp_path)
    assert never.returncode == 0, never.stderr
    assert json.loads((tmp_path / "never" / "metrics.json").read_text())["steps_to_target"] is None


def test_a_target_met_as_early_stopping_ends_the_run_counts_and_last_pt_keeps_it(tmp_path):
    """The target's record is part of the state last.pt keeps, taken after every callback saw
    the epoch: a resume goes on with it, and early stopping ending the run does not hide it."""
    import torch

    from helpers import make_config
    from optlab.jobs.train import train

    metrics = train(make_config("epochs=1", "model.hidden=[8]", "target.val_acc=0.05"), tmp_path / "one")
    saved = torch.load(tmp_path / "one" / "checkpoints" / "last.pt", weights_only=True)
    assert metrics["epoch_to_target"] == saved["loop"]["reached"]["epoch_to_target"] == 1  # the epoch's own state
    cfg = make_config("epochs=3", "model.hidden=[8]", "target.val_acc=0.05", "early_stopping=val_loss",
                      "early_stopping.patience=0", "early_stopping.min_delta=10")
    metrics = train(cfg, tmp_path / "run")
    assert metrics["epoch_to_target"] == 1 and metrics["stopped_epoch"] == 2  # early stopping ended it
