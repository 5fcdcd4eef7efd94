"""Recitation section 2: initialization, dropout, batch norm, weight decay, annealing, early
stopping and shuffling, each checked against its formula or the behaviour the slide claims."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import make_config, optlab
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from optlab.config.checks import validate
from optlab.errors import ConfigError, UsageError
from optlab.init import initialize, load_matching
from optlab.jobs.train import train
from optlab.models import MLP, Dropout
from optlab.schedules import build
from optlab.training.callbacks import EarlyStopping
from optlab.training.rng import masks
from optlab.training.single import evaluate


def scalars(run_dir, tag):
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return [e.value for e in events.Scalars(tag)]


def last_weights(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


# --- initialization -----------------------------------------------------------------------

@pytest.mark.parametrize(
    "scheme, variance",
    [
        ("xavier_uniform", lambda fan_in, fan_out: 2 / (fan_in + fan_out)),
        ("xavier_normal", lambda fan_in, fan_out: 2 / (fan_in + fan_out)),
        ("kaiming_uniform", lambda fan_in, fan_out: 2 / fan_in),
        ("kaiming_normal", lambda fan_in, fan_out: 2 / fan_in),
    ],
)
def test_weight_variances_match_their_formulas(scheme, variance):
    torch.manual_seed(0)
    model = MLP(300, 10, hidden=[400, 200])
    initialize(model, make_config(f"init={scheme}").init, None, 64)
    for layer in (model[1], model[3]):
        fan_out, fan_in = layer.weight.shape
        assert layer.weight.var().item() == pytest.approx(variance(fan_in, fan_out), rel=0.03)
        assert torch.all(layer.bias == 0)


def test_zero_init_keeps_one_distinct_unit_and_random_init_the_full_width(tmp_path):
    common = ["epochs=3", "model.hidden=[32,16]"]
    zeros = train(make_config("init=zeros", *common), tmp_path / "zeros")
    xavier = train(make_config("init=xavier_uniform", *common), tmp_path / "xavier")
    constant = train(make_config("init=constant", *common), tmp_path / "constant")
    for layer, width in (("layer1", 32), ("layer2", 16)):
        assert scalars(tmp_path / "zeros", f"init/distinct_units/{layer}") == [1, 1, 1]
        assert scalars(tmp_path / "constant", f"init/distinct_units/{layer}") == [1, 1, 1]
        assert scalars(tmp_path / "xavier", f"init/distinct_units/{layer}") == [width] * 3
    assert zeros["test_acc"] < 0.25 and constant["test_acc"] < 0.5 and xavier["test_acc"] > 0.8


def test_pretrained_loads_exactly_the_matching_tensors(tmp_path):
    train(make_config("model.hidden=[32]", "epochs=1"), tmp_path / "first")
    saved = torch.load(tmp_path / "first" / "checkpoints" / "best.pt", weights_only=True)["model"]
    torch.manual_seed(5)
    model = MLP(64, 10, hidden=[32, 16])
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    loaded, kept = load_matching(model, str(tmp_path / "first"))  # a run folder
    # fc2 is new and head.weight is 10×16, not 10×32; head.bias (10) fits
    assert loaded == ["fc1.weight", "fc1.bias", "head.bias"]
    assert kept == ["fc2.weight", "fc2.bias", "head.weight"]
    state = model.state_dict()
    for name in loaded:
        assert torch.equal(state[name], saved[name])
    for name in kept:
        assert torch.equal(state[name], fresh[name])


@pytest.mark.slow
def test_pretrained_from_the_cli_and_a_bad_path(tmp_path):
    first = tmp_path / "first"
    assert optlab("train", "epochs=1", f"hydra.run.dir={first}", cwd=tmp_path).returncode == 0
    ok = optlab("train", "epochs=1", "init=pretrained", f"init.path={first}", "model.hidden=[256,64]",
                "dropout=0.1", f"hydra.run.dir={tmp_path / 'second'}", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    # the first layer and the head's bias fit; fc2 (64×256) and the head's weight do not
    assert "init: loaded 3 tensors" in ok.stdout and "fc1.weight, fc1.bias, head.bias" in ok.stdout
    bad = optlab("train", "init=pretrained", f"init.path={tmp_path / 'nothing.pt'}", cwd=tmp_path)
    assert bad.returncode == 2 and f"init.path: {tmp_path / 'nothing.pt'} does not exist" in bad.stderr
    assert "Traceback" not in bad.stderr
    torch.save({"encoder.weight": torch.zeros(3, 4)}, tmp_path / "foreign.pt")
    foreign = optlab("train", "init=pretrained", f"init.path={tmp_path / 'foreign.pt'}", cwd=tmp_path)
    assert foreign.returncode == 2 and "Traceback" not in foreign.stderr
    assert f"no tensor of {tmp_path / 'foreign.pt'} fits this model" in foreign.stderr
    assert "encoder.weight [3, 4]" in foreign.stderr and "fc1.weight [256, 64]" in foreign.stderr


def test_layerwise_pretraining_learns_to_reconstruct_then_trains(tmp_path, caplog):
    """Each hidden layer's reconstruction error falls, and with the same 3 supervised epochs
    the pretrained network beats PyTorch's default initialization (measured: 0.88 vs 0.68)."""
    common = ["epochs=3", "model.hidden=[32,16]"]
    with caplog.at_level("INFO", logger="optlab"):
        metrics = train(make_config("init=layerwise", "init.epochs=3", *common), tmp_path / "layerwise")
    baseline = train(make_config(*common), tmp_path / "default")
    errors = {}
    for record in caplog.records:
        if record.getMessage().startswith("layerwise: layer"):
            layer, epoch, mse = record.args
            errors.setdefault(layer, []).append(mse)
    assert set(errors) == {1, 2} and all(e[-1] < e[0] for e in errors.values())
    assert metrics["test_acc"] > baseline["test_acc"] + 0.05


# --- dropout and batch norm -----------------------------------------------------------------

def test_dropout_is_random_in_training_and_off_in_evaluation():
    torch.manual_seed(0)
    with_dropout = MLP(64, 10, hidden=[128], dropout=0.5)
    without = MLP(64, 10, hidden=[128])
    without.load_state_dict(with_dropout.state_dict())
    x = torch.randn(32, 64)
    with_dropout.train()
    assert not torch.equal(with_dropout(x), with_dropout(x))
    with_dropout.eval(), without.eval()
    assert torch.equal(with_dropout(x), with_dropout(x))
    assert torch.equal(with_dropout(x), without(x))


def test_dropout_masks_come_from_the_runs_own_stream_and_keep_the_expected_activation():
    """Masks are 0 or 1/(1 − p), zero with probability p; the same seed draws the same masks, the
    global stream is untouched; a channel mask (CNN blocks) is one draw per channel."""
    x = torch.ones(2000, 50)
    drop = Dropout(0.3)
    drop.generator = masks(7, torch.device("cpu"))
    before = torch.get_rng_state()
    out = drop(x)
    assert torch.equal(torch.get_rng_state(), before)
    assert out.unique().tolist() == [0.0, pytest.approx(1 / 0.7)]
    assert (out == 0).float().mean().item() == pytest.approx(0.3, abs=0.01)
    assert out.mean().item() == pytest.approx(1.0, abs=0.02)
    drop.generator = masks(7, torch.device("cpu"))
    assert torch.equal(drop(x), out)
    channels = Dropout(0.5, channels=True)
    image = channels(torch.ones(8, 16, 5, 5))
    assert torch.equal(image, image[:, :, :1, :1].expand_as(image))  # each channel whole, or none of it
    assert torch.equal(channels.eval()(x), x)


def test_batchnorm_evaluates_with_running_statistics():
    torch.manual_seed(0)
    model = MLP(8, 3, hidden=[16], batchnorm=True)
    assert [type(m).__name__ for m in model] == ["Flatten", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    x = torch.randn(64, 8) * 3 + 1
    model.train()
    for _ in range(5):
        model(x)  # updates the running mean and variance
    model.eval()
    bn = model.bn1
    normalized = (model.fc1(x[:4]) - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps)
    expected = model.head(torch.relu(normalized * bn.weight + bn.bias))
    torch.testing.assert_close(model(x[:4]), expected)
    torch.testing.assert_close(model(x[:1]), model(x)[:1])  # one example: no batch statistics


def test_batchnorm_refuses_batches_of_one():
    with pytest.raises(ConfigError, match="one example has no variance"):
        validate(make_config("batchnorm=true", "batch_size=1"))


def test_batchnorm_drops_a_last_batch_of_one(tmp_path):
    metrics = train(make_config("batchnorm=true", "batch_size=2", "epochs=1", "model.hidden=[16]"), tmp_path)
    assert metrics["steps"] == 1077 // 2  # 1077 = 538·2 + 1: the lone last example is skipped


# --- weight decay -----------------------------------------------------------------------------

def test_l2_penalty_and_coupled_weight_decay_agree_for_sgd(tmp_path):
    common = ["epochs=2", "model.hidden=[32]"]
    train(make_config("l2=0.01", *common), tmp_path / "l2")
    train(make_config("optimizer.weight_decay=0.01", *common), tmp_path / "coupled")
    train(make_config("optimizer.weight_decay=0.01", "weight_decay_mode=l2", *common), tmp_path / "mode")
    train(make_config(*common), tmp_path / "none")
    l2, coupled, mode, none = (last_weights(tmp_path / d) for d in ("l2", "coupled", "mode", "none"))
    for name in l2:
        torch.testing.assert_close(l2[name], coupled[name], atol=1e-6, rtol=0)
        torch.testing.assert_close(l2[name], mode[name], atol=0, rtol=0)  # the same computation
    assert not torch.allclose(l2["fc1.weight"], none["fc1.weight"], atol=1e-4)
    penalties = scalars(tmp_path / "l2", "step/l2_penalty")
    assert len(penalties) == 2 * 17 and all(p > 0 for p in penalties)


def test_decoupled_and_coupled_decay_differ_for_adam(tmp_path):
    common = ["optimizer=adam", "optimizer.weight_decay=0.01", "epochs=1", "model.hidden=[32]"]
    train(make_config(*common), tmp_path / "coupled")
    train(make_config("weight_decay_mode=decoupled", *common), tmp_path / "decoupled")
    coupled, decoupled = last_weights(tmp_path / "coupled"), last_weights(tmp_path / "decoupled")
    assert (coupled["fc1.weight"] - decoupled["fc1.weight"]).abs().max() > 1e-3


def test_decoupled_decay_is_the_recitations_rule_and_spares_biases(tmp_path):
    """One full-batch SGD step: θ₁ = θ₀ − lr·∇L(θ₀) − w·θ₀ for weights; biases without w·θ₀."""
    cfg = make_config("model=linear", "batch_size=full", "epochs=1", "optimizer.lr=0.5",
                      "optimizer.weight_decay=0.1", "weight_decay_mode=decoupled")
    train(cfg, tmp_path)
    from optlab.training.data import load

    data = load(cfg.data, torch.device("cpu"))
    torch.manual_seed(cfg.seed)
    model = MLP(64, 10)
    torch.nn.functional.cross_entropy(model(data.train.x), data.train.y).backward()
    weight, bias = model.head.weight, model.head.bias
    last = last_weights(tmp_path)
    torch.testing.assert_close(last["head.weight"], weight - 0.5 * weight.grad - 0.1 * weight)
    torch.testing.assert_close(last["head.bias"], bias - 0.5 * bias.grad)


# --- learning-rate schedules ----------------------------------------------------------------

def test_exponential_decay_follows_lr0_exp_minus_kt():
    w = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([w], lr=0.1)
    scheduler, per_step = build(make_config("scheduler=exponential", "scheduler.k=0.01").scheduler, optimizer, 17)
    assert per_step
    for t in range(200):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * math.exp(-0.01 * t), abs=1e-9)
        optimizer.step()
        scheduler.step()


def test_logged_lr_is_the_real_lr_of_every_step(tmp_path):
    train(make_config("scheduler=exponential", "scheduler.k=0.01", "epochs=2"), tmp_path)
    logged = scalars(tmp_path, "step/lr")
    expected = [0.1 * math.exp(-0.01 * t) for t in range(len(logged))]  # t = steps taken before
    assert logged == pytest.approx(expected, rel=1e-6)  # TensorBoard stores float32


def test_step_decay_halves_the_lr_every_step_size_epochs(tmp_path):
    train(make_config("scheduler=step", "scheduler.step_size=2", "scheduler.gamma=0.5", "epochs=6",
                      "model=linear"), tmp_path)
    import csv

    lrs = [float(r["lr"]) for r in csv.DictReader((tmp_path / "history.csv").open())]
    assert lrs == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])


def test_plateau_cuts_the_lr_after_patience_epochs_without_improvement():
    w = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([w], lr=1.0)
    cfg = make_config("scheduler=plateau", "scheduler.patience=2", "scheduler.factor=0.5").scheduler
    scheduler, per_step = build(cfg, optimizer, 17)
    assert not per_step
    lrs = []
    for val_loss in [1.0, 0.9, 0.95, 0.95, 0.95, 0.8, 0.85, 0.85, 0.85]:
        scheduler.step(val_loss)
        lrs.append(optimizer.param_groups[0]["lr"])
    # best 0.9 at epoch 2; epochs 3, 4 are patience; epoch 5 is the third bad one: cut
    assert lrs == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25]


@pytest.mark.parametrize("name", ["constant", "step", "multistep", "exponential", "plateau", "cosine",
                                  "warmup_cosine", "onecycle"])
def test_every_schedule_trains(name, tmp_path):
    metrics = train(make_config(f"scheduler={name}", "epochs=4", "model.hidden=[32]"), tmp_path)
    assert metrics["test_acc"] > 0.8
    assert len(scalars(tmp_path, "step/lr")) == metrics["steps"]


def test_warmup_cosine_rises_then_falls(tmp_path):
    train(make_config("scheduler=warmup_cosine", "epochs=6", "model=linear"), tmp_path)
    lr = scalars(tmp_path, "step/lr")
    peak = lr.index(max(lr))
    assert peak == pytest.approx(2 * 17, abs=1)  # end of the 2 warm-up epochs
    assert lr[0] < 0.01 and all(a <= b for a, b in zip(lr[:peak], lr[1:peak + 1]))
    assert all(a >= b for a, b in zip(lr[peak:], lr[peak + 1:])) and lr[-1] < 0.01


# --- early stopping ---------------------------------------------------------------------------

def scripted(stopper, values, key="val_loss"):
    """Feed a metric sequence; the epoch it stops at (the best epochs are in stopper.improved)."""
    stopper.improved = []
    for epoch, value in enumerate(values, start=1):
        if stopper.judge(epoch, {key: value}):
            stopper.improved.append(epoch)
        if stopper.stop:
            return epoch
    return None


def test_early_stopping_stops_where_keras_would():
    # Keras, patience 2: epoch 0 sets best 1.0; epoch 1 improves (0.8); epochs 2 and 3 do not,
    # and at epoch 3 wait = 2 ≥ patience: stopped_epoch 3 in Keras's count, 4 in ours.
    stopper = EarlyStopping("val_loss", patience=2)
    assert scripted(stopper, [1.0, 0.8, 0.85, 0.9, 0.7]) == 4
    assert (stopper.best_epoch, stopper.stopped_epoch) == (2, 4)
    assert stopper.improved == [1, 2]  # the epochs the checkpoint keeps as best


def test_early_stopping_min_delta_is_absolute_and_patience_zero_stops_at_once():
    # min_delta 0.05: 0.97 is not below 1.0 − 0.05, so epoch 2 is no improvement; patience 0
    # stops at the first epoch (after Keras's epoch 0) that does not improve.
    stopper = EarlyStopping("val_loss", patience=0, min_delta=0.05)
    assert scripted(stopper, [1.0, 0.9, 0.87, 0.5]) == 3
    assert stopper.best_epoch == 2


def test_early_stopping_on_accuracy_maximizes_and_waits_for_start_epoch():
    stopper = EarlyStopping("val_acc", patience=1, start_epoch=3)
    # epochs 1-3 (Keras 0-2) are not watched; from epoch 4 on: 0.5 best, 0.6 better, 0.55 worse.
    assert scripted(stopper, [0.9, 0.9, 0.9, 0.5, 0.6, 0.55, 0.7], key="val_acc") == 6
    assert stopper.best_epoch == 5


def test_early_stopping_in_a_run_records_epochs_and_tests_the_restored_weights(tmp_path):
    metrics = train(make_config("early_stopping=val_loss", "early_stopping.patience=1", "epochs=40",
                                "optimizer.lr=0.5"), tmp_path)
    assert metrics["stopped_epoch"] == metrics["epochs_run"] < 40
    best = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)
    assert best["epoch"] == metrics["best_epoch"] < metrics["stopped_epoch"]
    cfg = make_config()
    from optlab.training.data import load

    model = MLP(64, 10, hidden=[256, 256])
    model.load_state_dict(best["model"])
    data = load(cfg.data, torch.device("cpu"))
    test_loss, test_acc = evaluate(model, data, data.test)
    assert (metrics["test_loss"], metrics["test_acc"]) == pytest.approx((test_loss, test_acc))


# --- shuffling ------------------------------------------------------------------------------

def test_sorted_unshuffled_data_trains_measurably_worse(tmp_path):
    """Seen class by class, every epoch ends on the last classes: the network remembers that
    order, and its validation loss stays far above a shuffled run's (measured: 0.31 vs 0.19)."""
    common = ["epochs=5", "model.hidden=[64]", "batch_size=16"]
    shuffled = train(make_config(*common), tmp_path / "shuffled")
    sorted_ = train(make_config("shuffle=false", "data.order=sorted", *common), tmp_path / "sorted")
    assert sorted_["best_val_loss"] > 1.3 * shuffled["best_val_loss"]
    assert sorted_["test_acc"] < shuffled["test_acc"]


def test_pretrained_without_a_path_is_a_usage_error():
    with pytest.raises(UsageError, match="init.path"):
        initialize(MLP(64, 10), make_config("init=pretrained").init, None, 64)
