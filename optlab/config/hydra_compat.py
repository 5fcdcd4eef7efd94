"""Every use optlab makes of Hydra's private APIs, in one place: optlab/ and hydra_plugins/
reach them only through the names below.

Written for hydra-core 1.3 (pyproject pins `hydra-core>=1.3,<1.4`; the suite runs on the 1.3
release pip installs, 1.3.8 at the time of writing). A Hydra release that moves one of these
names breaks here, and the suite's tests of sweeps, tune and resume say so.

- `Callbacks`, `BasicSweeper`, `BasicLauncher`, `ConfigLoaderImpl`, `get_overrides_dirname` live
  in `hydra._internal`: optlab's sweeper builds on the basic sweeper's parsing, its launcher
  hands other Hydra apps' jobs to the basic launcher, and a tune trial runs as a job without a
  launcher.
- `HydraConfig.instance()` is set and restored directly: a config is resolved as in its job
  before the job starts (`as_job`), and the tune command's config comes back after each trial.
  `as_job` hands it the job's config itself, where `set_config` would deep-copy its `hydra`
  node on every call (part of what scripts/bench_sweep.py measures a member to cost).
- `_save_config`'s text is `OmegaConf.to_yaml`'s: `save_job_files` makes it from one container
  of the job's config, for its config.yaml and hydra.yaml alike.
- `JobReturn._return_value` reads a failed job's exception without raising it.
- `ConfigLoaderImpl._apply_overrides_to_config`, the loader's `repository` and
  `load_sweep_config`, and `BasicSweeper._parse_config`: optlab's sweeper composes each job
  once and hands the launcher the configs it composed (hydra_plugins/optlab_sweeper).
"""

from __future__ import annotations

import contextlib
import importlib
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

# Hydra's plugin discovery imports its core plugins' modules again, so their classes are looked
# up when asked for (PEP 562), never held from an earlier import: a sweeper built on a stale
# BasicSweeper fails in its constructor
_PRIVATE = {
    "Callbacks": "hydra._internal.callbacks",
    "ConfigLoaderImpl": "hydra._internal.config_loader_impl",
    "get_overrides_dirname": "hydra._internal.config_loader_impl",
    "BasicLauncher": "hydra._internal.core_plugins.basic_launcher",
    "BasicSweeper": "hydra._internal.core_plugins.basic_sweeper",
}


def __getattr__(name: str):
    if name in _PRIVATE:
        return getattr(importlib.import_module(_PRIVATE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@contextlib.contextmanager
def as_job(cfg: DictConfig):
    """Within it, `${hydra:...}` in a job's config (`hydra` node included) resolves as in the
    job itself; Hydra sets that up only as the job starts."""
    previous = current_config()
    if not OmegaConf.is_readonly(cfg.hydra):  # setting it again would clear every node's flag cache
        OmegaConf.set_readonly(cfg.hydra, True)  # as set_config leaves it
    set_hydra_config(cfg)
    try:
        yield cfg
    finally:
        set_hydra_config(previous)


def set_hydra_config(cfg: DictConfig) -> None:
    """Make `cfg` (a config with its `hydra` node, as HydraConfig holds it) current again."""
    HydraConfig.instance().cfg = cfg


def save_job_files(config: DictConfig, output_dir: Path) -> None:
    """Write a job's `.hydra/` (config.yaml, hydra.yaml, overrides.yaml) into `output_dir` as
    Hydra's run_job writes them, its `hydra.runtime.output_dir` set first as run_job sets it: the
    Guard writes a single run's this way, the vectorized launcher each member's."""
    with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
        config.hydra.runtime.output_dir = str(output_dir)
    task = OmegaConf.to_container(config, enum_to_str=True)
    hydra = {"hydra": task.pop("hydra")}
    folder = output_dir / ".hydra"
    folder.mkdir(parents=True, exist_ok=True)
    for name, node in (("config", task), ("hydra", hydra), ("overrides", hydra["hydra"]["overrides"]["task"])):
        (folder / f"{name}.yaml").write_text(yaml_text(node), encoding="utf-8")


def yaml_text(node) -> str:
    """`OmegaConf.to_yaml`'s text of a container (what Hydra's `_save_config` writes). A mapping's
    text is its entries' texts one after another, and an entry's text depends only on the entry
    and the keys above it (its indentation), so each value that is not a mapping is emitted
    once at its place and remembered: a sweep's jobs share almost all of theirs (Hydra's help,
    logging and launcher nodes; most of the config) and differ in a few numbers and names, and
    PyYAML's emitter was among the larger costs of a member of a stacked group (scripts/
    bench_bookkeeping.py, row `hydra`)."""
    if not isinstance(node, dict) or not node:
        return _dump(node)
    return "".join(_entry((), key, value) for key, value in node.items())


def _entry(path: tuple, key, value) -> str:
    """The text of `key: value` inside the mappings named by `path`."""
    if not isinstance(value, dict) or not value:
        return _remembered(path, key, value)
    inner = path + (key,)
    head = _remembered(path, key, {0: 0})  # the key's line, then its placeholder entry's
    line = head[:head.index("\n") + 1]
    if not line.endswith(":\n"):  # a key PyYAML writes another way (`? key` past 128 characters)
        return _remembered(path, key, value)
    return line + "".join(_entry(inner, k, v) for k, v in value.items())


_TEXTS: dict[tuple, str] = {}


def _remembered(path: tuple, key, value) -> str:
    """The text of `key: value` at its place below `path`: the lines of the whole nested
    mapping's text that are its own."""
    plain = value is None or type(value) in (str, int, float, bool)
    remembered = (path, type(key), key, type(value), value if plain else repr(value))  # True == 1 == 1.0
    if remembered not in _TEXTS:
        if len(_TEXTS) > 16384:  # a bound: jobs' own entries (overrides, folders) are never met again
            _TEXTS.clear()
        node = {key: value}
        for outer in reversed(path):
            node = {outer: node}
        _TEXTS[remembered] = "".join(_dump(node).splitlines(keepends=True)[len(path):])
    return _TEXTS[remembered]


def _dump(node) -> str:
    import yaml
    from omegaconf._utils import get_omega_conf_dumper

    return yaml.dump(node, default_flow_style=False, allow_unicode=True, sort_keys=False, Dumper=get_omega_conf_dumper())


def current_config() -> DictConfig | None:
    """The config HydraConfig holds now (the running command's), to put back later."""
    return HydraConfig.instance().cfg


def apply_overrides(overrides: list, cfg: DictConfig) -> None:
    """Set parsed `key=value` overrides on a composed config as Hydra does after composing."""
    __getattr__("ConfigLoaderImpl")._apply_overrides_to_config(overrides, cfg)


def group_exists(loader, name: str) -> bool:
    """Whether `name` is a config group (so `name=x` picks an option rather than sets a value)."""
    return loader.repository.group_exists(name)


def sweeper_arguments(sweeper) -> list[str]:
    """The sweep's own `hydra.sweeper.params`, as override strings."""
    return sweeper._parse_config()


def reuse_composed(loader, compose) -> None:
    """Have the launcher get each job's config from `compose(master, job)` (optlab's sweeper
    hands over the configs it composed and checked)."""
    loader.load_sweep_config = compose


def job_return(result, **fields) -> JobReturn:
    """A finished job's JobReturn, as run_job would make it, returning `result`."""
    return JobReturn(_return_value=result, **fields)


def returned(result: JobReturn):
    """A job's return value, or the exception it failed with (without raising it)."""
    return result._return_value
