"""The 2-D geometry: convergence rates on an ill-conditioned quadratic, paths and plots."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from helpers import make_config, optlab
from hydra.utils import instantiate
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from optlab.jobs.surface import run
from optlab.surfaces import Quadratic, linear_rate


def surface_run(tmp_path, *overrides):
    return run(make_config(*overrides), tmp_path)


@pytest.mark.parametrize("name", ["quadratic", "rosenbrock", "beale", "saddle"])
def test_each_surface_is_stationary_at_its_optimum(name):
    surface = instantiate(make_config(f"surface={name}").surface, _convert_="all")
    with torch.no_grad():
        surface.point.copy_(torch.tensor(surface.optimum))
    surface().backward()
    assert surface.point.grad.abs().max() < 1e-12


def test_quadratic_has_the_asked_condition_number():
    surface = Quadratic(kappa=100, angle=30)
    eigenvalues = torch.linalg.eigvalsh(surface.A)
    assert eigenvalues.tolist() == pytest.approx([1, 100])


def test_linear_rate_of_a_geometric_sequence():
    assert linear_rate([0.5**t for t in range(60)]) == pytest.approx(0.5)
    assert linear_rate([1.0, 0.0, 0.0]) == 0.0


def test_gd_and_optimal_momentum_reach_their_analytic_rates_on_kappa_100(tmp_path):
    rates = Quadratic(kappa=100).rates()
    gd = surface_run(
        tmp_path / "gd", "surface=quadratic", "surface.kappa=100", "optimizer=sgd",
        f"optimizer.lr={rates['lr_gd_optimal']}", "steps=1000",
    )
    heavy_ball = surface_run(
        tmp_path / "hb", "surface=quadratic", "surface.kappa=100", "optimizer=momentum",
        f"optimizer.lr={rates['lr_momentum_optimal']}",
        f"optimizer.momentum={rates['momentum_optimal']}", "steps=1000",
    )
    assert gd["rate_gd_optimal"] == pytest.approx(99 / 101)
    assert gd["rate_momentum_optimal"] == pytest.approx(9 / 11)
    # lr = 2/(κ+1) maps the eigenvalues 1 and κ to 1 − lr·λ = ±(κ−1)/(κ+1): the distance shrinks
    # by exactly 99/101 every step, and the fit reads it to float64 precision (measured: 2e-16)
    assert gd["rate_measured"] == pytest.approx(99 / 101, rel=1e-12)

    # Heavy ball at its optimal α, β is critically damped: each eigen-direction's iteration matrix
    # has the double eigenvalue r = 9/11 (a Jordan block), so d_t = r^t·√q(t) with q a quadratic
    # in t. q is exactly quadratic (measured: 2e-9 over 150 steps, float64 rounding; a rate off
    # by 1e-6 would leave residuals of 17%). A log-linear fit over a finite window also sees the
    # √q(t) factor: measured 0.8251 against r = 0.8182 (+0.84%, the README's table), which is the
    # fit of t·log r + ½·log q(t) over linear_rate's window (second half of the steps above
    # 1e-12·d₀); measured: 3e-15 apart.
    rows = csv.DictReader((tmp_path / "hb" / "trajectory.csv").open())
    distances = np.array([float(row["distance"]) for row in rows])
    r = 9 / 11
    t = np.arange(150)
    q = (distances[t] / r**t) ** 2
    fit = np.polyfit(t, q, 2)
    assert np.polyval(fit, t) == pytest.approx(q, rel=1e-8)
    end = int(np.argmax(distances <= 1e-12 * distances[0]))
    window = np.arange(end // 2, end)
    predicted = math.exp(np.polyfit(window, window * math.log(r) + 0.5 * np.log(np.polyval(fit, window)), 1)[0])
    assert heavy_ball["rate_measured"] == pytest.approx(predicted, rel=1e-12)
    assert heavy_ball["rate_measured"] == pytest.approx(0.8251, abs=1e-4)
    assert 0 < heavy_ball["rate_measured"] / r - 1 < 0.01

    def steps_to(run_dir, tolerance=1e-4):
        rows = list(csv.DictReader((run_dir / "trajectory.csv").open()))
        return next(int(r["step"]) for r in rows if float(r["distance"]) < tolerance)

    assert steps_to(tmp_path / "hb") * 5 < steps_to(tmp_path / "gd")


def test_newton_solves_the_quadratic_surface_in_one_step(tmp_path):
    metrics = surface_run(
        tmp_path, "surface=quadratic", "surface.kappa=1000", "optimizer=newton",
        "optimizer.damping=0", "steps=1",
    )
    assert metrics["final_distance"] < 1e-6 and metrics["start_distance"] == pytest.approx(5)


def test_a_surface_run_writes_path_plot_and_curves(tmp_path):
    metrics = surface_run(tmp_path, "surface=rosenbrock", "optimizer=adam", "optimizer.lr=0.05", "steps=30")
    assert metrics["status"] == "completed" and metrics["steps"] == 30
    assert metrics["final_loss"] < metrics["start_loss"]
    rows = list(csv.DictReader((tmp_path / "trajectory.csv").open()))
    assert len(rows) == 31 and [float(rows[0]["x"]), float(rows[0]["y"])] == [-1.2, 1.0]
    assert (tmp_path / "trajectory.png").read_bytes()[:4] == b"\x89PNG"
    events = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    for tag in ("step/loss", "step/distance", "step/x", "step/y", "step/update_ratio", "step/grad_norm"):
        assert len(events.Scalars(tag)) == 30, tag
    assert events.Tags()["images"] == ["trajectory"]
    assert json.loads((tmp_path / "metrics.json").read_text())["final_distance"] == metrics["final_distance"]


def test_a_sweep_overlays_every_path_on_one_plot(tmp_path):
    result = optlab(
        "train", "-m", "surface=quadratic", "optimizer=sgd,momentum,adam", "steps=20",
        f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path, timeout=180,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "sweep" / "trajectories.png").read_bytes()[:4] == b"\x89PNG"
    assert len(list((tmp_path / "sweep").glob("*/seed=0/trajectory.png"))) == 3
    assert (tmp_path / "sweep" / "curves.png").exists()  # loss and distance per step


def test_the_overlay_labels_runs_by_what_sets_them_apart(tmp_path):
    from optlab.analysis.figures import overlay_trajectories
    from optlab.analysis.runs import find_runs, group_runs

    for i, name in enumerate(["sgd", "adam"]):
        overrides = ["surface=quadratic", f"optimizer={name}", "steps=5"]
        run_dir = tmp_path / f"optimizer={name}" / "seed=0"
        surface_run(run_dir, *overrides)
        (run_dir / ".hydra").mkdir(parents=True)
        (run_dir / ".hydra" / "overrides.yaml").write_text("\n".join(f"- {o}" for o in overrides))
        (run_dir / ".hydra" / "config.yaml").write_text(
            __import__("omegaconf").OmegaConf.to_yaml(make_config(*overrides))
        )
    import matplotlib.pyplot as plt

    labels = []
    original = plt.Axes.plot
    try:
        plt.Axes.plot = lambda self, *a, label=None, **k: labels.append(label) or original(self, *a, label=label, **k)
        (written,) = overlay_trajectories(group_runs(find_runs([tmp_path])), tmp_path)
    finally:
        plt.Axes.plot = original
    assert written == tmp_path / "trajectories.png"
    assert sorted(labels) == ["optimizer=adam", "optimizer=sgd", "optimum"]


@pytest.mark.parametrize("scheduler", ["onecycle", "cosine"])
def test_a_schedule_planned_over_the_run_spans_a_surfaces_steps(scheduler, tmp_path):
    """On a surface a step is an epoch: `${epochs}` in the schedule becomes `steps`, so OneCycleLR
    peaks at pct_start of the steps (not past its end) and the cosine reaches eta_min at the last."""
    metrics = surface_run(tmp_path, "surface=quadratic", f"scheduler={scheduler}", "steps=40", "epochs=5")
    assert metrics["status"] == "completed" and metrics["steps"] == 40
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    lr = [e.value for e in events.Scalars("step/lr")]
    assert len(lr) == 40
    if scheduler == "onecycle":  # the peak at step pct_start·40 − 1 = 11 (counting from 0)
        assert lr.index(max(lr)) == 11 and max(lr) == pytest.approx(0.1, rel=1e-6)
    else:  # η_t = η_0 (1 + cos(π t / 40)) / 2, stepped once per step
        assert lr == pytest.approx([0.1 * (1 + math.cos(math.pi * t / 40)) / 2 for t in range(40)], rel=1e-5)


def test_a_surface_diverges_by_the_networks_rule(tmp_path, caplog):
    """κ = 100 at momentum's default rate blows up (203.5 → 2e+91 in 100 steps): past
    diverge_threshold × the first loss the run ends as diverged, as a network's would."""
    metrics = surface_run(tmp_path / "q", "surface=quadratic", "surface.kappa=100", "optimizer=momentum", "steps=300")
    assert metrics["status"] == "diverged" and metrics["steps"] == metrics["diverged_step"] < 300
    assert metrics["final_loss"] > 1000 * metrics["start_loss"] and metrics["rate_measured"] is None
    assert json.loads((tmp_path / "q" / "metrics.json").read_text())["status"] == "diverged"
    assert "diverged at step" in caplog.text and "try optimizer.lr=0.005" in metrics["hint"]
    # a loss that falls below zero is no blow-up: the saddle started where f = -0.75 < 0
    saddle = surface_run(tmp_path / "s", "surface=saddle", "surface.start=[0.5,1.0]", "optimizer=sgd", "steps=20")
    assert saddle["status"] == "completed" and saddle["final_loss"] < saddle["start_loss"] < 0
    assert saddle["hint"] is None
    # and a threshold any step passes stops the run at its first step, on a surface as on a network
    tight = surface_run(tmp_path / "t", "surface=quadratic", "optimizer=sgd", "optimizer.lr=0.001",
                        "diverge_threshold=1e-9", "steps=20")
    assert tight["status"] == "diverged" and tight["diverged_step"] == 1
