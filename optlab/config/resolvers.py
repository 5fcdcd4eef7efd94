"""The schema and the resolvers conf/config.yaml uses (`optlab_run_name`, `optlab_job_dir`,
`optlab_keys_help`, `optlab_scaled_lr`), made known to Hydra.
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from optlab.config.schema import Config, keys_help


def scaled_lr(batch_size: Any, lr_max: float, b_noise: float) -> float:
    """`${optlab_scaled_lr:${batch_size},lr_max,b_noise}`: the learning rate for a batch size as
    McCandlish et al. (2018, eq. 2.6) scale it, ε(B) = ε_max / (1 + B_noise/B): linear in B for
    small batches, saturating at ε_max for large ones (`full` takes ε_max)."""
    return float(lr_max) if batch_size == "full" else float(lr_max) / (1 + float(b_noise) / float(batch_size))


def register() -> None:
    """Make the schema and the resolvers that conf/config.yaml uses known to Hydra."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="optlab_schema", node=Config)
    from optlab.naming import job_dir, run_name

    resolvers = {"optlab_run_name": run_name, "optlab_job_dir": job_dir, "optlab_keys_help": keys_help,
                 "optlab_scaled_lr": scaled_lr}
    for name, resolver in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
