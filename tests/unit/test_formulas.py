"""What a run logs, against the formula it claims, computed here by hand from the run's own files
(init.pt, last.pt, history.csv, the event file): the l2 penalty, three annealing schedules, the
generalization gap, `optlab landscape` against `curvature.final`, and the HParams record."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from helpers import make_config
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata

from optlab.cli.main import main as optlab_main
from optlab.jobs.surface import run as surface_run
from optlab.jobs.train import train
from optlab.models import MLP
from optlab.training.data import load

CPU = torch.device("cpu")


def events(run_dir) -> EventAccumulator:
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return accumulator


def scalars(run_dir, tag) -> list[float]:
    return [e.value for e in events(run_dir).Scalars(tag)]


def history(run_dir) -> list[dict]:
    return list(csv.DictReader((run_dir / "history.csv").open()))


# --- 4. the l2 penalty ------------------------------------------------------------------------

@pytest.mark.parametrize("exclude", ["default", "nothing"])
def test_logged_l2_penalty_is_half_l2_times_the_squared_norm_of_the_decayed_weights(exclude, tmp_path):
    """step/l2_penalty at step 1 = ½·l2·‖θ‖² of the initial weights (checkpoints/init.pt): by
    default the Linear weights only, no bias and no batch-norm parameter; with
    weight_decay_exclude=[] every parameter (running statistics are buffers, never decayed)."""
    extra = ["weight_decay_exclude=[]"] if exclude == "nothing" else []
    l2 = 0.1
    train(make_config(f"l2={l2}", "model.hidden=[32]", "batchnorm=true", "batch_size=full", "epochs=1",
                      *extra), tmp_path)
    init = torch.load(tmp_path / "checkpoints" / "init.pt", weights_only=True)
    weights = ["fc1.weight", "head.weight"]
    others = ["fc1.bias", "bn1.weight", "bn1.bias", "head.bias"]
    buffers = ["bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked"]
    assert set(weights + others + buffers) == set(init)
    decayed = weights + (others if exclude == "nothing" else [])
    expected = 0.5 * l2 * sum(init[name].double().pow(2).sum().item() for name in decayed)
    every = 0.5 * l2 * sum(init[name].double().pow(2).sum().item() for name in weights + others)
    logged = scalars(tmp_path, "step/l2_penalty")
    assert len(logged) == 1
    # logged as (loss + penalty) − loss in float32: ~3e-7 of the penalty is rounding
    assert logged[0] == pytest.approx(expected, rel=1e-5)
    if exclude == "default":  # the 32 batch-norm scales alone (init 1) would add ½·l2·32 = 1.6
        assert abs(every - expected) > 1.0


# --- 5. learning-rate schedules against their closed forms -------------------------------------

STEPS = math.ceil(1077 / 256)  # digits' 1077 training examples in batches of 256: 5 steps an epoch


def schedule_run(tmp_path, *overrides, epochs):
    train(make_config("model=linear", "batch_size=256", f"epochs={epochs}", *overrides), tmp_path)
    per_epoch = [float(r["lr"]) for r in history(tmp_path)]  # the lr of each epoch's last step
    per_step = scalars(tmp_path, "step/lr")  # the lr each step used (float32 in TensorBoard)
    assert len(per_epoch) == epochs and len(per_step) == epochs * STEPS
    return per_epoch, per_step


def test_cosine_schedule_follows_its_closed_form(tmp_path):
    """η_t = η_min + (η₀ − η_min)(1 + cos(πt/T))/2 with T = epochs, t = epochs finished."""
    lr0, eta_min, T = 0.1, 0.01, 5
    per_epoch, per_step = schedule_run(tmp_path, "scheduler=cosine", f"scheduler.eta_min={eta_min}",
                                       f"optimizer.lr={lr0}", epochs=T)
    expected = [eta_min + (lr0 - eta_min) * (1 + math.cos(math.pi * t / T)) / 2 for t in range(T)]
    assert per_epoch == pytest.approx(expected, rel=1e-12)
    assert per_step == pytest.approx([lr for lr in expected for _ in range(STEPS)], rel=1e-6)


def test_multistep_schedule_multiplies_by_gamma_per_milestone_passed(tmp_path):
    """lr = lr₀·γ^(milestones ≤ t), t = epochs finished: 0.1, 0.1, 0.01, 0.001 for [2, 3]."""
    lr0, gamma, milestones = 0.1, 0.1, [2, 3]
    per_epoch, per_step = schedule_run(tmp_path, "scheduler=multistep", "scheduler.milestones=[2,3]",
                                       f"scheduler.gamma={gamma}", epochs=4)
    expected = [lr0 * gamma ** sum(m <= t for m in milestones) for t in range(4)]
    assert per_epoch == pytest.approx(expected, rel=1e-12)
    assert per_step == pytest.approx([lr for lr in expected for _ in range(STEPS)], rel=1e-6)


def test_onecycle_schedule_follows_torchs_two_cosine_phases(tmp_path):
    """OneCycleLR (three_phase=False, cos): from max_lr/25 up to max_lr over pct_start·N − 1 steps,
    then down to max_lr/25/1e4 at step N − 1; each half is end + (start − end)(1 + cos πp)/2."""
    max_lr, pct, epochs = 0.2, 0.3, 3
    per_epoch, per_step = schedule_run(tmp_path, "scheduler=onecycle", f"scheduler.max_lr={max_lr}",
                                       f"scheduler.pct_start={pct}", epochs=epochs)
    total = epochs * STEPS  # 15: the peak falls between steps (pct·N − 1 = 3.5)
    initial, final = max_lr / 25, max_lr / 25 / 1e4
    peak = pct * total - 1

    def lr(t):
        if t <= peak:
            start, end, p = initial, max_lr, t / peak
        else:
            start, end, p = max_lr, final, (t - peak) / (total - 1 - peak)
        return end + (start - end) * (1 + math.cos(math.pi * p)) / 2

    assert per_step == pytest.approx([lr(t) for t in range(total)], rel=1e-6)
    assert per_epoch == pytest.approx([lr(STEPS * e - 1) for e in range(1, epochs + 1)], rel=1e-12)
    assert per_step[0] == pytest.approx(0.008) and per_step[-1] == pytest.approx(8e-7)


# --- 6. the generalization gap ----------------------------------------------------------------

def test_generalization_gap_is_final_weights_train_acc_in_eval_mode_minus_final_val_acc(tmp_path):
    """With dropout 0.5 the running training accuracy (final_train_acc, in train mode over a
    moving model) is far from the final weights' accuracy in eval mode; the best epoch (1) is not
    the last (4), so the final weights are last.pt's, not best.pt's."""
    cfg = make_config("model.hidden=[32]", "dropout=0.5", "epochs=4", "optimizer.lr=2.0")
    metrics = train(cfg, tmp_path)
    data = load(cfg.data, CPU)
    model = MLP(data.input_shape, data.num_outputs, hidden=[32], dropout=0.5)
    model.load_state_dict(torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["model"])
    model.eval()
    with torch.no_grad():
        train_acc = (model(data.train.x).argmax(1) == data.train.y).float().mean().item()
        val_acc = (model(data.val.x).argmax(1) == data.val.y).float().mean().item()
    assert metrics["best_epoch"] < metrics["epochs_run"] == 4
    assert val_acc == pytest.approx(metrics["final_val_acc"], abs=1e-7)
    assert val_acc == pytest.approx(float(history(tmp_path)[-1]["val_acc"]), abs=1e-7)
    assert metrics["generalization_gap"] == pytest.approx(train_acc - val_acc, abs=1e-7)
    # not the running accuracy: measured 0.62 (train mode, during epoch 4) against 0.88
    assert abs(metrics["final_train_acc"] - train_acc) > 0.1


def test_generalization_gap_of_a_diverged_run_uses_the_weights_of_its_last_epoch(tmp_path):
    """Diverged at step 2: last.pt and final_val_acc are epoch 1's weights; the gap must be too."""
    cfg = make_config("model=linear", "batch_size=full", "epochs=3", "optimizer.lr=1e6")
    metrics = train(cfg, tmp_path)
    assert metrics["status"] == "diverged" and metrics["epochs_run"] == 2
    data = load(cfg.data, CPU)
    model = MLP(data.input_shape, data.num_outputs)
    model.load_state_dict(torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["model"])
    with torch.no_grad():
        train_acc = (model(data.train.x).argmax(1) == data.train.y).float().mean().item()
        val_acc = (model(data.val.x).argmax(1) == data.val.y).float().mean().item()
    assert val_acc == pytest.approx(metrics["final_val_acc"], abs=1e-7)
    assert metrics["generalization_gap"] == pytest.approx(train_acc - val_acc, abs=1e-7)


# --- 7. optlab landscape against curvature.final ----------------------------------------------

CHEAP_CURVATURE = ["curvature.samples=128", "curvature.iters=20", "curvature.probes=4"]


def landscape_twice(run_dir, *overrides) -> tuple[dict, dict, dict]:
    """(metrics, curvature.json as training wrote it, as `optlab landscape RUN` rewrote it)."""
    overrides = (*overrides, "curvature.final=true", *CHEAP_CURVATURE)
    metrics = train(make_config(*overrides), run_dir)
    during = json.loads((run_dir / "curvature.json").read_text())
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(make_config(*overrides)))
    assert optlab_main(["landscape", str(run_dir)]) == 0
    return metrics, during, json.loads((run_dir / "curvature.json").read_text())


def test_optlab_landscape_reproduces_the_final_curvature_of_training_exactly(tmp_path):
    """Same weights (the best epoch, 2, not the last), same subset, same random vectors, dropout
    off in both: every number is identical, the exact spectrum and both loss slices included."""
    metrics, during, after = landscape_twice(tmp_path, "model.hidden=[8]", "dropout=0.2",
                                             "epochs=3", "optimizer.lr=2.0", "seed=1")
    assert metrics["best_epoch"] < metrics["epochs_run"]
    assert {"lambda_max", "trace", "sharpness", "eigenvalues", "random_direction", "interpolation"} <= set(during)
    assert after == during
    for key in ("lambda_max", "trace", "sharpness", "condition_number"):
        assert metrics[key] == during[key], key


@pytest.mark.parametrize("restore_best", ["true", "false"])
def test_optlab_landscape_agrees_with_training_under_early_stopping(tmp_path, restore_best):
    """Early stopping's verdict (min_delta respected) is the checkpoint's: best.pt holds the
    epoch it restores and tests; without restore_best both measure the last epoch."""
    metrics, during, after = landscape_twice(
        tmp_path, "model.hidden=[8]", "epochs=4", "optimizer.lr=1.0", "early_stopping=val_loss",
        "early_stopping.min_delta=0.1", "early_stopping.patience=10", "curvature.exact_max_params=0",
        f"early_stopping.restore_best={restore_best}")
    assert after == during
    best = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)
    assert best["epoch"] == metrics["best_epoch"]


# --- 8. the HParams record, read back from the event file --------------------------------------

def hparams_record(run_dir) -> tuple[dict, set, dict]:
    """(session hparam values, metric tags the experiment declares, final/* scalars)."""
    accumulator = events(run_dir)
    content = accumulator.PluginTagToContent(metadata.PLUGIN_NAME)
    experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    values = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    declared = {m.name.tag for m in experiment.metric_infos}
    final = {tag: [e.value for e in accumulator.Scalars(tag)]
             for tag in accumulator.Tags()["scalars"] if tag.startswith("final/")}
    return values, declared, final


@pytest.mark.parametrize("kind", ["network", "surface"])
def test_hparams_in_the_event_file_equal_metrics_json_and_the_config(kind, tmp_path):
    if kind == "network":
        overrides = ["model=linear", "batch_size=full", "epochs=2", "optimizer.lr=0.3", "seed=2"]
        train(make_config(*overrides), tmp_path)
        names = ["best_val_acc", "best_val_loss", "test_acc", "epochs_run", "wall_time_s"]
        config = {"optimizer.lr": 0.3, "epochs": 2, "seed": 2, "batch_size": "full", "dropout": 0.0,
                  "batchnorm": "false", "l2": 0.0, "shuffle": "true", "status": "completed"}
    else:
        overrides = ["surface=quadratic", "optimizer=sgd", "optimizer.lr=0.05", "steps=40"]
        surface_run(make_config(*overrides), tmp_path)
        names = ["final_loss", "final_distance", "rate_measured", "wall_time_s"]
        config = {"optimizer.lr": 0.05, "status": "completed"}
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    values, declared, final = hparams_record(tmp_path)
    # every final/<name> scalar once, equal to metrics.json (float32 in the event file)
    assert set(final) == {f"final/{name}" for name in names} == declared
    for name in names:
        assert final[f"final/{name}"] == [pytest.approx(metrics[name], rel=1e-6)], name
    # the session's values: what the config set, and the status metrics.json records
    assert values["status"] == metrics["status"]
    assert {k: values.get(k) for k in config} == pytest.approx(config)
