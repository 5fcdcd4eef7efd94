"""More workers on one study, started by `optlab tune` itself as jobs of submitit, the engine
of Hydra's submitit launcher (`tune.workers=N`): on this machine (`tune.cluster=local`, each
worker a process) or on SLURM (`tune.cluster=slurm`, one job array, each worker a job with
`tune.slurm`'s resources: a GPU each trains its trials as stacked groups).

Each worker is the same `optlab tune` command with the study's folder named, so that they all
share one study, in its journal or its database (storage.py), exactly as commands started by
hand share it. This command waits for them, saying how far the study has come, then goes on
like any worker: it trains what is left (a worker that died leaves its trials to be retried),
and writes the summary.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from optlab.errors import UsageError
from optlab.naming import override, relative

log = logging.getLogger("optlab")

POLL_S = 5  # between two looks at the study while the workers train


def start(cfg: DictConfig, words: list[str], study_dir: Path, study) -> None:
    """Run `tune.workers` workers on the study as submitit jobs; return once every one has ended."""
    executor = make_executor(cfg, study_dir)
    command = [w for w in words if w.partition("=")[0] not in ("tune.dir", "tune.workers")]
    # the study's folder named; Hydra's record of this command (`.hydra/`) left as this command wrote it
    command += [override("tune.dir", study_dir.absolute()), "tune.workers=1", "hydra.output_subdir=null"]
    jobs = executor.map_array(work, [command] * cfg.tune.workers)
    log.info("submitit (%s): %d workers on the study, jobs %s; their logs: %s", cfg.tune.cluster, len(jobs),
             ", ".join(job.job_id for job in jobs), relative(study_dir / ".submitit"))
    reported = None
    while not all(job.done() for job in jobs):
        time.sleep(POLL_S)
        finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
        if finished != reported:
            log.info("the study: %d of %d trials finished", finished, cfg.tune.trials)
            reported = finished
    for number, job in enumerate(jobs):
        outcome = "ended"
        try:
            job.result()
        except Exception as error:  # its trials are retried below, as any dead worker's
            said = [line.strip() for line in str(error).splitlines() if line.strip()]
            outcome = f"failed ({next((line for line in said if 'exit code' in line), type(error).__name__)})"
        log.info("worker %d (job %s): %s; its log: %s", number, job.job_id, outcome, relative(Path(job.paths.stdout)))


def work(command: list[str]) -> None:
    """In a submitit job: one worker, the `optlab tune` command as given, its lines in the job's log."""
    import subprocess
    import sys

    code = subprocess.run([sys.executable, "-m", "optlab", "tune", *command]).returncode
    if code:
        raise RuntimeError(f"optlab tune ended with exit code {code}")


def require(cfg: DictConfig) -> None:
    """Refuse in one line, before anything is written (StudyGuard), workers this machine cannot
    start: submitit missing, or no SLURM for `tune.cluster=slurm`."""
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise UsageError('tune.workers needs submitit, not installed here: pip install -e ".[slurm]"') from None
    missing = [tool for tool in ("sbatch", "srun") if cfg.tune.cluster == "slurm" and shutil.which(tool) is None]
    if missing:
        raise UsageError(f"tune.cluster=slurm: no SLURM on this machine ({' and '.join(missing)} not found): "
                         "start the study where SLURM is, or try it here with tune.cluster=local")


def make_executor(cfg: DictConfig, study_dir: Path):
    """submitit's executor for the workers: its folder in the study's, `tune.slurm`'s keys for
    SLURM (submitit's own names as they are, the others as its `slurm_` parameters)."""
    import submitit

    executor = submitit.AutoExecutor(folder=study_dir / ".submitit" / "%j", cluster=cfg.tune.cluster)
    params = OmegaConf.to_container(cfg.tune.slurm) if cfg.tune.cluster == "slurm" else {}
    shared = submitit.AutoExecutor._valid_parameters()  # submitit's own names; the rest are SLURM's
    executor.update_parameters(name="optlab-tune", timeout_min=params.pop("timeout_min", 7 * 24 * 60),
                               **{k if k in shared else f"slurm_{k}": v for k, v in params.items()})
    return executor

