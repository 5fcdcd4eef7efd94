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

from optlab.config.hydra_compat import yaml_text
from optlab.config.schema import GROUPS
from optlab.metrics import HPARAM_METRICS
from optlab.naming import command, path_word, relative
from optlab.store.files import write_csv, write_json

log = logging.getLogger("optlab")


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C, computed in C by the `crc32c` package.

    Without TensorFlow, tensorboard's event writer computes it byte by byte in Python, ~30 µs
    an event under the GIL: a few percent of a small model's training time. Same output
    (tests/unit/test_files_and_logs.py checks it against tensorboard's own function).
    """
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
record_writer.masked_crc32c = masked_crc32c


class EventFile:
    """The run's event file, open for as long as its writer: what tensorboard's `RecordWriter`
    writes each record to.

    Without TensorFlow, tensorboard's file stub opens, appends to and closes the file for every
    record (a member of a vectorized group writes about fifty: scripts/bench_bookkeeping.py, row
    `events`, times fifty and the close both ways). This one keeps it
    open and buffered; the writer's thread flushes it every `flush_secs` as before, and `RunLog`
    at the end of every epoch, so that what a killed run leaves on disk is every finished epoch's
    curves, as before. Written by hand: tensorboard offers no other file for a local folder."""

    def __init__(self, path: str):
        self.file, self.closed = open(path, "ab"), False

    def write(self, data: bytes) -> None:
        self.file.write(data)

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()
        self.closed = True


def event_writer(run_dir: Path) -> SummaryWriter:
    """TensorBoard's writer for a run's folder, its records going to an `EventFile`. The
    writer has written and flushed the file's first record when it returns, so its thread is
    idle as the file changes hands."""
    writer = SummaryWriter(log_dir=str(run_dir), max_queue=1000, flush_secs=5)
    records = writer.file_writer.event_writer._async_writer._writer  # tensorboard's RecordWriter
    records._writer = EventFile(records._writer.filename)
    return writer


def progress(items: Iterable[int], desc: str = "train", unit: str = "epoch") -> Iterable[int]:
    """A progress bar on a terminal; plain lines (from `RunLog.epoch`) otherwise."""
    if not sys.stdout.isatty():
        return items
    return tqdm(items, desc=desc, unit=unit, dynamic_ncols=True, leave=True)


class RunLog:
    def __init__(self, run_dir: Path, config: dict, history: list[dict] | None = None,
                 logger: logging.Logger = log):
        """`config`: the run's config as plain data (`OmegaConf.to_container`), shown as text."""
        self.run_dir, self.logger = run_dir, logger
        self.writer = event_writer(run_dir)
        self.writer.add_text("config", f"```\n{yaml_text(config)}```")  # OmegaConf.to_yaml's text, sooner
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
        self.writer.flush()  # the epoch's steps and curves on disk
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


# The values every run reports to HParams, beside each key its own command line set.
MAIN_KEYS = ("optimizer.lr", "batch_size", "epochs", "seed", "dropout", "batchnorm", "l2", "shuffle")


def choices(cfg: DictConfig) -> dict[str, str]:
    """The option picked in each config group (`optimizer: adam`), as Hydra recorded it."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        picked = OmegaConf.to_container(HydraConfig.get().runtime.choices)  # plain: one pass, not one a group
        return {g: str(picked[g]) for g in (*GROUPS, "experiment") if picked.get(g) is not None}
    return {g: cfg[g]._target_.rsplit(".", 1)[-1] for g in ("model", "optimizer") if "_target_" in cfg[g]}


def overridden_keys() -> list[str]:
    """The keys this run's command line (or sweep) set, e.g. ['optimizer', 'batch_size']."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return [o.partition("=")[0].lstrip("+~") for o in HydraConfig.get().overrides.task]


def hparams(cfg: DictConfig) -> dict[str, object]:
    """Group choices, the main values and every overridden key, as HParams values.

    Values keep one type per key across runs (TensorBoard drops a key whose values mix
    types): `batch_size` is always text, since it may be `full`; lists and booleans become text.
    """
    values: dict[str, object] = dict(choices(cfg))
    for key in [*MAIN_KEYS, *overridden_keys()]:
        if key in values or key in GROUPS:
            continue
        value = OmegaConf.select(cfg, key, default=None)
        if value is None or isinstance(value, DictConfig):
            continue
        if isinstance(value, bool):  # torch would record True as 1.0
            value = str(value).lower()
        elif key == "batch_size" or not isinstance(value, (int, float, str)):
            value = str(OmegaConf.to_container(value) if OmegaConf.is_config(value) else value)
        values[key] = value
    return values
