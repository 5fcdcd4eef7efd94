"""Comparing runs: the summary that ends every sweep, and `optlab compare` across sweeps.

A run is a folder with a `metrics.json` (and Hydra's `.hydra/`). Runs whose resolved configs
differ only in `seed` form one configuration: the table shows its mean ± std over seeds and n,
the plots its mean curve with a shaded band. Each configuration is labelled by the overrides
that set it apart from the others. Written into the output folder:

- `summary.csv` and `summary.md`: one row per configuration, best first by `summary.metric`;
- `curves.png`: training and validation curves overlaid, against `summary.x`;
- `<metric>_vs_<key>.png`: the ranking metric against each swept key;
- `trajectories.png`: for surface runs, every path on one contour plot;
- `critical_batch.{json,png}`: for runs that reached a target at 3 or more batch sizes, the
  critical batch size fitted to their steps and examples (optlab/critical.py).

`SweepCallback` (conf/config.yaml, hydra.callbacks) writes it when a multirun ends.
"""

from __future__ import annotations

import csv
import html
import json
import math
import re
import statistics
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from optlab import allowlist
from optlab.config import METRICS, UsageError, flatten
from optlab.files import atomic_write, load_yaml, write_csv
from optlab.jobs import read_metrics

# lower is better for these; higher for the rest
MINIMIZED = {
    "best_val_loss", "test_loss", "final_train_loss", "final_val_loss", "generalization_gap", "epoch_time_s",
    "wall_time_s", "final_loss", "final_distance", "rate_measured", "steps_to_target", "examples_to_target",
    "time_to_target",
}
# what a summary ranks by when no run has the metric asked for: the first of these its runs
# have (surface runs have no accuracy); never a cost such as wall_time_s
QUALITY = ("best_val_acc", "test_acc", "best_val_loss", "test_loss", "final_loss", "final_distance")
# columns of the table, after the ranking metric, where some run has them
COLUMNS = (
    "best_val_acc", "best_val_loss", "test_acc", "generalization_gap", "epoch_time_s", "epochs_run",
    "final_loss", "final_distance", "rate_measured", "lambda_max", "sharpness", "noise_b_simple",
    "steps_to_target", "examples_to_target",
)
CURVE_X = {"epoch": "epoch", "step": "step", "examples": "examples", "time": "elapsed_s"}


class SweepCallback(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        summary = config.get("summary") or {}
        sweep_dir = Path(config.hydra.sweep.dir)
        summarize([sweep_dir], sweep_dir, summary.get("metric", "best_val_acc"), summary.get("x", "epoch"))


@dataclass
class Run:
    path: Path
    metrics: dict
    overrides: dict[str, str]  # key → value as typed on the command line
    config: dict  # flattened resolved config: "optimizer.lr" → 0.1

    def read_csv(self, name: str) -> list[dict[str, float]]:
        """A table the run wrote (history.csv, trajectory.csv), every cell a number: one that is
        none (a damaged file) reads NaN, a gap in the curve; a file that does not read is empty."""
        try:
            with open(self.path / name, newline="") as f:
                return [{k: _float(v) for k, v in row.items() if k is not None} for row in csv.DictReader(f)]
        except (OSError, UnicodeDecodeError, csv.Error):
            return []


@dataclass
class Group:
    """The runs of one configuration (differing in seed only)."""

    label: str
    runs: list[Run]
    params: dict[str, str] = field(default_factory=dict)  # the swept keys' values

    def values(self, metric: str) -> list[float]:
        """The runs' finite values of `metric` (a record's number beyond 1e30, or not a number, is none)."""
        out = [_float(r.metrics.get(metric)) for r in self.runs if isinstance(r.metrics.get(metric), (int, float))]
        return [v for v in out if math.isfinite(v)]

    def mean(self, metric: str) -> float | None:
        values = self.values(metric)
        return statistics.fmean(values) if values else None

    def std(self, metric: str) -> float | None:
        values = self.values(metric)
        return statistics.stdev(values) if len(values) > 1 else 0.0 if values else None

    @property
    def status(self) -> str:
        counts: dict[str, int] = {}
        for run in self.runs:
            status = str(run.metrics.get("status", "unknown"))
            counts[status] = counts.get(status, 0) + 1
        return ", ".join(f"{n} {s}" for s, n in counts.items())

    @property
    def finished(self) -> bool:
        """Whether every run of the configuration completed (none diverged, failed, or stopped)."""
        return all(run.metrics.get("status") == "completed" for run in self.runs)


def run_folders(root: Path) -> list[Path]:
    """The folders at or below `root` with a record (metrics.json); hidden ones, like earlier
    attempts in `.previous/`, left out."""
    return [file.parent for file in sorted(root.rglob("metrics.json"))
            if not any(part.startswith(".") for part in file.parent.relative_to(root).parts)]


def find_runs(paths: list[Path]) -> list[Run]:
    """Every run at or below `paths` (see `run_folders`), each once."""
    found: dict[Path, Run] = {}
    for folder in (folder for root in paths for folder in run_folders(root)):
        if folder not in found and (run := _load(folder)) is not None:
            found[folder] = run
    return list(found.values())


def _load(path: Path) -> Run | None:
    metrics = read_metrics(path)  # a damaged record stops the summary, naming its file
    files = {name: path / ".hydra" / f"{name}.yaml" for name in ("config", "overrides")}
    if not all(file.is_file() for file in files.values()):  # a half-made folder (no .hydra): not a run to compare
        return None
    config, overrides = (load_yaml(file) for file in files.values())  # a damaged one stops the summary
    if not isinstance(config, DictConfig):
        raise UsageError(f"cannot read {files['config']}: it is not a run's config")
    overrides = OmegaConf.to_container(overrides)  # `${...}` as typed
    if not isinstance(overrides, list):
        raise UsageError(f"cannot read {files['overrides']}: not a list of key=value overrides")
    allowlist.check_file(config, files["config"])  # a shared folder's config is data, never code
    pairs = (str(o).partition("=") for o in overrides)
    try:
        plain = OmegaConf.to_container(config, resolve=True)
    except Exception:  # an interpolation that only Hydra could resolve
        plain = OmegaConf.to_container(config)
    return Run(path, metrics, {k.lstrip("+~"): v for k, _, v in pairs}, flatten(plain))


def group_runs(runs: list[Run]) -> list[Group]:
    """Configurations: runs whose configs are equal but for the seed, labelled by the overrides
    that differ between runs (a label shared by two configurations gets its folder added)."""
    ignore = ("seed", "rerun")
    keys = {k for run in runs for k in run.overrides if k not in ignore}
    swept = sorted(k for k in keys if len({run.overrides.get(k) for run in runs}) > 1)
    groups: dict[str, Group] = {}
    for run in runs:
        identity = json.dumps(
            {k: v for k, v in run.config.items() if k not in ignore and not k.startswith("summary.")},
            sort_keys=True, default=str,
        )
        if identity not in groups:
            params = {k: run.overrides[k] for k in swept if k in run.overrides}
            label = " ".join(f"{k}={v}" for k, v in params.items()) or "defaults"
            groups[identity] = Group(label, [], params)
        groups[identity].runs.append(run)
    labels = [g.label for g in groups.values()]
    for group in groups.values():
        if labels.count(group.label) > 1:
            group.label += f" [{group.runs[0].path.parent}]"
    return list(groups.values())


def rank(groups: list[Group], metric: str) -> list[Group]:
    """Best first by the mean of `metric`, configurations whose every run completed before the
    others (a diverged run's numbers never rank it above a finished one); those without
    `metric` last."""
    sign = 1 if metric in MINIMIZED else -1
    return sorted(groups, key=lambda g: (g.mean(metric) is None, not g.finished, sign * (g.mean(metric) or 0)))


def ranking(groups: list[Group], asked: str) -> tuple[str | None, str]:
    """The metric to rank by, and the words that say so: `asked` where a run has it, else the
    first measure of quality (QUALITY) the runs have, else none (the order is the folders')."""
    metric = next((m for m in (asked, *QUALITY) if any(g.values(m) for g in groups)), None)
    if metric is None:
        return None, f"not ranked: no run has {asked} or any of {', '.join(QUALITY)}"
    order = f"ranked by {metric}, {'lower' if metric in MINIMIZED else 'higher'} is better"
    return metric, order + ("" if metric == asked else f" (no run has {asked})") + ", unfinished configurations last"


def _cell(group: Group, metric: str) -> str:
    mean, std = group.mean(metric), group.std(metric)
    if mean is None:
        return "—"
    if len(group.values(metric)) == 1 or std == 0:
        return f"{mean:.4g}"
    return f"{mean:.4g} ± {std:.2g}"


def table(groups: list[Group], metric: str | None) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the summary, ranked by `metric` (None: in the order given)."""
    columns = [metric] * bool(metric) + [c for c in COLUMNS if c != metric and any(g.values(c) for g in groups)]
    header = ["#", "configuration", "n", "status", *columns]
    rows = [
        [str(i), g.label, str(len(g.runs)), g.status, *(_cell(g, c) for c in columns)]
        for i, g in enumerate(rank(groups, metric) if metric else groups, start=1)
    ]
    return header, rows


def md_text(text) -> str:
    """`text` as literal Markdown inline text (a table cell, a heading): `&`, `<` and `>` as
    HTML entities, Markdown's inline marks and the table's `|` escaped by a backslash, and
    line breaks as spaces."""
    escaped = re.sub(r"([\\`*_\[\]|~])", r"\\\1", html.escape(str(text), quote=False))
    return " ".join(escaped.splitlines())


def md_code(text) -> str:
    """`text` as a Markdown code span, shown as it is: fenced by more backticks than it holds
    in a row, on one line."""
    line = " ".join(str(text).splitlines())
    fence = "`" * (max(map(len, re.findall("`+", line)), default=0) + 1)
    return f"{fence} {line} {fence}"


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summarize(paths: list[Path], out: Path, metric: str = "best_val_acc", x: str = "epoch") -> list[Path]:
    """Compare every run under `paths`; write the summary files into `out`; print the table."""
    runs = find_runs(paths)
    if not runs:
        return []
    groups = group_runs(runs)
    metric, order = ranking(groups, metric)  # e.g. final_loss where best_val_acc was asked of surface runs
    header, rows = table(groups, metric)
    text = format_table(header, rows)
    print(f"\n{len(runs)} runs in {len(groups)} configurations (mean ± std over seeds), {order}:")
    print(text)

    ranked = rank(groups, metric) if metric else groups
    swept = sorted({k for g in groups for k in g.params})
    records = []
    for g in ranked:
        record = {"configuration": g.label, "n": len(g.runs), "status": g.status}
        record.update({k: g.params.get(k, "") for k in swept})
        for m in METRICS:
            if any(grp.values(m) for grp in groups):
                record[f"{m}_mean"], record[f"{m}_std"] = g.mean(m), g.std(m)
        records.append(record)
    write_csv(out / "summary.csv", records)
    markdown = "\n".join(
        ["| " + " | ".join(map(md_text, header)) + " |", "|" + "---|" * len(header)]
        + ["| " + " | ".join(map(md_text, r)) + " |" for r in rows]
    )
    atomic_write(out / "summary.md",
                 lambda f: f.write(f"# {len(runs)} runs, {md_text(order)}\n\n{markdown}\n".encode()))

    written = [out / "summary.csv", out / "summary.md"]
    written += plot_curves(groups, out / "curves.png", x)
    written += [plot_metric(groups, metric, key, out / f"{metric}_vs_{key}.png") for key in swept if metric]
    written += overlay_trajectories(groups, out)
    from optlab import critical  # numpy: only once a summary is written

    written += critical.summarize(runs, out)
    print(f"summary written to {out}: " + ", ".join(p.name for p in written))
    return written


# --- plots ---------------------------------------------------------------------------------

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
    from optlab.plots import pyplot, save_figure

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
    from optlab.plots import pyplot, save_figure

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

    from optlab.config import construct
    from optlab.plots import save_figure
    from optlab.surfaces import plot_paths  # imports torch: only for surface runs

    by_surface: dict[str, list[Group]] = {}
    for g in surface_groups:
        surface = OmegaConf.load(g.runs[0].path / ".hydra" / "config.yaml").surface
        by_surface.setdefault(OmegaConf.to_yaml(surface), []).append(g)
    written = []
    for i, (spec, members) in enumerate(by_surface.items()):
        surface = construct("surface", OmegaConf.create(spec), (), _convert_="all")  # a folder's config: checked
        paths = {
            " ".join(t for t in g.label.split() if not t.startswith("surface=")) or g.label: np.array([[row["x"], row["y"]] for row in g.runs[0].read_csv("trajectory.csv")])
            for g in members
        }
        name = type(surface).__name__.lower()
        target = out / ("trajectories.png" if len(by_surface) == 1 else f"trajectories_{i}_{name}.png")
        save_figure(plot_paths(surface, paths, f"{name}: {len(paths)} runs"), target)
        written.append(target)
    return written


def _number(text):
    """A CSV or override value as a float where it is one, else as it was. Values a plot cannot
    place (NaN, ±inf, or beyond 1e30: a diverged run's last steps) become NaN."""
    try:
        number = float(text)
    except (TypeError, ValueError, OverflowError):  # an integer past float's range: NaN, as beyond 1e30
        return math.nan if isinstance(text, int) else text
    return number if abs(number) < 1e30 else math.nan


def _float(value) -> float:
    """`_number(value)`, NaN where that is no number."""
    number = _number(value)
    return number if isinstance(number, float) else math.nan


def sort_key(value):
    """Numbers by value before text: 8, 16, 128, full."""
    number = _number(value)
    return (0, number, "") if isinstance(number, float) else (1, 0.0, str(value))
