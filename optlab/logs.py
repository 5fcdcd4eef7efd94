"""Where a run's numbers go: TensorBoard events, history.csv, metrics.json and the console.

Per-step values are collected during an epoch and written at its end, one event per step
carrying all step tags, so logging costs the training loop almost nothing.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import crc32c
from omegaconf import DictConfig, OmegaConf
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer import record_writer
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary
from tqdm import tqdm

from optlab.files import write_csv, write_json
from optlab.naming import command, path_word, relative

log = logging.getLogger("optlab")


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C, computed in C by the `crc32c` package.

    Without TensorFlow, tensorboard's event writer computes it byte by byte in Python, ~30 µs
    an event under the GIL: a few percent of a small model's training time. Same output
    (tests/test_logs.py checks it against tensorboard's own function).
    """
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


record_writer.masked_crc32c = masked_crc32c

# the final metrics a run reports to HParams (network runs and surface runs)
HPARAM_METRICS = (
    "best_val_acc", "best_val_loss", "test_acc", "epochs_run", "wall_time_s",
    "final_loss", "final_distance", "rate_measured", "noise_b_simple", "steps_to_target",
)


def progress(items: Iterable[int], desc: str = "train", unit: str = "epoch") -> Iterable[int]:
    """A progress bar on a terminal; plain lines (from `RunLog.epoch`) otherwise."""
    if not sys.stdout.isatty():
        return items
    return tqdm(items, desc=desc, unit=unit, dynamic_ncols=True, leave=True)


class RunLog:
    def __init__(self, run_dir: Path, cfg: DictConfig, history: list[dict] | None = None,
                 logger: logging.Logger = log):
        self.run_dir, self.logger = run_dir, logger
        self.writer = SummaryWriter(log_dir=str(run_dir), max_queue=1000, flush_secs=5)
        self.writer.add_text("config", f"```\n{OmegaConf.to_yaml(cfg)}```")
        self.history: list[dict] = [] if history is None else history  # a resumed run's rows so far
        self.bar: tqdm | None = None

    def hparams(self, values: dict, metrics: dict) -> None:
        """This run's row of TensorBoard's HParams table: `values`, and the numeric entries of
        `metrics` named in HPARAM_METRICS as `final/<name>` scalars.

        Written through the run's own event file: SummaryWriter.add_hparams would open a new
        timestamped subfolder, a run of its own (Lightning's logger does the same).
        """
        final = {
            f"final/{k}": float(metrics[k])
            for k in HPARAM_METRICS
            if isinstance(metrics.get(k), (int, float)) and math.isfinite(metrics[k])
        }
        for summary in hparams_summary(values, {k: 0.0 for k in final}):
            self.writer.file_writer.add_summary(summary)
        self._scalars(0, final, time.time())

    def _scalars(self, step: int, values: dict[str, float], walltime: float) -> None:
        summary = Summary(value=[Summary.Value(tag=k, simple_value=v) for k, v in values.items()])
        self.writer.file_writer.add_summary(summary, step, walltime)

    def steps(self, first: int, columns: dict[str, list[float | None]], times: list[float]) -> None:
        """Per-step values of one epoch: `columns` maps a tag to its value at each step (None
        where it was not measured)."""
        for i, walltime in enumerate(times):
            self._scalars(first + i, {tag: v[i] for tag, v in columns.items() if v[i] is not None}, walltime)

    def epoch(self, row: dict, extra: dict[str, float] | None = None) -> None:
        """One epoch's row of history.csv, its curves (x = epoch) and the console line."""
        self.history.append(row)
        curves = {f"{s}/{m}": row[f"{s}_{m}"] for s in ("train", "val") for m in ("loss", "acc")}
        self._scalars(row["epoch"], {**curves, **(extra or {})}, time.time())
        line = "epoch %d  train loss %.4f acc %.4f  val loss %.4f acc %.4f  lr %.4g" % tuple(
            row[k] for k in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr"))
        if self.bar is None:
            self.logger.info("%s", line)
            return
        self.bar.set_postfix(loss=f"{row['train_loss']:.4f}", val_acc=f"{row['val_acc']:.4f}")
        record = self.logger.makeRecord(self.logger.name, logging.INFO, __file__, 0, "%s", (line,), None)
        for handler in logging.getLogger().handlers:  # the log file too: the bar shows only on the terminal
            if isinstance(handler, logging.FileHandler) and record.levelno >= handler.level:
                handler.handle(record)

    def finish(self, metrics: dict, summary: str, hparams: dict) -> None:
        """Write history.csv (if there are epochs), metrics.json and the run's HParams entry;
        print the summary, and the record's hint on what to try next, if it has one."""
        if self.bar is not None:
            self.bar.close()
        if self.history:
            write_csv(self.run_dir / "history.csv", self.history)
        write_json(self.run_dir / "metrics.json", metrics)
        self.hparams({**hparams, "status": metrics["status"]}, metrics)
        self.writer.close()
        where = relative(self.run_dir)
        self.logger.info("%s", summary)
        if metrics.get("hint"):
            self.logger.info("hint: %s", metrics["hint"])
        self.logger.info("run folder: %s", where)
        self.logger.info("curves:     %s", command("tensorboard", "--logdir", path_word(where)))
