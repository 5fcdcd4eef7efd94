"""The launcher Hydra instantiates for `hydra/launcher=vectorized`: thin; the logic is in _core.py."""

from typing import Optional, Sequence

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from hydra_plugins.optlab_vectorized_launcher.config import VectorizedLauncherConf  # noqa: F401 (stores the config)


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
