"""Finished runs read back from their folders: every run folder below a path, its record and
config (refused if damaged or not data), and runs grouped by config across seeds.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from optlab.config import allowlist
from optlab.config.identity import flatten
from optlab.errors import UsageError, reason
from optlab.store.files import read_yaml
from optlab.store.folder import read_metrics


@dataclass
class RunFolder:
    """A finished run as its folder records it (a live run is optlab/training/record.py's `Run`)."""

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
    runs: list[RunFolder]
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


def find_runs(paths: list[Path]) -> list[RunFolder]:
    """Every run at or below `paths` (see `run_folders`), each once."""
    found: dict[Path, RunFolder] = {}
    for folder in (folder for root in paths for folder in run_folders(root)):
        if folder not in found and (run := _load(folder)) is not None:
            found[folder] = run
    return list(found.values())


def _load(path: Path) -> RunFolder | None:
    metrics = read_metrics(path)  # a damaged record stops the summary, naming its file
    files = {name: path / ".hydra" / f"{name}.yaml" for name in ("config", "overrides")}
    if not all(file.is_file() for file in files.values()):  # a half-made folder (no .hydra): not a run to compare
        return None
    config, overrides = (read_yaml(file) for file in files.values())  # a damaged one stops the summary
    if not isinstance(config, dict):
        raise UsageError(f"cannot read {files['config']}: it is not a run's config")
    if not isinstance(overrides, list):
        raise UsageError(f"cannot read {files['overrides']}: not a list of key=value overrides")
    try:
        text = json.dumps(config, default=str)
    except TypeError as error:  # a key that is no name (`!!binary ...: 1`)
        raise UsageError(f"cannot read {files['config']}: {reason(error)}") from None
    if "${" in text:  # interpolations (a run's config has none): checked, then resolved
        config = _resolved(OmegaConf.create(config), files["config"])
    else:
        allowlist.check_file(config, files["config"])  # a shared folder's config is data, never code
    pairs = (str(o).partition("=") for o in overrides)  # `${...}` as typed
    return RunFolder(path, metrics, {k.lstrip("+~"): v for k, _, v in pairs}, flatten(config))


def _resolved(config: DictConfig, file: Path) -> dict:
    allowlist.check_file(config, file)  # before anything resolves: as read, each value resolved
    try:
        return OmegaConf.to_container(config, resolve=True)
    except Exception:  # an interpolation that only Hydra could resolve
        return OmegaConf.to_container(config)


def group_runs(runs: list[RunFolder]) -> list[Group]:
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
