"""The vectorized launcher's config, stored as `hydra/launcher=vectorized`; its keys for a group
are the run's own (`vectorize.max_members`)."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore


@dataclass
class VectorizedLauncherConf:
    """`hydra/launcher=vectorized`. A group's size is capped by optlab's `vectorize.max_members`."""

    _target_: str = "hydra_plugins.optlab_vectorized_launcher.vectorized_launcher.VectorizedLauncher"


ConfigStore.instance().store(group="hydra/launcher", name="vectorized", node=VectorizedLauncherConf, provider="optlab")
