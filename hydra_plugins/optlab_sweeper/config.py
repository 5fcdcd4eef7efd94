"""The optlab sweeper's config: Hydra's basic sweeper's keys (max_batch_size, params), stored
as `hydra/sweeper=optlab`, which conf/config.yaml picks."""

from dataclasses import dataclass
from typing import Dict, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class OptlabSweeperConf:
    """`hydra/sweeper=optlab` (conf/config.yaml's default): the basic sweeper's keys."""

    _target_: str = "hydra_plugins.optlab_sweeper.optlab_sweeper.OptlabSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None


ConfigStore.instance().store(group="hydra/sweeper", name="optlab", node=OptlabSweeperConf, provider="optlab")
