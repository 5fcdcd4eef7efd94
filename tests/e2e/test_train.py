"""A real run end to end: what it writes, what it logs, and that its numbers are right."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import ROOT, make_config, optlab
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from optlab.jobs.train import train
from optlab.models import MLP
from optlab.training.data import load

TRAIN_SIZE = 1077  # digits: 1797 images, 60/20/20 split
STEPS_PER_EPOCH = math.ceil(TRAIN_SIZE / 64)


def read_events(run_dir):
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: events.Scalars(tag) for tag in events.Tags()["scalars"]}


def test_run_writes_tensorboard_curves(trained_run):
    scalars = read_events(trained_run)
    for tag in ("step/loss", "step/lr"):
        assert [e.step for e in scalars[tag]] == list(range(1, 2 * STEPS_PER_EPOCH + 1)), tag
    for tag in ("step/grad_norm", "step/update_ratio"):  # every diagnostics_every (16) steps from the first
        assert [e.step for e in scalars[tag]] == list(range(1, 2 * STEPS_PER_EPOCH + 1, 16)), tag
    for tag in ("train/loss", "train/acc", "val/loss", "val/acc"):
        assert [e.step for e in scalars[tag]] == [1, 2], tag
    assert all(e.value == pytest.approx(0.1) for e in scalars["step/lr"])
    assert all(e.value > 0 for e in scalars["step/grad_norm"])
    assert all(0 < e.value < 1 for e in scalars["step/update_ratio"])


def test_update_ratio_is_the_relative_size_of_each_step(tmp_path):
    """One full-batch SGD step: ‖Δθ‖/‖θ‖ = lr·‖∇L‖/‖θ₀‖, from the checkpoint and the events."""
    cfg = make_config("model=linear", "batch_size=full", "epochs=1", "optimizer.lr=0.5")
    train(cfg, tmp_path)
    torch.manual_seed(cfg.seed)
    theta0 = torch.cat([p.detach().flatten() for p in MLP(64, 10).parameters()])
    scalars = read_events(tmp_path)
    expected = 0.5 * scalars["step/grad_norm"][0].value / theta0.norm().item()
    assert scalars["step/update_ratio"][0].value == pytest.approx(expected, rel=1e-5)


def test_diagnostics_off_skips_the_per_step_norms(tmp_path):
    train(make_config("diagnostics=false", "epochs=1", "batch_size=full"), tmp_path)
    tags = set(read_events(tmp_path))
    assert {"step/loss", "step/lr"} <= tags and not {"step/grad_norm", "step/update_ratio"} & tags


def test_run_writes_metrics_history_and_checkpoints(trained_run):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert metrics["epochs_run"] == 2 and metrics["steps"] == 2 * STEPS_PER_EPOCH
    assert metrics["num_params"] == 64 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10
    for key in ("test_acc", "test_loss", "best_val_acc", "best_val_loss", "best_epoch",
                "wall_time_s", "train_samples_per_s"):
        assert key in metrics, key
    assert 0.5 < metrics["test_acc"] <= 1

    rows = list(csv.DictReader((trained_run / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert list(rows[0]) == [
        "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "step", "examples", "elapsed_s"
    ]
    assert [int(r["step"]) for r in rows] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
    assert [int(r["examples"]) for r in rows] == [1077, 2 * 1077]
    assert metrics["best_val_acc"] == max(float(r["val_acc"]) for r in rows)
    assert metrics["best_val_loss"] == min(float(r["val_loss"]) for r in rows)

    scalars = read_events(trained_run)
    assert [e.value for e in scalars["val/acc"]] == pytest.approx([float(r["val_acc"]) for r in rows])

    for name in ("best.pt", "last.pt"):
        state = torch.load(trained_run / "checkpoints" / name, weights_only=True)
        assert {"model", "optimizer", "scheduler", "epoch", "step", "rng", "config"} <= set(state)
    last = torch.load(trained_run / "checkpoints" / "last.pt", weights_only=True)
    assert last["epoch"] == 2 and last["step"] == 2 * STEPS_PER_EPOCH
    assert (trained_run / ".hydra" / "config.yaml").exists()
    assert not list(trained_run.rglob("*.tmp"))


def test_console_summary_names_the_run_and_tensorboard(tmp_path):
    result = optlab("train", "epochs=1", "batch_size=full", "hydra.run.dir=out/run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "epoch 1 " in result.stdout  # plain lines when stdout is not a terminal
    assert "test acc" in result.stdout
    assert "tensorboard --logdir out/run" in result.stdout


def test_default_run_reaches_95_percent(tmp_path):
    """The README's `optlab train`, run in-process: the default config must learn digits."""
    metrics = train(make_config(), tmp_path)
    assert metrics["test_acc"] >= 0.95


def test_same_config_and_seed_give_identical_metrics(tmp_path):
    cfg = make_config("epochs=2", "seed=3")
    first, second = train(cfg, tmp_path / "a"), train(cfg, tmp_path / "b")
    timing = {"wall_time_s", "train_time_s", "epoch_time_s", "train_samples_per_s"}
    assert {k: v for k, v in first.items() if k not in timing} == {
        k: v for k, v in second.items() if k not in timing
    }
    other = train(make_config("epochs=2", "seed=4"), tmp_path / "c")
    assert other["final_train_loss"] != first["final_train_loss"]


def test_full_batch_is_one_exact_gradient_descent_step_per_epoch(tmp_path):
    """batch_size=full: the logged loss and the new weights match a hand-made GD step."""
    cfg = make_config("model=linear", "batch_size=full", "epochs=1", "optimizer.lr=0.5")
    metrics = train(cfg, tmp_path)
    assert metrics["steps"] == 1

    data = load(cfg.data, torch.device("cpu"))
    torch.manual_seed(cfg.seed)
    model = MLP(data.input_shape, data.num_outputs)
    logits = model(data.train.x)
    loss = F.cross_entropy(logits, data.train.y)
    loss.backward()
    expected = {k: p - 0.5 * p.grad for k, p in model.named_parameters()}

    last = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["model"]
    for name, value in expected.items():
        torch.testing.assert_close(last[name], value)
    step_loss = read_events(tmp_path)["step/loss"][0].value
    assert step_loss == pytest.approx(loss.item(), rel=1e-6)
    grad_norm = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert read_events(tmp_path)["step/grad_norm"][0].value == pytest.approx(grad_norm.item(), rel=1e-5)
    accuracy = (logits.argmax(1) == data.train.y).float().mean().item()
    assert metrics["final_train_acc"] == pytest.approx(accuracy)


def test_batch_size_one_is_stochastic_gradient_descent(tmp_path):
    metrics = train(make_config("model=linear", "batch_size=1", "epochs=1", "optimizer.lr=0.01"), tmp_path)
    assert metrics["steps"] == TRAIN_SIZE


def test_model_overrides_change_the_network(tmp_path):
    metrics = train(
        make_config("model.hidden=[32,16]", "model.activation=tanh", "epochs=1", "optimizer=adam",
                    "batch_size=64"),
        tmp_path,
    )
    assert metrics["num_params"] == 64 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert state["config"]["model"]["activation"] == "tanh"
    assert "exp_avg" in state["optimizer"]["state"][0]  # Adam's moment estimates


def test_the_closing_line_describes_one_epoch():
    """Epoch 1 has the lowest validation loss and 0.186 accuracy, epoch 2 the highest accuracy:
    the line names the tested epoch, why it was chosen, and that epoch's own accuracy."""
    from optlab.training.lifecycle import closing_line

    history = [{"epoch": 1, "val_loss": 11.1, "val_acc": 0.186}, {"epoch": 2, "val_loss": 74.7, "val_acc": 0.9583}]
    metrics = {"status": "completed", "test_acc": 0.1889, "best_val_acc": 0.9583, "epochs_run": 2,
               "wall_time_s": 1.0, "train_samples_per_s": 2154.0, "hint": None}
    line = closing_line(metrics, history, 1, "lowest val_loss", "classification")
    assert "best epoch 1 (lowest val_loss): val acc 0.1860, test acc 0.1889" in line and "0.9583" not in line
    assert "last epoch 2: val acc 0.9583" in closing_line(metrics, history, 2, None, "classification")
    assert "val R² 0.1860" in closing_line(metrics, history, 1, "lowest val_loss", "regression")
    assert "no epoch finished" in closing_line({**metrics, "status": "diverged"}, [], 0, None, "classification")


def test_a_run_no_better_than_chance_says_what_to_try(tmp_path, caplog):
    """Rprop at its default 0.1 on full batches: its best epoch by validation loss is the first,
    at chance (the weights overshoot, then fit with huge validation losses). The closing line
    shows that epoch's numbers, and the record says why: the rate."""
    import logging

    caplog.set_level(logging.INFO, logger="optlab")
    metrics = train(make_config("optimizer=rprop", "batch_size=full", "epochs=3"), tmp_path)
    assert metrics["best_epoch"] == 1 and metrics["test_acc"] < 0.19 and metrics["best_val_acc"] > 0.5
    rows = list(csv.DictReader((tmp_path / "history.csv").open()))
    assert f"best epoch 1 (lowest val_loss): val acc {float(rows[0]['val_acc']):.4f}, test acc" in caplog.text
    assert f"best val acc {metrics['best_val_acc']:.4f}" not in caplog.text
    assert metrics["hint"].startswith("no better than chance (0.1")
    assert "lr 0.1 is likely too large at batch full: try optimizer.lr=0.01" in metrics["hint"]
    assert "optimizer.lr=find" not in metrics["hint"]  # the range test does not suit rprop
    assert f"hint: {metrics['hint']}" in caplog.text
    assert json.loads((tmp_path / "metrics.json").read_text())["hint"] == metrics["hint"]


@pytest.mark.parametrize("overrides, record, classes, expected", [
    (["batch_size=1"], {"status": "completed", "test_acc": 0.156}, 10,
     "lr 0.1 is likely too large at batch 1: try optimizer.lr=0.01 or optimizer.lr=find"),
    (["batch_size=1"], {"status": "diverged", "test_acc": 0.9}, 10, "diverged: lr 0.1"),
    (["batch_size=1"], {"status": "completed", "test_acc": 0.5}, 10, None),  # learned
    ([], {"status": "completed", "test_acc": 0.54}, 2, "no better than chance (0.5"),
    ([], {"status": "completed", "test_acc": 0.56}, 2, None),
    ([], {"status": "completed", "test_acc": -3.0}, None, None),  # regression: R² has no chance level
    ([], {"status": "interrupted", "test_acc": 0.1}, 10, None),  # not over: nothing to judge
    ([], {"status": "completed", "test_acc": 0.1, "final_train_loss": 2.29}, 10,  # the first loss 2.3: hardly moved
     "the training loss barely fell (2.3 → 2.29): lr 0.1 may be too small at batch 64 (or too large): "
     "try optimizer.lr=1, 0.01 or optimizer.lr=find"),
    ([], {"status": "completed", "test_acc": 0.1, "final_train_loss": 9.0}, 10, "lr 0.1 is likely too large"),
    (["surface=saddle"], {"status": "diverged", "final_loss": -math.inf}, None, "this surface falls without end"),
])
def test_the_hint_comes_from_the_record(overrides, record, classes, expected):
    from optlab.training.record import lesson

    hint = lesson(make_config(*overrides), record, classes, first_loss=2.3)
    assert hint == expected if expected is None else expected in hint


def test_the_readme_rprop_example_reaches_what_it_says(tmp_path):
    """The README's Examples line for Rprop, run as it is printed, ends at the accuracy it states."""

    readme = (ROOT / "README.md").read_text()
    line = next(line for line in readme.splitlines() if line.startswith("optlab train optimizer=rprop"))
    command, claim = line.split("#")
    metrics = train(make_config(*command.split()[2:]), tmp_path)
    assert f"{metrics['test_acc']:.3f}" == claim.rsplit(": ", 1)[-1].strip() and metrics["hint"] is None
