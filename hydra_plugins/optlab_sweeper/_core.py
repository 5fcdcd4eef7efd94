"""The optlab sweeper's logic: each job of a grid composed once, from a shared defaults list
where its overrides allow (Hydra composes every job anew, ~0.08 s each)."""

import pickle
from typing import List, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from omegaconf import DictConfig, OmegaConf

from optlab.config.hydra_compat import (
    apply_overrides,
    get_overrides_dirname,
    group_exists,
)

# launchers that compose each job in this process, from the sweeper's config loader (the
# vectorized cluster launchers too: they group the jobs here, then send each group away)
IN_PROCESS = ("BasicLauncher", "VectorizedLauncher", "VectorizedSlurmLauncher", "VectorizedLocalLauncher")


def compose_grid(loader, master: DictConfig, grid: Sequence[Sequence[str]]) -> List[DictConfig]:
    """Each job's config, equal to what `loader.load_sweep_config` composes for it. Jobs whose
    overrides differ only in plain values pick the same defaults list: it is composed once
    (~0.08 s), pickled once, and each job gets a copy unpickled from those bytes (cheaper than a
    deep copy; the bytes never leave this process) with its values set as Hydra
    sets them, after composing. Each distinct override is parsed once: Hydra's parser (ANTLR's,
    in Python) was among the larger costs of composing a job (scripts/bench_sweep.py's member)."""
    parser = OverridesParser.create(config_loader=loader)
    read: dict[str, tuple[Override, bool]] = {}  # an override's text → it parsed, and whether a plain value
    templates: dict = {}
    configs = []
    for job in grid:
        for line in job:
            if line not in read:
                override = parser.parse_overrides([line])[0]
                read[line] = override, plain_value(override, loader)
        parsed = [read[line][0] for line in job]
        values = [read[line][0] for line in job if read[line][1]]
        shape = tuple(o.key_or_group if o in values else o.input_line for o in parsed)
        if shape not in templates:
            templates[shape] = pickle.dumps(loader.load_sweep_config(master, list(job)))
            configs.append(pickle.loads(templates[shape]))
            continue
        cfg = pickle.loads(templates[shape])
        apply_overrides(values, cfg)
        task = [o for o in parsed if not o.is_hydra_override()]
        cfg.hydra.overrides.task = [o.input_line for o in task]
        naming = cfg.hydra.job.config.override_dirname
        cfg.hydra.job.override_dirname = get_overrides_dirname(task, list(naming.exclude_keys), naming.item_sep,
                                                               naming.kv_sep)
        configs.append(cfg)
    return configs


def plain_value(override: Override, loader) -> bool:
    """`key=value` that Hydra applies after composing, so that it leaves the defaults list as
    it is: not a group choice, `+`/`~`, a package, a Hydra key, or a dict (which would merge)."""
    return (override.type == OverrideType.CHANGE and override.package is None
            and not override.is_hydra_override() and not isinstance(override.value(), dict)
            and not group_exists(loader, override.key_or_group))


def composed(configs: dict, compose, master: DictConfig, job: List[str]) -> DictConfig:
    """A job's config as this sweeper composed it (writable again, as a fresh one), else composed."""
    cfg = configs.pop(tuple(job), None)
    if cfg is None:
        return compose(master, job)
    OmegaConf.set_readonly(cfg.hydra, False)  # checking it set Hydra's node read-only
    return cfg
