"""What happens to a run folder, decided before anything is written into it.

Hydra writes `.hydra/` and opens `train.log` in a job's folder before the job starts, so every
decision that could touch an earlier record is made earlier still: by `Guard.on_run_start` for
a single run, and by optlab's sweeper (hydra_plugins/optlab_sweeper) for every job of a sweep
before the first one is launched.

- `validate` (optlab/config.py): a mistake ends the command in one line and leaves no folder;
- `plan`: skip a run finished with this very config, resume one interrupted with it, or else
  train afresh, with any earlier attempt moved whole into `.previous/<time>/` (`archive`);
- `run`: the job itself, as the plan says;
- `take_back`: undo an attempt a user's mistake stopped before it saved anything to keep;
- `record_failure`: a failed job's record, never written over a record of its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from optlab.config import UsageError, flatten, targets, usage_error, validate
from optlab.files import (atomic_write, load_checkpoint, load_yaml, read_json, refuse_links, stamped, unwritable,
                          write_json)
from optlab.naming import command, override, relative

log = logging.getLogger("optlab")

FINISHED = ("completed", "diverged")  # outcomes a re-run would only repeat
CHECKPOINTS = ("last.pt", "best.pt", "init.pt")  # what a resumed run reads


@dataclass
class Command:
    """What this command (`optlab train`, `tune`, `lr-find`) asked for beyond its config, and
    what came of its jobs."""

    resume: Path | None = None  # `resume=<folder>`: the run to continue
    allow_changes: bool = False  # `resume.allow_changes=true`
    failed: list[str] = field(default_factory=list)  # sweep jobs that failed, by folder
    search: list[str] = field(default_factory=list)  # `optlab tune`'s search expressions (optlab/space.py)
    planned: dict[str, str] = field(default_factory=dict)  # sweep job folder → `plan`'s word for it
    started: bool = False  # a job has begun: an error from now on is no composition error
    words: list[str] = field(default_factory=list)  # the command line as Hydra gets it: optlab train -m ...
    readied: tuple[Path, DictConfig] | None = None  # a single run's folder and config, once the Guard readied it
    sweep_dir: Path | None = None  # a sweep's folder, once the sweeper resolved it
    discard: Path | None = None  # a folder this command made and must not leave: a study whose start was refused


current = Command()


def config_hash(cfg: DictConfig) -> str:
    """SHA-1 of the resolved config, less what does not change a run's record (`rerun`,
    `summary`, `vectorize`, `tune`) and the nodes of features it does not use, so that adding a
    feature leaves earlier runs' hashes as they were."""
    kept = [k for k in cfg if k not in ("rerun", "summary", "vectorize", "hydra", "tune") and _used(cfg, k)]
    plain = OmegaConf.to_container(OmegaConf.masked_copy(cfg, kept), resolve=True)
    return hashlib.sha1(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()


def _used(cfg: DictConfig, key: str) -> bool:
    """Whether a feature's node matters to this run: `lr_find` with `optimizer.lr=find`, `noise`
    when measured, `target` when set; every other node always."""
    node = cfg.get(key)
    if key in ("noise", "target") and node is None:
        return False
    if key == "lr_find":
        return OmegaConf.select(cfg, "optimizer.lr") == "find"
    if key == "noise":
        return bool(node.every or node.final)
    if key == "target":
        return bool(targets(node))
    return True


def read_metrics(run_dir: Path) -> dict | None:
    """A run's record; None where it has none. A damaged one is a UsageError naming it."""
    path = run_dir / "metrics.json"
    return read_json(path) if path.exists() else None


@contextlib.contextmanager
def as_job(cfg: DictConfig):
    """Within it, `${hydra:...}` in a job's config (`hydra` node included) resolves as in the
    job itself; Hydra sets that up only as the job starts."""
    previous = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(cfg)
    try:
        yield cfg
    finally:
        HydraConfig.instance().cfg = previous


def plan(run_dir: Path, cfg: DictConfig) -> str:
    """`resume`, `skip` or `train`: what the job that is about to run in `run_dir` does."""
    if current.resume is not None and run_dir.resolve() == current.resume.resolve():
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


def prepare(run_dir: Path, cfg: DictConfig) -> str:
    """Plan the job in `run_dir` and make its folder ready for Hydra to write into."""
    refuse_links(run_dir)  # before anything in it is read, moved or written
    action = plan(run_dir, cfg)
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


def config_changes(saved: DictConfig, cfg: DictConfig) -> list[str]:
    """`key: old → new` for every value that differs between two configs."""
    ignore = ("rerun", "summary.metric", "summary.x", "vectorize.max_members")
    # a feature's node the run does not use (a run saved before the feature existed has none)
    old, new = (flatten(OmegaConf.to_container(OmegaConf.masked_copy(c, [k for k in c if _used(c, k)])))
                for c in (saved, cfg))
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and k not in ignore)
    return [f"{k}: {old.get(k)} → {new.get(k)}" for k in keys]


def check_resumable(run_dir: Path, cfg: DictConfig) -> list[str]:
    """Refuse, in one line naming the file or the changes, a resume that cannot continue
    exactly: the config changed (unless allowed) or a checkpoint does not load. Returns the
    changes that were allowed."""
    saved = load_yaml(run_dir / ".hydra" / "config.yaml", "resume: ")
    task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    changes = config_changes(saved, task)
    if changes and not current.allow_changes:
        raise UsageError(f"resume: the config differs from the run's in {'; '.join(changes)} "
                         f"(resume.allow_changes=true resumes anyway)")
    for name in CHECKPOINTS:
        try:
            load_checkpoint(run_dir / "checkpoints" / name)
        except UsageError as error:
            raise UsageError(f"resume: {error}") from None
    return changes


class Refused(BaseException):
    """An error in a Hydra callback, which Hydra would turn into a warning before going on:
    this passes through to the CLI, which prints a user's mistake in one line."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


class Guard(Callback):
    """Hydra callback (conf/config.yaml): a single run's config is checked and its folder made
    ready before Hydra writes into it. A resumed run keeps its `.hydra/` as it is (the CLI asks
    Hydra not to write it) unless allowed changes make a new config to record."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        run_dir = None
        try:
            with as_job(config):
                validate(config)
                run_dir = Path(config.hydra.run.dir)
                action = prepare(run_dir, config)
                current.readied = run_dir, config
                changes = action == "resume" and check_resumable(run_dir, config)
        except Exception as error:  # Hydra would only warn, and run the job unchecked
            raise Refused(unwritable(error, run_dir or "the run folder") or error) from error
        if action == "skip" or changes:  # keep a finished run's record; record allowed changes
            with read_write(config.hydra), open_dict(config.hydra):
                config.hydra.output_subdir = None if action == "skip" else ".hydra"


def job_folder(cfg: DictConfig) -> Path:
    """Where a sweep job with this config (composed for the job, `hydra` node included) runs."""
    return Path(cfg.hydra.sweep.dir) / str(cfg.hydra.sweep.subdir)


def user_file(data: DictConfig) -> None:
    """The user's own data file (npz, csv, frames) is set and there (optlab/datasets.py)."""
    if "path" in data.source:
        from optlab.datasets import user_file as check

        check(data.source._target_.rsplit(".", 1)[-1], data.source.path)


def is_run(cfg: DictConfig) -> bool:
    """Whether a job is an optlab run (composed on optlab's schema), not another Hydra app's."""
    from optlab.config import Config

    return OmegaConf.get_type(cfg) is Config


def prepare_sweep(configs: list[DictConfig]) -> list[int]:
    """Check every job of a sweep first (a mistake in any, or two jobs that would share a
    folder, stops the sweep before anything is written), then make each run's folder ready.
    Returns the indices of the jobs to launch; another Hydra app's jobs are only checked for
    their folders."""
    folders: dict[Path, DictConfig] = {}
    for cfg in configs:
        with as_job(cfg):
            if is_run(cfg):
                validate(cfg)
                user_file(cfg.data)  # read first thing by a single run; a sweep's every job, before any starts
                read_metrics(job_folder(cfg))  # a damaged record stops the sweep before any folder changes
            folder = job_folder(cfg)
        if folder in folders:
            named = (" ".join(c.hydra.overrides.task) or "(no overrides)" for c in (folders[folder], cfg))
            raise UsageError("the sweep's jobs {!r} and {!r} would share the folder {} (each job needs its own: "
                             "give each value once, or a hydra.sweep.subdir that tells them apart)"
                             .format(*named, folder))
        folders[folder] = cfg
    todo = []
    for i, cfg in enumerate(configs):
        if is_run(cfg):
            with as_job(cfg):
                action = current.planned[str(job_folder(cfg))] = prepare(job_folder(cfg), cfg)
            if action == "skip":
                continue
        todo.append(i)
    return todo


def run(cfg: DictConfig, run_dir: Path, pruner=None) -> dict:
    """One job, as `plan` says: the earlier record if finished, else train or resume it
    (`pruner`: a search's, see optlab/tune.py). Returns its metrics."""
    from optlab.sweep import set_threads

    action = plan(run_dir, cfg)
    if action == "skip":  # a single run into a finished folder (a sweep launches none of these)
        return read_metrics(run_dir)
    set_threads()
    if cfg.surface is not None:
        from optlab.surfaces import run as run_surface  # torch is imported only now

        return run_surface(cfg, run_dir)
    from optlab.train import train

    return train(cfg, run_dir, resume=action == "resume", pruner=pruner)


def take_back(run_dir: Path, cfg: DictConfig, keep_fresh: bool = False) -> bool:
    """Undo a new attempt that a user's mistake stopped (a data file that does not read, a full
    disk): remove everything it wrote and put back the earlier attempt that `archive` moved
    aside, so the mistake leaves no trace (a finished run is skipped again next time). Without
    an earlier attempt the folder goes too, unless `keep_fresh` (a sweep keeps it for its
    failure record). Nothing is done once the attempt saved its record or a state to continue
    from (metrics.json, checkpoints/last.pt), nor to a resumed run, whose folder is its record.
    Returns whether an earlier attempt is back."""
    previous = run_dir / ".previous"
    archives = list(previous.iterdir()) if previous.is_dir() else []
    kept = (run_dir / "metrics.json").exists() or (run_dir / "checkpoints" / "last.pt").exists()
    if not run_dir.is_dir() or plan(run_dir, cfg) != "train" or kept or keep_fresh and not archives:
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


def unready(error: OSError) -> UsageError:
    """Hydra could not write a single run's `.hydra/` or log (a full disk, a folder that cannot
    be written): take back what it wrote and any earlier attempt moved aside; say which file."""
    folder = None
    if current.readied is not None:
        folder = current.readied[0]
        take_back(*current.readied)
    return UsageError(f"cannot write {error.filename or folder or 'the run folder'}: {error.strerror or error}")


def failed(run_dir: Path, cfg: DictConfig, error: Exception, in_sweep: bool) -> BaseException | None:
    """After a job raised `error`: take back an attempt that a user's mistake stopped, or keep
    the failure's record (a single run that hit a bug records it too). Returns the mistake, if
    the error is one."""
    mistake = usage_error(error) or unwritable(error, run_dir)
    restored = mistake is not None and take_back(run_dir, cfg, keep_fresh=in_sweep)
    if (in_sweep or mistake is None) and not restored:
        with contextlib.suppress(UsageError):  # a full disk cannot take the record either
            record_failure(run_dir, cfg, mistake or error)
    if in_sweep:
        log.error("failed: %s: %s", run_dir, mistake or error)
    return mistake


def stop_interrupted(metrics: dict, message: str) -> None:
    """End the command after a signal stopped training, with the conventional exit code
    (128 + signal) and `message`: how to go on."""
    print(message, file=sys.stderr)
    sys.exit(130 if metrics["interrupted_by"] == "SIGINT" else 143)


def sweep_again(sweep_dir: Path) -> str:
    """The command line that finishes an interrupted sweep, to paste: the one given, naming the
    sweep's folder (a default folder is named by the time it started, so the same command
    would start another sweep). Its finished jobs are skipped, interrupted or killed ones resume."""
    words = [w for w in current.words if w.partition("=")[0].lstrip("+") != "hydra.sweep.dir"]
    return command(*words, override("hydra.sweep.dir", relative(sweep_dir)))


def stopped_at_once() -> str:
    """After a Ctrl-C that stopped the command at once (a run starting, before it took the
    signal itself, or a second Ctrl-C): take back a single run that had not begun, and say what
    is left and how to go on."""
    if current.sweep_dir is not None:
        return f"stopped at once; finish the sweep with: {sweep_again(current.sweep_dir)}"
    if current.readied is None:
        return "stopped before the run began: nothing was written"
    run_dir = current.readied[0]
    restored = take_back(*current.readied)  # nothing trained: no folder left, an earlier attempt put back
    if not run_dir.exists():
        return "stopped before the run began: nothing was kept"
    if restored:
        return f"stopped before the run began: {relative(run_dir)} is as it was before this command"
    if (run_dir / "checkpoints" / "last.pt").exists():
        return f"stopped at once; resume with: {command('optlab', 'train', f'resume={relative(run_dir)}')}"
    return f"stopped at once: {relative(run_dir)} holds no save to resume from yet (the same command starts again)"


def record_failure(run_dir: Path, cfg: DictConfig, error: BaseException) -> None:
    """`error.txt` with the traceback, and `metrics.json` with `status: failed` unless the
    folder already holds a record of its own (an interrupted run whose resume failed keeps
    its record, so that it can still be resumed)."""
    atomic_write(run_dir / "error.txt", lambda f: f.write("".join(traceback.format_exception(error)).encode()))
    if (read_metrics(run_dir) or {}).get("status") in (None, "failed"):
        write_json(run_dir / "metrics.json",
                   {"status": "failed", "error": f"{type(error).__name__}: {error}", "config_hash": config_hash(cfg)})
