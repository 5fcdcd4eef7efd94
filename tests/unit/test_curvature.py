"""Curvature: power iteration against the exact spectrum, exact answers on a known quadratic,
and measurements that leave the run exactly as it was."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from helpers import make_config, optlab
from omegaconf import OmegaConf
from torch import nn

from optlab import curvature
from optlab.jobs.train import train
from optlab.models import MLP


def small_problem():
    torch.manual_seed(0)
    model = MLP(4, 3, hidden=[6], activation="tanh").double()
    x, y = torch.randn(64, 4, dtype=torch.float64), torch.randint(0, 3, (64,))
    return model, lambda: nn.functional.cross_entropy(model(x), y)


def test_power_iteration_and_hutchinson_agree_with_the_exact_hessian():
    model, loss = small_problem()
    exact = curvature.spectrum(model, loss)
    top = exact[exact.abs().argmax()].item()
    assert curvature.lambda_max(model, loss, iters=1000, tol=1e-10) == pytest.approx(top, rel=0.01)
    assert curvature.trace(model, loss, probes=3000) == pytest.approx(exact.sum().item(), rel=0.05)


class Quadratic(nn.Module):
    """f(θ) = ½ θᵀ diag(a) θ: Hessian diag(a), known eigenvalues."""

    def __init__(self, a):
        super().__init__()
        self.a = torch.tensor(a, dtype=torch.float64)
        self.theta = nn.Parameter(torch.ones(len(a), dtype=torch.float64))

    def forward(self):
        return 0.5 * (self.a * self.theta**2).sum()


def test_a_quadratic_with_a_known_hessian_is_measured_exactly():
    model = Quadratic([10.0, 5.0, 2.0, 1.0, 0.5])
    loss = model.forward
    assert curvature.lambda_max(model, loss, iters=200, tol=1e-14) == pytest.approx(10.0, abs=1e-6)
    assert curvature.trace(model, loss, probes=3) == pytest.approx(18.5, abs=1e-6)  # exact for diagonal H
    values = curvature.spectrum(model, loss)
    assert values.tolist() == pytest.approx([0.5, 1.0, 2.0, 5.0, 10.0], abs=1e-6)
    assert (values.max() / values.min()).item() == pytest.approx(20.0, abs=1e-6)
    # ε-sharpness: the box |y| ≤ ε(|x|+1) = 2ε around θ = 1 pushes each coordinate out by 2ε
    eps = 1e-3
    expected = 0.5 * sum(a * (1 + 2 * eps) ** 2 for a in model.a.tolist())
    start = 0.5 * sum(model.a.tolist())
    assert curvature.sharpness(model, loss, epsilon=eps) == pytest.approx(
        100 * (expected - start) / (1 + start), rel=1e-6)


def test_measuring_changes_no_weight_no_mode_and_no_rng_stream():
    model, loss = small_problem()
    model.train()
    before = [p.detach().clone() for p in model.parameters()]
    rng = torch.get_rng_state()
    curvature.lambda_max(model, loss, iters=5)
    curvature.trace(model, loss, probes=3)
    curvature.sharpness(model, loss)
    curvature.slices(model, loss, before, points=5)
    assert model.training and torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


def test_a_run_with_curvature_on_trains_exactly_as_with_it_off(tmp_path):
    common = ["epochs=3", "model.hidden=[16]", "dropout=0.2"]
    train(make_config(*common), tmp_path / "off")
    on = train(make_config(*common, "curvature.every=1", "curvature.final=true"), tmp_path / "on")

    def history(run):
        return [{k: v for k, v in row.items() if k != "elapsed_s"} for row in csv.DictReader((run / "history.csv").open())]

    assert history(tmp_path / "on") == history(tmp_path / "off")
    assert on["lambda_max"] > 0 and on["sharpness"] > 0 and on["condition_number"] > 1
    result = json.loads((tmp_path / "on" / "curvature.json").read_text())
    assert len(result["eigenvalues"]) == 64 * 16 + 16 + 16 * 10 + 10
    assert (tmp_path / "on" / "landscape.png").read_bytes()[:4] == b"\x89PNG"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "on"))
    events.Reload()
    assert [e.step for e in events.Scalars("curvature/lambda_max")] == [1, 2, 3]
    assert events.Scalars("curvature/stability_threshold")[0].value == pytest.approx(2 / 0.1)


def test_optlab_landscape_measures_a_finished_run(tmp_path):
    run = tmp_path / "run"
    train(make_config("epochs=2", "model.hidden=[16]"), run)
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(make_config("epochs=2", "model.hidden=[16]")))
    result = optlab("landscape", str(run), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "λ_max" in result.stdout and "sharpness" in result.stdout
    assert json.loads((run / "curvature.json").read_text())["lambda_max"] > 0
    assert (run / "landscape.png").exists()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run))
    events.Reload()
    assert events.Tags()["images"] == ["landscape"]
    missing = optlab("landscape", str(tmp_path / "nothing"), cwd=tmp_path)
    assert missing.returncode == 2 and "is not a run folder" in missing.stderr
