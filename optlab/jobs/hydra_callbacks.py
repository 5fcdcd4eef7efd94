"""optlab's Hydra callbacks (conf/config.yaml `hydra.callbacks`): the Guard readies a single
run's folder before Hydra writes into it; the sweep callback writes a sweep's summary."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

from optlab.analysis.summary import summarize
from optlab.config import hydra_compat
from optlab.config.checks import validate
from optlab.errors import Refused
from optlab.jobs.dispatch import unready
from optlab.store.files import unwritable
from optlab.store.folder import check_resumable, prepare, take_back


class Guard(Callback):
    """A single run's config is checked and its folder made ready before Hydra writes into it:
    planned (skip, resume or train, an earlier attempt archived), its `.hydra/` record and its
    log file written here, so that a folder that cannot take them is taken back whole. A resumed
    or skipped run keeps its `.hydra/` as it is, unless allowed changes make a new config to
    record. `resume` and `allow_changes` are the command line's `resume=` and
    `resume.allow_changes=`, which the CLI passes as this callback's own config keys."""

    def __init__(self, resume: str | None = None, allow_changes: bool = False):
        self.resume, self.allow_changes = Path(resume) if resume else None, allow_changes

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        run_dir = None
        try:
            with hydra_compat.as_job(config):
                validate(config)
                run_dir = Path(config.hydra.run.dir)
                action = prepare(run_dir, config, self.resume)
                changes = action == "resume" and check_resumable(run_dir, config, self.allow_changes)
                if action == "train" or changes:  # written here, where a folder that cannot take them is taken back
                    output_dir = Path(os.path.abspath(str(config.hydra.run.dir)))
                    hydra_compat.save_job_files(config, output_dir)
                    logging.FileHandler(output_dir / f"{config.hydra.job.name}.log").close()  # Hydra's log, opened once
        except Exception as error:  # Hydra would only warn, and run the job unchecked
            if run_dir is not None:
                take_back(run_dir)  # what this attempt wrote goes, an earlier attempt comes back
            where = run_dir or "the run folder"
            mistake = unwritable(error, where) or (unready(error, where) if isinstance(error, OSError) else error)
            raise Refused(mistake) from error
        with read_write(config.hydra), open_dict(config.hydra):  # written here, not again by Hydra
            config.hydra.output_subdir = None


class SweepCallback(Callback):
    """When a sweep ends: its summary table, CSV and figures (optlab/analysis/summary.py)."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        summary = config.get("summary") or {}
        sweep_dir = Path(config.hydra.sweep.dir)
        summarize([sweep_dir], sweep_dir, summary.get("metric", "best_val_acc"), summary.get("x", "epoch"))
