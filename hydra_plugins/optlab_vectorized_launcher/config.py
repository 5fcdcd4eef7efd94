"""The vectorized launchers' configs: `hydra/launcher=vectorized` (its keys for a group are the
run's own: `vectorize.max_members`), and `vectorized_submitit_slurm` and `..._local`, which take
every key of Hydra's submitit launcher (partition, gpus_per_node, timeout_min, ...)."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

try:  # Hydra's submitit plugin: pip install -e ".[slurm]"
    from hydra_plugins.hydra_submitit_launcher.config import (
        LocalQueueConf,
        SlurmQueueConf,
    )
except ImportError:
    LocalQueueConf = SlurmQueueConf = None

LAUNCHERS = "hydra_plugins.optlab_vectorized_launcher.vectorized_launcher"


@dataclass
class VectorizedLauncherConf:
    """`hydra/launcher=vectorized`. A group's size is capped by optlab's `vectorize.max_members`."""

    _target_: str = f"{LAUNCHERS}.VectorizedLauncher"


ConfigStore.instance().store(group="hydra/launcher", name="vectorized", node=VectorizedLauncherConf, provider="optlab")

if SlurmQueueConf is not None:

    @dataclass
    class VectorizedSlurmConf(SlurmQueueConf):
        """`hydra/launcher=vectorized_submitit_slurm`: each group, and each job alone, is one SLURM job."""

        _target_: str = f"{LAUNCHERS}.VectorizedSlurmLauncher"

    @dataclass
    class VectorizedLocalConf(LocalQueueConf):
        """`hydra/launcher=vectorized_submitit_local`: the same jobs, as processes on this machine."""

        _target_: str = f"{LAUNCHERS}.VectorizedLocalLauncher"

    CLUSTER = {"slurm": VectorizedSlurmConf, "local": VectorizedLocalConf}
else:  # any keys pass, so that choosing the launcher says in one line what to install (its setup)
    CLUSTER = {name: OmegaConf.create({"_target_": f"{LAUNCHERS}.Vectorized{name.title()}Launcher"},
                                      flags={"struct": False}) for name in ("slurm", "local")}

for cluster, node in CLUSTER.items():
    ConfigStore.instance().store(group="hydra/launcher", name=f"vectorized_submitit_{cluster}", node=node,
                                 provider="optlab")
