"""What happens to a run folder, decided before anything is written into it.

Hydra writes `.hydra/` and opens `train.log` in a job's folder before the job starts, so every
decision that could touch an earlier record is made earlier still: by the Guard for a single
run (optlab/jobs/hydra_callbacks.py), and by optlab's sweeper for every job of a sweep before
the first one is launched (optlab/jobs/prepare.py).

- `plan`: skip a run finished with this very config, resume one interrupted with it, or else
  train afresh, with any earlier attempt moved whole into `.previous/<time>/` (`archive`);
- `take_back`: undo an attempt a user's mistake stopped before it saved anything to keep;
- `record_failure`: a failed job's record, never written over a record of its own.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import traceback
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from optlab.config.identity import config_changes, config_hash
from optlab.errors import UsageError
from optlab.store.files import (
    atomic_write,
    load_checkpoint,
    load_yaml,
    read_json,
    refuse_links,
    stamped,
    write_json,
)

log = logging.getLogger("optlab")


FINISHED = ("completed", "diverged")  # outcomes a re-run would only repeat


CHECKPOINTS = ("last.pt", "best.pt", "init.pt")  # what a resumed run reads


def read_metrics(run_dir: Path) -> dict | None:
    """A run's record; None where it has none. A damaged one is a UsageError naming it."""
    path = run_dir / "metrics.json"
    return read_json(path) if path.exists() else None


def plan(run_dir: Path, cfg: DictConfig, resume: Path | None = None) -> str:
    """`resume`, `skip` or `train`: what the job that is about to run in `run_dir` does
    (`resume`: the folder the command line asked to continue, if any)."""
    if resume is not None and run_dir.resolve() == resume.resolve():
        return "resume"
    record = read_metrics(run_dir)
    if record and record.get("config_hash") == config_hash(cfg):  # a new folder skips the hash (~4 ms)
        if record.get("status") == "interrupted":
            return "resume"
        if record.get("status") in FINISHED and not cfg.rerun:
            return "skip"
    elif record is None and killed(run_dir, cfg):
        return "resume"
    return "train"


def resumes_after(run_dir: Path) -> int | None:
    """The epoch a resumed run goes on after, as its last.pt says (None where that does not
    load: such runs, grouped, fall back to running alone, where each fails in one line)."""
    try:
        return load_checkpoint(run_dir / "checkpoints" / "last.pt").get("epoch")
    except UsageError:
        return None


def killed(run_dir: Path, cfg: DictConfig) -> bool:
    """Whether `run_dir` holds this very run, killed (`kill -9`, a lost node) before it wrote a
    record, with checkpoints it can go on from: its `.hydra/config.yaml` hashes as `cfg` does
    and every file a resume reads loads."""
    if not (run_dir / "checkpoints" / "last.pt").is_file():  # a new folder: no reading
        return False
    try:
        saved = load_yaml(run_dir / ".hydra" / "config.yaml", "")
        if not isinstance(saved, DictConfig) or config_hash(saved) != config_hash(cfg):
            return False
        for name in CHECKPOINTS:
            load_checkpoint(run_dir / "checkpoints" / name)
    except (ValueError, OmegaConfBaseException):  # damaged: trained afresh, the attempt kept in .previous/
        return False
    return True


def prepare(run_dir: Path, cfg: DictConfig, resume: Path | None = None) -> str:
    """Plan the job in `run_dir` and make its folder ready for Hydra to write into."""
    refuse_links(run_dir)  # before anything in it is read, moved or written
    action = plan(run_dir, cfg, resume)
    if action == "train":
        archived = archive(run_dir)
        if archived:
            log.info("an earlier attempt in %s moved to %s", run_dir, archived)
    elif action == "skip":
        log.info("skipped: %s already %s with this config (rerun=true trains it again)",
                 run_dir, read_metrics(run_dir)["status"])
    return action


def archive(run_dir: Path) -> Path | None:
    """Move everything an earlier attempt left in `run_dir` into `.previous/<time>/` (`-2`,
    `-3`, ... when that exists), so that a new attempt, or its failure, overwrites nothing and
    TensorBoard shows no duplicated curves."""
    old = [p for p in run_dir.iterdir() if p.name != ".previous"] if run_dir.is_dir() else []
    if not old:
        return None
    for target in stamped(run_dir / ".previous"):
        try:
            target.mkdir(parents=True)  # fails if it exists: two archives never share a name
            break
        except FileExistsError:
            continue
    for path in old:
        path.rename(target / path.name)
    return target


def check_resumable(run_dir: Path, cfg: DictConfig, allow_changes: bool = False) -> list[str]:
    """Refuse, in one line naming the file or the changes, a resume that cannot continue
    exactly: the config changed (unless allowed) or a checkpoint does not load. Returns the
    changes that were allowed."""
    saved = load_yaml(run_dir / ".hydra" / "config.yaml", "resume: ")
    task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    changes = config_changes(saved, task)
    if changes and not allow_changes:
        raise UsageError(f"resume: the config differs from the run's in {'; '.join(changes)} "
                         f"(resume.allow_changes=true resumes anyway)")
    for name in CHECKPOINTS:
        try:
            load_checkpoint(run_dir / "checkpoints" / name)
        except UsageError as error:
            raise UsageError(f"resume: {error}") from None
    return changes


def take_back(run_dir: Path, keep_fresh: bool = False) -> bool:
    """Undo a new attempt that a user's mistake stopped (a data file that does not read, a full
    disk): remove everything it wrote and put back the earlier attempt that `archive` moved
    aside, so the mistake leaves no trace (a finished run is skipped again next time). Without
    an earlier attempt the folder goes too, unless `keep_fresh` (a sweep keeps it for its
    failure record). Nothing is done once the attempt saved its record or a state to continue
    from (metrics.json, checkpoints/last.pt): a finished, interrupted, killed or resumed run is
    its own record. Returns whether an earlier attempt is back."""
    previous = run_dir / ".previous"
    archives = list(previous.iterdir()) if previous.is_dir() else []
    kept = (run_dir / "metrics.json").exists() or (run_dir / "checkpoints" / "last.pt").exists()
    if not run_dir.is_dir() or kept or keep_fresh and not archives:
        return False
    for path in run_dir.iterdir():
        if path == previous:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    if archives:
        latest = max(archives, key=lambda p: p.stat().st_mtime_ns)  # the one made for this attempt
        for path in latest.iterdir():
            path.rename(run_dir / path.name)
        latest.rmdir()
        log.info("taken back: the earlier attempt in %s is back from %s", run_dir, latest)
    for folder in (previous, run_dir):  # each only if nothing else is there
        with contextlib.suppress(OSError):
            folder.rmdir()
    return bool(archives)


def record_failure(run_dir: Path, cfg: DictConfig, error: BaseException) -> None:
    """`error.txt` with the traceback, and `metrics.json` with `status: failed` unless the
    folder already holds a record of its own (an interrupted run whose resume failed keeps
    its record, so that it can still be resumed)."""
    atomic_write(run_dir / "error.txt", lambda f: f.write("".join(traceback.format_exception(error)).encode()))
    if (read_metrics(run_dir) or {}).get("status") in (None, "failed"):
        write_json(run_dir / "metrics.json",
                   {"status": "failed", "error": f"{type(error).__name__}: {error}", "config_hash": config_hash(cfg)})
