"""A job of `optlab train`, as its folder's plan says, and every way it can end: a failure taken
back or recorded, an interruption with the command that goes on, a Ctrl-C before it began."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

from omegaconf import DictConfig

from optlab.errors import UsageError, usage_error
from optlab.jobs.command import Command
from optlab.naming import command, override, relative
from optlab.store.files import unwritable
from optlab.store.folder import plan, read_metrics, record_failure, take_back

log = logging.getLogger("optlab")


def run(cfg: DictConfig, run_dir: Path, asked: Command | None = None, callbacks: tuple = ()) -> dict:
    """One job, as `plan` says: the earlier record if finished, else train or resume it
    (`callbacks`: more of training's callbacks, e.g. a search's pruning). Returns its metrics."""
    action = plan(run_dir, cfg, asked and asked.resume)
    if action == "skip":  # a single run into a finished folder (a sweep launches none of these)
        return read_metrics(run_dir)
    set_threads()
    if cfg.surface is not None:
        from optlab.jobs.surface import run as run_surface  # torch is imported only now

        return run_surface(cfg, run_dir)
    from optlab.jobs.train import train

    return train(cfg, run_dir, resume=action == "resume", callbacks=callbacks)


def failed(run_dir: Path, cfg: DictConfig, error: Exception, in_sweep: bool) -> BaseException | None:
    """After a job raised `error`: take back an attempt that a user's mistake stopped, or keep
    the failure's record (a single run that hit a bug records it too). Returns the mistake, if
    the error is one."""
    mistake = usage_error(error) or unwritable(error, run_dir)
    restored = mistake is not None and take_back(run_dir, keep_fresh=in_sweep)
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


def sweep_again(words: list[str], sweep_dir: Path) -> str:
    """The command line that finishes an interrupted sweep, to paste: the one given, naming the
    sweep's folder (a default folder is named by the time it started, so the same command
    would start another sweep). Its finished jobs are skipped, interrupted or killed ones resume."""
    words = [w for w in words if w.partition("=")[0].lstrip("+") != "hydra.sweep.dir"]
    return command(*words, override("hydra.sweep.dir", relative(sweep_dir)))


def unready(error: OSError, where: Path | str = "the run folder") -> UsageError:
    """A run's folder that could not be made or written (a full disk, a file in the way, no
    permission), in one line naming the file, else `where`."""
    return UsageError(f"cannot write {error.filename or where}: {error.strerror or error}")


def stopped_at_once(asked: Command) -> str:
    """After a Ctrl-C that stopped the command at once (a run starting, before it took the
    signal itself, or a second Ctrl-C): take back a single run that had not begun, and say what
    is left and how to go on."""
    if asked.sweep_dir is not None:
        return f"stopped at once; finish the sweep with: {sweep_again(asked.words, asked.sweep_dir)}"
    if asked.readied is None:
        return "stopped before the run began: nothing was written"
    run_dir = asked.readied
    restored = take_back(run_dir)  # nothing trained: no folder left, an earlier attempt put back
    if not run_dir.exists():
        return "stopped before the run began: nothing was kept"
    if restored:
        return f"stopped before the run began: {relative(run_dir)} is as it was before this command"
    if (run_dir / "checkpoints" / "last.pt").exists():
        return f"stopped at once; resume with: {command('optlab', 'train', f'resume={relative(run_dir)}')}"
    return f"stopped at once: {relative(run_dir)} holds no save to resume from yet (the same command starts again)"


def set_threads() -> int | None:
    """Under the joblib launcher, give each of its parallel jobs an equal share of the cores
    (optlab/training/threads.py chooses within it).

    Each job is its own process, and torch in each would use every core: two jobs of two
    threads on two cores run several times slower than one job at a time.
    """
    from hydra.core.hydra_config import HydraConfig

    launcher = HydraConfig.get().launcher if HydraConfig.initialized() else None
    if launcher is None or "joblib" not in str(launcher.get("_target_", "")).lower():
        return None
    from optlab.training import threads

    jobs = launcher.get("n_jobs") or 1
    jobs = threads.cores() + 1 + jobs if jobs < 0 else jobs  # joblib: -1 = every core, -2 = all but one
    share = threads.share(jobs)
    logging.getLogger("optlab").info(
        "joblib launcher: up to %d jobs at once on %d cores, at most %d torch threads per job", jobs, threads.cores(), share
    )
    return share
