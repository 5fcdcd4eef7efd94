"""The launchers Hydra instantiates for `hydra/launcher=vectorized` and, on a cluster,
`vectorized_submitit_slurm` and `vectorized_submitit_local`: thin; the logic is in _core.py and
_submitit.py (imported only once a launcher launches: torch, submitit)."""

from typing import Any, List, Optional, Sequence

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.optlab_vectorized_launcher.config import VectorizedLauncherConf  # noqa: F401 (stores the configs)


class VectorizedLauncher(Launcher):
    def __init__(self) -> None:
        self.config: Optional[DictConfig] = None
        self.task_function: Optional[TaskFunction] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from optlab.config.hydra_compat import BasicLauncher
        from optlab.jobs.prepare import is_run

        if not is_run(self.config):  # another Hydra app's jobs: as Hydra's basic launcher runs them
            return BasicLauncher.launch(self, job_overrides, initial_job_idx)
        from hydra_plugins.optlab_vectorized_launcher import (
            _core,  # torch is imported only now
        )

        return _core.launch(self, job_overrides, initial_job_idx)


class VectorizedSubmititLauncher(VectorizedLauncher):
    """Groups as `vectorized` makes them, each sent as one job of submitit (Hydra's submitit
    launcher's engine) to `cluster`; its keys are that launcher's."""

    cluster = "abstract"

    def __init__(self, **params: Any) -> None:
        super().__init__()
        self.params = {key: OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
                       for key, value in params.items()}

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        from hydra_plugins.optlab_vectorized_launcher import _submitit

        _submitit.require(self)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hydra_plugins.optlab_vectorized_launcher import _submitit
        from optlab.jobs.prepare import is_run

        if not is_run(self.config):  # another Hydra app's jobs: as Hydra's submitit launcher runs them
            return _submitit.hydras_own(self).launch(job_overrides, initial_job_idx)
        return _submitit.launch(self, job_overrides, initial_job_idx)

    def __call__(self, unit: Any, singleton_state: Any) -> List[JobReturn]:
        """In the submitit job: run one unit of the sweep (a group, or a job alone)."""
        from hydra_plugins.optlab_vectorized_launcher import _submitit

        return _submitit.work(self, unit, singleton_state)


class VectorizedSlurmLauncher(VectorizedSubmititLauncher):
    cluster = "slurm"


class VectorizedLocalLauncher(VectorizedSubmititLauncher):
    cluster = "local"
