"""What one `optlab train`, `tune` or `lr-find` asked for beyond its config, and what came of its
jobs: one value, made by the CLI for each command and handed to Hydra as the task function's
`command` attribute. Hydra passes the task function to optlab's sweeper and launcher
(hydra_plugins/), so each reads the command it serves from there; nothing is process-wide."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig


@dataclass
class Command:
    words: list[str] = field(default_factory=list)  # the command line as Hydra gets it: optlab train -m ...
    resume: Path | None = None  # `resume=<folder>`: the run to continue
    search: list[str] = field(default_factory=list)  # `optlab tune`'s search expressions (jobs/tune/space.py)
    started: bool = False  # a job has begun: an error from now on is no composition error
    readied: Path | None = None  # a single run's folder, once its job began
    study_dir: Path | None = None  # `optlab tune`'s study folder, once its job began (never taken back)
    sweep_dir: Path | None = None  # a sweep's folder, once the sweeper resolved it
    planned: dict[str, str] = field(default_factory=dict)  # sweep job folder → `plan`'s word for it
    failed: list[str] = field(default_factory=list)  # sweep jobs that failed, by folder
    discard: Path | None = None  # a folder this command made and must not leave: a study whose start was refused


def of(task_function: Callable[[DictConfig], object] | None) -> Command:
    """The command a Hydra task function serves; another Hydra app's task function serves none,
    and gets a blank one."""
    return getattr(task_function, "command", None) or Command()
