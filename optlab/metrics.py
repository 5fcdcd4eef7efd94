"""Every metric optlab records, in one table: its name, whether lower is better, and where it
shows. Every "is this better?" (early stopping, the best checkpoint, a summary's ranking, a
search's direction, a trial's score so far) and every list of metrics is read from here.

Imports nothing: the config layer and `--help` read it without torch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str  # as metrics.json (or history.csv, for an epoch's columns) records it
    lower_is_better: bool
    ranks: bool = True  # `summary.metric` / `optlab compare --metric` may rank by it
    column: bool = False  # a column of the summary table, where some run has it
    hparam: bool = False  # reported to TensorBoard's HParams dashboard
    tunes: bool = False  # `tune.metric` may search it: a run has it after every epoch
    quality: bool = False  # what a summary ranks by when no run has the metric asked for (first found)
    per_epoch: str | None = None  # the history.csv column it is read from after each epoch
    so_far: str | None = None  # how a search reduces that column after some epochs: "best" or "last"


TABLE = (
    Metric("best_val_acc", False, column=True, hparam=True, tunes=True, quality=True, per_epoch="val_acc",
           so_far="best"),
    Metric("best_val_loss", True, column=True, hparam=True, tunes=True, quality=True, per_epoch="val_loss",
           so_far="best"),
    Metric("test_acc", False, column=True, hparam=True, quality=True),
    Metric("test_loss", True, quality=True),
    Metric("final_train_loss", True, tunes=True, per_epoch="train_loss", so_far="last"),
    Metric("final_train_acc", False, tunes=True, per_epoch="train_acc", so_far="last"),
    Metric("final_val_loss", True, tunes=True, per_epoch="val_loss", so_far="last"),
    Metric("final_val_acc", False, tunes=True, per_epoch="val_acc", so_far="last"),
    Metric("generalization_gap", True, column=True),
    Metric("epoch_time_s", True, column=True),
    Metric("wall_time_s", True, hparam=True),
    Metric("epochs_run", False, column=True, hparam=True),
    Metric("final_loss", True, column=True, hparam=True, quality=True),
    Metric("final_distance", True, column=True, hparam=True, quality=True),
    Metric("rate_measured", True, column=True, hparam=True),
    Metric("lambda_max", True, column=True),
    Metric("trace", True),
    Metric("sharpness", True, column=True),
    Metric("condition_number", True),
    Metric("noise_b_simple", False, column=True, hparam=True),
    Metric("steps_to_target", True, column=True, hparam=True),
    Metric("examples_to_target", True, column=True),
    Metric("time_to_target", True),
    # what an epoch's row holds: early stopping and the best checkpoint watch these
    Metric("val_loss", True, ranks=False),
    Metric("val_acc", False, ranks=False),
)
BY_NAME = {m.name: m for m in TABLE}

METRICS = tuple(m.name for m in TABLE if m.ranks)  # what a summary can rank by
TUNE_METRICS = tuple(m.name for m in TABLE if m.tunes)  # what `optlab tune` can optimize
COLUMNS = tuple(m.name for m in TABLE if m.column)  # the summary table's columns, after the ranking metric
HPARAM_METRICS = tuple(m.name for m in TABLE if m.hparam)  # the final metrics a run reports to HParams
QUALITY = tuple(m.name for m in sorted(TABLE, key=lambda m: "acc" not in m.name) if m.quality)  # accuracy first
# what a summary's curves can be plotted against (`summary.x`), and the history.csv column each reads
CURVE_X = {"epoch": "epoch", "step": "step", "examples": "examples", "time": "elapsed_s"}


def lower_is_better(name: str) -> bool:
    return BY_NAME[name].lower_is_better


def direction(name: str) -> str:
    """Optuna's word for the metric: `minimize` or `maximize`."""
    return "minimize" if lower_is_better(name) else "maximize"


def so_far(name: str, history: list[dict], minimize: bool | None = None) -> float:
    """A per-epoch metric as it stands after the epochs of `history` (a search's intermediate
    value): the best of its column so far, or the last epoch's. Best is lowest when `minimize`
    (a search may set its own direction), else as the table says."""
    metric = BY_NAME[name]
    values = [row[metric.per_epoch] for row in history]
    if metric.so_far == "last":
        return values[-1]
    return min(values) if (metric.lower_is_better if minimize is None else minimize) else max(values)
