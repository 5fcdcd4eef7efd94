"""The optimizers: hand-computed QuickProp steps, Newton's one-step solves, Rprop's step sizes,
and every optimizer of conf/optimizer/ training the digits network."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from helpers import ROOT, make_config, optlab
from hydra.utils import instantiate

from optlab.jobs.train import train
from optlab.optim import Newton, QuickProp, needs_closure

OPTIMIZERS = sorted(p.stem for p in (ROOT / "conf" / "optimizer").glob("*.yaml"))


def minimize(optimizer_cls, w0, loss_fn, steps, **kwargs):
    w = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    optimizer = optimizer_cls([w], **kwargs)
    path = [w.detach().clone()]
    for _ in range(steps):
        optimizer.zero_grad()
        loss_fn(w).backward()
        optimizer.step()
        path.append(w.detach().clone())
    return torch.stack(path)


def test_quickprop_matches_a_hand_computed_trajectory():
    """f(w) = ½w², w₀ = 1, ε = 0.1, μ = 1.75, so S = w and μ/(1+μ) = 7/11.

    1: first step, gradient only: Δw = −0.1·1 = −0.1 → 0.9
    2: S = 0.9 > (7/11)·1 with the same sign: capped, Δw = 1.75·(−0.1) − 0.1·0.9 = −0.265 → 0.635
    3: S = 0.635 > (7/11)·0.9: capped again, Δw = 1.75·(−0.265) − 0.0635 = −0.52725 → 0.10775
    4: secant −0.52725·0.10775/(0.635 − 0.10775) = −0.10775, plus −0.010775 → −0.010775
    5: the slope flipped sign, so no gradient term; the secant lands on 0 exactly.
    """
    path = minimize(QuickProp, [1.0], lambda w: 0.5 * (w**2).sum(), 5, lr=0.1, mu=1.75)
    expected = [1.0, 0.9, 0.635, 0.10775, -0.010775, 0.0]
    torch.testing.assert_close(path[:, 0], torch.tensor(expected, dtype=torch.float64))


def test_quickprop_reaches_the_minimum_far_sooner_than_sgd():
    def steps_to(path):
        return int(torch.nonzero(path.abs().max(dim=1).values < 1e-6)[0])

    loss = lambda w: 0.5 * (w**2).sum()  # noqa: E731
    quick = minimize(QuickProp, [1.0], loss, 200, lr=0.1)
    sgd = minimize(torch.optim.SGD, [1.0], loss, 200, lr=0.1)
    assert steps_to(quick) <= 6 and steps_to(sgd) >= 130  # 0.9ᵗ < 1e-6 needs t ≥ 132


def newton_on(params, loss_fn, **kwargs):
    optimizer = Newton(params, **kwargs)
    closure = lambda backward=False: loss_fn()  # noqa: E731
    return optimizer, closure


def test_newton_solves_a_convex_quadratic_in_one_undamped_step():
    torch.manual_seed(0)
    m = torch.randn(6, 6, dtype=torch.float64)
    a, b = m @ m.T + 0.5 * torch.eye(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    theta = torch.nn.Parameter(torch.zeros(6, dtype=torch.float64))
    optimizer, closure = newton_on([theta], lambda: 0.5 * theta @ a @ theta - b @ theta, damping=0)
    optimizer.step(closure)
    torch.testing.assert_close(theta.detach(), torch.linalg.solve(a, b), atol=1e-6, rtol=0)


def test_newton_solves_linear_least_squares_in_one_step():
    torch.manual_seed(1)
    x, y = torch.randn(50, 3, dtype=torch.float64), torch.randn(50, 1, dtype=torch.float64)
    model = torch.nn.Linear(3, 1).double()
    optimizer, closure = newton_on(
        list(model.parameters()), lambda: ((model(x) - y) ** 2).mean(), damping=0
    )
    optimizer.step(closure)
    design = torch.cat([x, torch.ones(50, 1, dtype=torch.float64)], dim=1)
    solution = torch.linalg.lstsq(design, y).solution[:, 0]
    fitted = torch.cat([model.weight.detach()[0], model.bias.detach()])
    torch.testing.assert_close(fitted, solution, atol=1e-6, rtol=0)


def test_newton_never_raises_the_loss_on_an_indefinite_hessian():
    """x² − y² has Hessian diag(2, −2): the Cholesky fails until λ > 2, and no step goes uphill."""
    p = torch.nn.Parameter(torch.tensor([1.0, 0.1], dtype=torch.float64))
    optimizer, closure = newton_on([p], lambda: p[0] ** 2 - p[1] ** 2, damping=1e-3)
    losses = [closure().item()]
    for _ in range(10):
        optimizer.step(closure)
        losses.append(closure().item())
    assert all(b <= a for a, b in zip(losses, losses[1:]))
    assert losses[-1] < losses[0] - 1 and optimizer.param_groups[0]["damping"] > 2 / 3


def test_newton_on_softmax_regression_never_raises_the_loss(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = make_config("optimizer=newton", "model=linear", "batch_size=full", "epochs=5")
    metrics = train(cfg, tmp_path)
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    losses = [e.value for e in events.Scalars("step/loss")]
    assert len(losses) == 5 and all(b <= a for a, b in zip(losses, losses[1:]))
    assert metrics["final_train_acc"] > 0.95


def test_newton_refuses_a_model_too_large_for_its_hessian():
    with pytest.raises(Exception, match=r"85,002 parameters.*28\.9 GB.*optimizer.max_params=5,000"):
        Newton(list(instantiate(make_config().model, input_shape=(64,), num_classes=10).parameters()))


def test_rprop_step_sizes_grow_while_the_sign_persists_and_shrink_when_it_flips():
    w = torch.nn.Parameter(torch.zeros(2))
    optimizer = instantiate(make_config("optimizer=rprop").optimizer, params=[w])
    lr, (eta_minus, eta_plus) = optimizer.param_groups[0]["lr"], optimizer.param_groups[0]["etas"]
    signs = [1, 1, 1, -1, -1]
    sizes = []
    for sign in signs:
        w.grad = torch.tensor([1.0, float(sign)])  # weight 0: constant sign; weight 1: flips once
        optimizer.step()
        sizes.append(optimizer.state[w]["step_size"].clone())
    sizes = torch.stack(sizes)
    assert sizes[:, 0].tolist() == pytest.approx([lr, lr * 1.2, lr * 1.2**2, lr * 1.2**3, lr * 1.2**4])
    assert sizes[3, 1].item() == pytest.approx(sizes[2, 1].item() * eta_minus)
    assert (eta_minus, eta_plus) == (0.5, 1.2)


def test_closure_based_optimizers_are_detected():
    w = [torch.nn.Parameter(torch.zeros(1))]
    assert needs_closure(torch.optim.LBFGS(w)) and needs_closure(Newton(w))
    assert not needs_closure(torch.optim.SGD(w, lr=0.1)) and not needs_closure(QuickProp(w))


SETTINGS = {  # full-batch methods get the whole training set; RAdam warms up slowly
    "rprop": ["batch_size=full", "epochs=15"],
    "lbfgs": ["batch_size=full", "epochs=15"],
    "newton": ["batch_size=full", "epochs=4", "model.hidden=[]"],  # softmax regression: 650 weights
    "radam": ["epochs=20", "model.hidden=[256,256]"],
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_trains_the_digits_network(name, tmp_path):
    overrides = [f"optimizer={name}", "epochs=8", "model.hidden=[64]", *SETTINGS.get(name, [])]
    metrics = train(make_config(*overrides), tmp_path)
    assert metrics["test_acc"] >= 0.9, metrics


def test_full_batch_methods_warn_once_on_mini_batches(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="optlab"):
        train(make_config("optimizer=rprop", "epochs=2", "model=linear", "optimizer.lr=0.001"), tmp_path)
    warnings = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "Rprop is a full-batch method" in warnings[0]
    assert "sign" in warnings[0] and "batch_size=full" in warnings[0]


def test_every_optimizer_runs_from_the_cli(tmp_path):
    sweep = tmp_path / "sweep"
    result = optlab(
        "train", "-m", f"optimizer={','.join(OPTIMIZERS)}", "model=linear", "epochs=1",
        "batch_size=full", f"hydra.sweep.dir={sweep}", cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    for name in OPTIMIZERS:
        (run,) = sweep.glob(f"*,optimizer={name}/seed=0")
        assert json.loads((run / "metrics.json").read_text())["status"] == "completed"


def test_newton_on_a_large_model_exits_2_with_the_reason(tmp_path):
    result = optlab("train", "optimizer=newton", cwd=tmp_path)
    assert result.returncode == 2
    assert "newton: the model has 85,002 parameters" in result.stderr
    assert "28.9 GB" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
