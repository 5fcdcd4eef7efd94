"""The critical batch size (McCandlish et al. 2018, "An Empirical Model of Large-Batch
Training"): from runs at several batch sizes that reached one target, the steps S and examples E
each needed, fitted to the paper's trade-off (S/S_min − 1)(E/E_min − 1) = 1.

Every run takes E = B·S, so the trade-off is S = S_min + E_min/B: a line in 1/B, fitted by least
squares on relative errors (each run weighted by 1/S). B_crit = E_min/S_min is the batch size
below which doubling the batch halves the steps and above which it buys little; the summary puts
it beside B_noise, the gradient noise scale the runs measured (`noise_b_simple`). Imports no
torch: the sweep summary draws it.
"""

from __future__ import annotations

import math
import statistics

import numpy as np

from optlab.store.files import write_json


def points(runs) -> list[tuple[float, float, float, str]]:
    """(B, S, E, batch_size) of each run that reached its target; B = E/S is the mean batch it
    took (a last, smaller batch included), which the fit uses; `batch_size` labels it."""
    found = []
    for run in runs:
        steps, examples = run.metrics.get("steps_to_target"), run.metrics.get("examples_to_target")
        if steps and examples:
            found.append((examples / steps, float(steps), float(examples), str(run.config.get("batch_size"))))
    return found


def fit(found: list[tuple]) -> tuple[float, float]:
    """(S_min, E_min) of S = S_min + E_min/B, relative least squares."""
    batch, steps = np.array([p[0] for p in found]), np.array([p[1] for p in found])
    design = np.stack([np.ones_like(batch), 1 / batch], axis=1) / steps[:, None]
    (s_min, e_min), *_ = np.linalg.lstsq(design, np.ones_like(steps), rcond=None)
    return float(s_min), float(e_min)


def summarize(runs, out) -> list:
    """critical_batch.json and critical_batch.png when the runs reached a target at 3 or more
    batch sizes; nothing otherwise."""
    found = points(runs)
    if len({p[3] for p in found}) < 3:
        return []
    s_min, e_min = fit(found)
    measured = [r.metrics for r in runs if "noise_grad_sq" in r.metrics]
    result = {
        "s_min": s_min, "e_min": e_min, "b_crit": e_min / s_min if s_min > 0 else math.nan,
        "b_noise": b_noise(measured), "b_noise_runs": len(measured),
        "runs": [{"batch_size": label, "mean_batch": b, "steps": s, "examples": e} for b, s, e, label in found],
    }
    write_json(out / "critical_batch.json", result)
    plot(found, result, out / "critical_batch.png")
    beside = (f", B_noise {result['b_noise']:.0f} (measured at the end of {len(measured)} runs)"
              if measured else " (noise.final=true measures B_noise)")
    print(f"critical batch: S_min {s_min:.0f} steps, E_min {e_min:.0f} examples, "
          f"B_crit = E_min/S_min = {result['b_crit']:.0f}{beside}")
    return [out / "critical_batch.json", out / "critical_batch.png"]


def b_noise(metrics: list[dict]) -> float | None:
    """B_simple over several runs: the mean of their unbiased tr(Σ) over the mean of their
    unbiased |G|², the ratio taken last (a mean of per-run ratios is ruled by the runs whose
    |G|² estimate came out near 0)."""
    if not metrics:
        return None
    grad_sq = statistics.fmean(m["noise_grad_sq"] for m in metrics)
    return statistics.fmean(m["noise_trace_cov"] for m in metrics) / grad_sq if grad_sq > 0 else math.nan


def plot(found, result: dict, path) -> None:
    """Steps against examples to the target, each run a point labelled by its batch, with the
    fitted trade-off and its two asymptotes."""
    from optlab.store.plots import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(6.4, 4.8), layout="constrained")
    for label in sorted({p[3] for p in found}, key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0)):
        mine = [p for p in found if p[3] == label]
        ax.scatter([p[2] for p in mine], [p[1] for p in mine], s=22, label=f"batch_size={label}", zorder=3)
    s_min, e_min = result["s_min"], result["e_min"]
    if s_min > 0 and e_min > 0:
        batches = np.geomspace(min(p[0] for p in found) / 2, max(p[0] for p in found) * 2, 200)
        ax.plot(batches * s_min + e_min, s_min + e_min / batches, color="black", lw=1.2,
                label=f"(S/S_min − 1)(E/E_min − 1) = 1, B_crit = {result['b_crit']:.0f}")
        ax.axhline(s_min, color="grey", ls="--", lw=0.8)
        ax.axvline(e_min, color="grey", ls="--", lw=0.8)
    noise = result["b_noise"]
    title = "steps and examples to the target" + (f"; measured B_noise ≈ {noise:.0f}" if noise else "")
    ax.set(xscale="log", yscale="log", xlabel="examples to target (E)", ylabel="steps to target (S)", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="best")
    save_figure(fig, path)
