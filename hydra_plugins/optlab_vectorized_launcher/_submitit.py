"""The cluster launchers' logic (`hydra/launcher=vectorized_submitit_slurm`, `..._local`): a
vectorized sweep grouped as in one process (_core.launch), each unit (a group, or a job alone)
sent as one job of submitit, the engine of Hydra's submitit launcher. The job's worker runs its
unit as the in-process launcher does (_core.run_unit), so each member's folder is the same.

The worker gets what a job of Hydra's submitit launcher gets: the launcher itself, pickled
(its config, Hydra's context and the task function, which carries the `optlab` command it
serves: its words and its plan), and Hydra's global state. What it prints comes back to the
sweep's console as each job ends; a signal that stops its runs stops the sweep as in one process.
"""

from __future__ import annotations

import logging
import shutil
import signal
import sys

from hydra.core.utils import JobReturn, JobStatus, configure_log, setup_globals
from omegaconf import OmegaConf

from hydra_plugins.optlab_vectorized_launcher import _core
from hydra_plugins.optlab_vectorized_launcher._core import Unit, as_returned
from optlab.config.hydra_compat import as_job
from optlab.errors import UsageError
from optlab.jobs.prepare import job_folder
from optlab.store.folder import read_metrics

log = logging.getLogger("optlab")


def require(launcher) -> None:
    """Refuse, in one line and before anything is written, a launcher this machine cannot run:
    Hydra's submitit plugin missing, or no SLURM for the SLURM launcher."""
    name = f"hydra/launcher=vectorized_submitit_{launcher.cluster}"
    try:
        import submitit  # noqa: F401
        from hydra_plugins.hydra_submitit_launcher import config  # noqa: F401
    except ImportError:
        raise UsageError(f'{name} needs Hydra\'s submitit launcher, not installed here: pip install -e ".[slurm]"') \
            from None
    missing = [tool for tool in ("sbatch", "srun") if launcher.cluster == "slurm" and shutil.which(tool) is None]
    if missing:
        raise UsageError(f"{name}: no SLURM on this machine ({' and '.join(missing)} not found): run the sweep "
                         "where SLURM is, or try it here with hydra/launcher=vectorized_submitit_local")


def launch(launcher, job_overrides, initial_job_idx: int) -> list[JobReturn]:
    """The sweep as `hydra/launcher=vectorized` runs it, each unit as one submitit job."""
    return _core.launch(launcher, job_overrides, initial_job_idx, runner=as_jobs)


def as_jobs(launcher, units: list[Unit]) -> list[list[JobReturn]]:
    """Submit every unit at once, one job each (on SLURM, one job array); each unit's results, in
    the units' order, once every job has ended."""
    from hydra.core.singleton import Singleton

    executor = make_executor(launcher)
    runs = sum(len(unit.jobs) for unit in units)
    log.info("submitit (%s): %d runs as %d job%s; their logs: %s", launcher.cluster, runs, len(units),
             "s" * (len(units) > 1), launcher.params["submitit_folder"])
    jobs = executor.map_array(launcher, units, [Singleton.get_state()] * len(units))
    try:
        return [collect(job, unit) for job, unit in zip(jobs, units)]
    except KeyboardInterrupt:  # the local executor's jobs got the Ctrl-C too; a cluster's go on
        if launcher.cluster == "slurm":
            arrays = sorted({job.job_id.split("_")[0] for job in jobs})
            print(f"optlab train: the sweep's jobs go on in SLURM (scancel {' '.join(arrays)} stops them, each "
                  "run saving itself): let them end before finishing the sweep", file=sys.stderr)
        raise


def make_executor(launcher):
    """submitit's executor with the launcher's keys, as Hydra's submitit launcher makes it: its
    folder, its `max_num_timeout`, its own keys, the cluster's keys prefixed with its name."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    params = dict(launcher.params)
    start = {"folder": params.pop("submitit_folder")}
    if "max_num_timeout" in params:
        start[f"{launcher.cluster}_max_num_timeout"] = params.pop("max_num_timeout")
    executor = submitit.AutoExecutor(cluster=launcher.cluster, **start)
    shared = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{key if key in shared else f"{launcher.cluster}_{key}": value
                                  for key, value in params.items()})
    return executor


def collect(job, unit: Unit) -> list[JobReturn]:
    """A unit's results, once its job has ended, and what the job printed. A job that ended
    without them (killed: out of memory, a node lost, a bug) fails each of its runs, saying
    why; no record is written, so that the same command resumes a run that had saved."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    try:
        results = job.result()
    except UncompletedJobError as error:
        said = str(error).strip().splitlines()  # a failure's traceback ends with its error
        why = f"failed: {said[-1]}" if isinstance(error, FailedJobError) and said else f"left no result ({job.state})"
        for cfg in unit.configs:
            with as_job(cfg):
                log.error("failed: %s: its submitit job %s %s; its log: %s", job_folder(cfg), job.job_id, why,
                          job.paths.stderr)
        results = [as_returned(cfg, task, error, JobStatus.FAILED) for cfg, task in zip(unit.configs, unit.tasks)]
    said = (job.stdout() or "").splitlines(keepends=True)  # less submitit's own lines (in its log still)
    sys.stdout.write("".join(line for line in said if not line.startswith("submitit ")))
    sys.stdout.flush()
    return results


def work(launcher, unit: Unit, singleton_state) -> list[JobReturn]:
    """In the submitit job: Hydra's state as in the sweep's process, then the unit run as there.
    A job alone that a signal stopped ends its process there; here its record says so instead,
    and the sweep's process stops the sweep."""
    from hydra.core.singleton import Singleton

    Singleton.set_state(singleton_state)
    setup_globals()
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    logging.getLogger("submitit").propagate = False  # its lines are written once, by its own handlers
    stop_before_time_limit()
    try:
        return _core.run_unit(unit, launcher.hydra_context, launcher.task_function)
    except SystemExit as stop:
        records = [record(cfg) for cfg in unit.configs]
        if stop.code not in (130, 143) or not any(r.get("status") == "interrupted" for r in records):
            raise
        return [as_returned(cfg, task, r) for cfg, task, r in zip(unit.configs, unit.tasks, records)]


def record(cfg) -> dict:
    """A job's metrics.json as its run left it ({} where there is none)."""
    with as_job(cfg):
        return read_metrics(job_folder(cfg)) or {}


def stop_before_time_limit() -> None:
    """submitit warns a job of its time limit with a signal (SIGUSR2, `signal_delay_s` before
    it); a job is requeued only if checkpointable. Here that signal stops training as a
    cluster's SIGTERM does: after the step, each run saved, for the same command to resume."""
    import submitit

    signal.signal(submitit.JobEnvironment._usr_sig(), lambda signum, frame: signal.raise_signal(signal.SIGTERM))


def hydras_own(launcher):
    """Hydra's own submitit launcher with the same keys: another Hydra app's sweep runs as there."""
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
        LocalLauncher,
        SlurmLauncher,
    )

    own = {"local": LocalLauncher, "slurm": SlurmLauncher}[launcher.cluster](**launcher.params)
    own.setup(hydra_context=launcher.hydra_context, task_function=launcher.task_function, config=launcher.config)
    return own
