"""A summary's figures: curves of every group (mean ± std over seeds), a metric against the
swept value, and the paths of surface runs overlaid.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from omegaconf import OmegaConf

from optlab.analysis.runs import Group, _number, sort_key
from optlab.metrics import CURVE_X
from optlab.store.files import load_yaml


def _band(curves: list[list[dict]], key: str):
    """Mean and std over seeds of one history column, aligned by row (epoch or step)."""
    import numpy as np

    length = max(len(c) for c in curves)
    values = np.full((len(curves), length), np.nan)
    for i, curve in enumerate(curves):
        values[i, : len(curve)] = [row.get(key, np.nan) for row in curve]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns of diverged runs
        return np.nanmean(values, axis=0), np.nanstd(values, axis=0)


def plot_curves(groups: list[Group], path: Path, x: str) -> list[Path]:
    """Curves of every configuration, mean over seeds with a ±1 std band."""
    from optlab.store.plots import pyplot, save_figure

    networks = [g for g in groups if g.runs[0].read_csv("history.csv")]
    surfaces = [g for g in groups if g.runs[0].read_csv("trajectory.csv")]
    if networks:
        file, panels, x_key = "history.csv", ("train_loss", "val_loss", "val_acc"), CURVE_X[x]
        chosen = networks
    elif surfaces:
        file, panels, x_key, x = "trajectory.csv", ("loss", "distance"), "step", "step"
        chosen = surfaces
    else:
        return []
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2), layout="constrained")
    for group in chosen:
        curves = [c for c in (r.read_csv(file) for r in group.runs) if c]
        xs = _band(curves, x_key)[0]
        for ax, panel in zip(axes, panels):
            mean, std = _band(curves, panel)
            (line,) = ax.plot(xs, mean, lw=1.4, label=group.label)
            if len(curves) > 1:
                ax.fill_between(xs, mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)
    for ax, panel in zip(axes, panels):
        ax.set(xlabel={"elapsed_s": "wall time (s)"}.get(x_key, x_key), ylabel=panel, title=panel)
        if panel in ("loss", "distance", "train_loss"):
            ax.set_yscale("log")
        if x_key != "elapsed_s":
            ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="best")
    save_figure(fig, path)
    return [path]


def plot_metric(groups: list[Group], metric: str, key: str, path: Path) -> Path:
    """`metric` (mean ± std over seeds) against the values of one swept key; one line per
    combination of the other swept keys. Numbers spanning decades get a log axis."""
    from optlab.store.plots import pyplot, save_figure

    plt = pyplot()
    values = sorted({g.params.get(key) for g in groups if key in g.params}, key=sort_key)
    numeric = all(isinstance(_number(v), float) for v in values)
    lines: dict[str, list[Group]] = {}
    for g in groups:
        if key in g.params:
            rest = " ".join(f"{k}={v}" for k, v in g.params.items() if k != key)
            lines.setdefault(rest, []).append(g)
    fig, ax = plt.subplots(figsize=(6.4, 4.4), layout="constrained")
    for rest, members in lines.items():
        members = sorted(members, key=lambda g: sort_key(g.params[key]))
        points = [(g.params[key], g.mean(metric), g.std(metric)) for g in members if g.mean(metric) is not None]
        if not points:
            continue
        xs = [_number(p[0]) if numeric else values.index(p[0]) for p in points]
        ax.errorbar(xs, [p[1] for p in points], yerr=[p[2] for p in points], marker="o",
                    capsize=3, label=rest or None, linestyle="-" if numeric else "none")
    if numeric:
        positive = [float(v) for v in values if float(v) > 0]
        if len(positive) == len(values) and max(positive) / min(positive) >= 100:
            ax.set_xscale("log")
    else:
        ax.set_xticks(range(len(values)), values, rotation=30 if len(values) > 4 else 0)
    ax.set(xlabel=key, ylabel=metric, title=f"{metric} against {key}")
    ax.grid(alpha=0.3)
    if any(lines):
        ax.legend(fontsize=7, loc="best")
    save_figure(fig, path)
    return path


def overlay_trajectories(groups: list[Group], out: Path) -> list[Path]:
    """One contour plot per distinct surface with the path of every configuration on it."""
    surface_groups = [g for g in groups if (g.runs[0].path / "trajectory.csv").exists()
                      and "surface._target_" in g.runs[0].config]  # a surface run's path
    if not surface_groups:
        return []
    import numpy as np

    from optlab.config.allowlist import construct
    from optlab.store.plots import save_figure
    from optlab.surfaces import plot_paths  # imports torch: only for surface runs

    by_surface: dict[str, list[Group]] = {}
    for g in surface_groups:
        surface = load_yaml(g.runs[0].path / ".hydra" / "config.yaml").surface
        by_surface.setdefault(OmegaConf.to_yaml(surface), []).append(g)
    written = []
    for i, (spec, members) in enumerate(by_surface.items()):
        surface = construct("surface", OmegaConf.create(spec))  # a folder's config: checked
        paths = {
            " ".join(t for t in g.label.split() if not t.startswith("surface=")) or g.label: np.array([[row["x"], row["y"]] for row in g.runs[0].read_csv("trajectory.csv")])
            for g in members
        }
        name = type(surface).__name__.lower()
        target = out / ("trajectories.png" if len(by_surface) == 1 else f"trajectories_{i}_{name}.png")
        save_figure(plot_paths(surface, paths, f"{name}: {len(paths)} runs"), target)
        written.append(target)
    return written


def plot_population(lines: dict[int, list[tuple[int, dict]]], best: int, key: str, metric: str):
    """A population-based search at a glance: each member's `key` (left) and `metric` (right)
    per epoch along the lineage it ended on, thin; the best lineage thick, its changes of owner
    marked."""
    from optlab.store.plots import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    for number, rows in sorted(lines.items(), key=lambda item: item[0] == best):
        epochs = [row["epoch"] for _, row in rows]
        style = {"lw": 2.4, "color": "black", "zorder": 3, "label": f"trial {number} (best)"} if number == best \
            else {"lw": 0.9, "alpha": 0.55}
        for ax, column, steps in zip(axes, (key, metric), ("steps-post", "default")):
            ax.plot(epochs, [row[column] for _, row in rows], drawstyle=steps, **style)
        if number == best:
            moves = [row["epoch"] for _, row in rows if row.get("copied_from") is not None]
            for ax, column in zip(axes, (key, metric)):
                ax.plot(moves, [row[column] for _, row in rows if row["epoch"] in moves], "o", color="black", ms=5)
    for ax, column in zip(axes, (key, metric)):
        ax.set(xlabel="epoch", ylabel=column, title=f"{column} along each member's lineage")
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[1].set_yscale("log" if "loss" in metric else "linear")
    axes[1].legend(fontsize=8, loc="best")
    return fig
