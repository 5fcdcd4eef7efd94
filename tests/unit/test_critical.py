"""The critical batch size: the fit recovers a trade-off it was given, B_noise is a ratio of
means, and the preset sweep ends with the fit."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers import optlab

from optlab.analysis import critical
from optlab.analysis.runs import RunFolder


def run(batch, steps, **metrics) -> RunFolder:
    examples = batch * steps if steps is not None else None
    return RunFolder(Path("x"), {"steps_to_target": steps, "examples_to_target": examples, **metrics}, {},
               {"batch_size": batch})


def test_the_fit_recovers_s_min_and_e_min_from_an_exact_trade_off():
    """S = S_min + E_min/B with S_min = 50, E_min = 5000: B_crit = 100."""
    runs = [run(b, 50 + 5000 / b) for b in (8, 32, 128, 512)]
    s_min, e_min = critical.fit(critical.points(runs))
    assert s_min == pytest.approx(50) and e_min == pytest.approx(5000)
    steps, examples = 50 + 5000 / 8, 8 * (50 + 5000 / 8)
    assert (steps / s_min - 1) * (examples / e_min - 1) == pytest.approx(1)  # the paper's form


def test_b_noise_over_runs_is_the_ratio_of_the_mean_estimates():
    """tr(Σ) 12 and 14, |G|² 0.01 and 0.03: (13)/(0.02) = 650, not the mean of 1200 and 467."""
    metrics = [{"noise_trace_cov": 12.0, "noise_grad_sq": 0.01}, {"noise_trace_cov": 14.0, "noise_grad_sq": 0.03}]
    assert critical.b_noise(metrics) == pytest.approx(650)
    assert math.isnan(critical.b_noise([{"noise_trace_cov": 1.0, "noise_grad_sq": -0.1}]))


def test_the_summary_fits_only_with_three_batch_sizes_that_reached_the_target(tmp_path):
    assert critical.summarize([run(8, 700), run(32, 200), run(64, None)], tmp_path) == []
    runs = [run(b, 50 + 5000 / b, noise_trace_cov=13.0, noise_grad_sq=0.013) for b in (8, 32, 128)]
    written = critical.summarize(runs, tmp_path)
    assert [p.name for p in written] == ["critical_batch.json", "critical_batch.png"]
    result = json.loads((tmp_path / "critical_batch.json").read_text())
    assert result["b_crit"] == pytest.approx(100) and result["b_noise"] == pytest.approx(1000)


def test_the_critical_batch_preset_ends_with_the_fit(tmp_path):
    """The preset, cut to three batch sizes, one seed and an easy target to stay quick."""
    result = optlab("train", "experiment=critical_batch", "hydra.sweeper.params.batch_size='32,128,full'",
                    "hydra.sweeper.params.seed=0", "target.val_acc=0.8", "noise.samples=64", "model.hidden=[32]",
                    f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path, timeout=240)
    assert result.returncode == 0, result.stderr
    fitted = json.loads((tmp_path / "sweep" / "critical_batch.json").read_text())
    assert len(fitted["runs"]) == 3 and fitted["b_noise_runs"] == 3
    assert "critical batch: S_min" in result.stdout and (tmp_path / "sweep" / "critical_batch.png").exists()
