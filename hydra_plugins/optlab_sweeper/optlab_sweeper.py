"""The sweeper Hydra instantiates for `optlab train -m`: a thin layer over BasicSweeper; the
logic is in _core.py and optlab/jobs/prepare.py."""

from functools import partial
from pathlib import Path
from typing import Any, List

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobStatus
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from hydra_plugins.optlab_sweeper._core import IN_PROCESS, compose_grid, composed
from hydra_plugins.optlab_sweeper.config import OptlabSweeperConf  # noqa: F401 (stores the config)
from optlab.config.hydra_compat import (
    BasicSweeper,
    as_job,
    reuse_composed,
    sweeper_arguments,
)
from optlab.jobs import command
from optlab.jobs.prepare import is_run, job_folder, prepare_sweep
from optlab.naming import override
from optlab.store.folder import take_back


class OptlabSweeper(BasicSweeper):
    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.command = command.of(task_function)  # what the `optlab` command asked for; its jobs' fates

    def sweep(self, arguments: List[str]) -> Any:
        """Expand the grid as BasicSweeper does; check every job and prepare its folder before
        writing anything; launch the jobs left (finished ones are skipped); note failures."""
        loader = self.hydra_context.config_loader
        overrides = OverridesParser.create(config_loader=loader).parse_overrides([*sweeper_arguments(self), *arguments])
        # a `${now:...}` folder resolves once: each job composes its config anew, and one composed a
        # second later would otherwise name another folder
        self.command.sweep_dir = Path(self.config.hydra.sweep.dir)
        fixed = override("hydra.sweep.dir", self.command.sweep_dir)
        grid = [[*job, fixed] for batch in self.split_arguments(overrides, None) for job in batch]
        configs = compose_grid(loader, self.config, grid)
        for i, cfg in enumerate(configs):  # numbered as a launcher numbers them, for a `${hydra.job.num}` folder
            with read_write(cfg.hydra.job), open_dict(cfg.hydra.job):  # flags set on the smallest node: each
                cfg.hydra.job.id = cfg.hydra.job.num = i                  # clears the flag cache below it
        todo = prepare_sweep(configs, self.command.planned)
        if type(self.launcher).__name__ in IN_PROCESS:  # each job is composed once, not twice (~0.1 s a job)
            reuse_composed(loader, partial(composed, {tuple(job): cfg for job, cfg in zip(grid, configs)},
                                           loader.load_sweep_config))
        try:
            return self._launch(grid, configs, todo)
        except OSError:  # a full disk, a folder that cannot be written: what did not train is put back as it was
            for i in todo:
                if is_run(configs[i]):
                    with as_job(configs[i]):
                        take_back(job_folder(configs[i]))
            raise

    def _launch(self, grid: List[List[str]], configs: List[DictConfig], todo: List[int]) -> Any:
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        returns = []
        for chunk in self.split_overrides_to_chunks(todo, self.max_batch_size) if todo else []:
            results = self.launcher.launch([grid[i] for i in chunk], initial_job_idx=sum(map(len, returns)))
            returns.append(results)
            for i, result in zip(chunk, results):
                if result.status == JobStatus.FAILED or (isinstance(result.return_value, dict)
                                                         and result.return_value.get("status") == "failed"):
                    self.command.failed.append(str(job_folder(configs[i])))
        return returns
