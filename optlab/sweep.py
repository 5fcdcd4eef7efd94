"""What a sweep asks of each run beyond its folder (optlab/jobs.py decides that):

- `hparams`: the values TensorBoard's HParams dashboard compares runs by;
- `set_threads`: parallel launchers share the cores instead of oversubscribing them.
"""

from __future__ import annotations

import logging
import os

from omegaconf import DictConfig, OmegaConf

from optlab.config import GROUPS

# The values every run reports to HParams, beside each key its own command line set.
MAIN_KEYS = ("optimizer.lr", "batch_size", "epochs", "seed", "dropout", "batchnorm", "l2", "shuffle")


def choices(cfg: DictConfig) -> dict[str, str]:
    """The option picked in each config group (`optimizer: adam`), as Hydra recorded it."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        picked = HydraConfig.get().runtime.choices
        return {g: str(picked[g]) for g in (*GROUPS, "experiment") if picked.get(g) is not None}
    return {g: cfg[g]._target_.rsplit(".", 1)[-1] for g in ("model", "optimizer") if "_target_" in cfg[g]}


def overridden_keys() -> list[str]:
    """The keys this run's command line (or sweep) set, e.g. ['optimizer', 'batch_size']."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return [o.partition("=")[0].lstrip("+~") for o in HydraConfig.get().overrides.task]


def hparams(cfg: DictConfig) -> dict[str, object]:
    """Group choices, the main values and every overridden key, as HParams values.

    Values keep one type per key across runs (TensorBoard drops a key whose values mix
    types): `batch_size` is always text, since it may be `full`; lists and booleans become text.
    """
    values: dict[str, object] = dict(choices(cfg))
    for key in [*MAIN_KEYS, *overridden_keys()]:
        if key in values or key in GROUPS:
            continue
        value = OmegaConf.select(cfg, key, default=None)
        if value is None or isinstance(value, DictConfig):
            continue
        if isinstance(value, bool):  # torch would record True as 1.0
            value = str(value).lower()
        elif key == "batch_size" or not isinstance(value, (int, float, str)):
            value = str(OmegaConf.to_container(value) if OmegaConf.is_config(value) else value)
        values[key] = value
    return values


def set_threads() -> int | None:
    """Under the joblib launcher, give each of its parallel jobs an equal share of the cores.

    Each job is its own process, and torch in each would use every core: two jobs of two
    threads on two cores run several times slower than one job at a time.
    """
    from hydra.core.hydra_config import HydraConfig

    launcher = HydraConfig.get().launcher if HydraConfig.initialized() else None
    if launcher is None or "joblib" not in str(launcher.get("_target_", "")).lower():
        return None
    import torch

    cores = os.cpu_count() or 1
    jobs = launcher.get("n_jobs") or 1
    jobs = cores + 1 + jobs if jobs < 0 else jobs  # joblib: -1 = every core, -2 = all but one
    threads = max(1, cores // max(1, min(jobs, cores)))
    torch.set_num_threads(threads)
    logging.getLogger("optlab").info(
        "joblib launcher: up to %d jobs at once on %d cores, %d torch threads per job", jobs, cores, threads
    )
    return threads
