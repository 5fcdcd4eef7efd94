"""The checks every config passes before anything is written: each key's rule, unknown keys,
the allow-list of `_target_`s, and the rules that span several keys.
"""

from __future__ import annotations

import math
import sys

from omegaconf import DictConfig, OmegaConf

from optlab.config import allowlist
from optlab.config.schema import GROUP_RULES, GROUPS, options, top_level_keys
from optlab.errors import ConfigError, UsageError


def _leaves(node: DictConfig, prefix: str):
    """(dotted path, value, parent node) for every value in a group; lists are values."""
    for name in node:
        value = node[name]
        path = f"{prefix}.{name}"
        if isinstance(value, DictConfig) and path not in GROUP_RULES:  # `tune.params` is one value
            yield from _leaves(value, path)
        elif name != "_target_":
            yield path, value, node


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for the first value a rule rejects, or a key no rule knows (a job's
    config may carry Hydra's own `hydra` node: Hydra checks that)."""
    for name in (*top_level_keys(), *GROUPS):  # `~scheduler`, `~data`, `~curvature`
        gone = name not in cfg or OmegaConf.is_missing(cfg, name) or name == "data" and "source" not in cfg.data
        if gone and name != "surface":
            allowed = options(name) or ([top_level_keys()[name]["rule"].allowed] if name in top_level_keys() else [])
            hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
            raise UsageError(f"no value for '{name}': it cannot be removed{hint}")
    for name, meta in top_level_keys().items():
        if not meta["rule"].ok(cfg[name]):
            raise ConfigError(name, cfg[name], meta["rule"].allowed)
    for name in cfg:
        if name not in GROUPS and name not in top_level_keys() and name != "hydra":
            raise ConfigError(name, cfg[name], ", ".join(top_level_keys()), "unknown key")
    for group in GROUPS:
        if cfg.get(group) is None:  # an optional group left out (surface)
            continue
        allowlist.check(cfg[group], group)  # before anything else reads it: a `_target_` is code
        for path, value, parent in _leaves(cfg[group], group):
            rule = GROUP_RULES.get(path)
            if rule is None:
                known = [k for k in parent if f"{path.rsplit('.', 1)[0]}.{k}" in GROUP_RULES]
                raise ConfigError(path, value, ", ".join(known) or "none", "unknown key")
            if not rule.ok(value):
                raise ConfigError(path, value, rule.allowed)
    for path, value, _ in _leaves(cfg.optimizer, "optimizer"):
        float32(path, value, value)
    if cfg.batchnorm and cfg.batch_size == 1:
        raise ConfigError(
            "batch_size", 1, "2 or more with batchnorm=true: batch norm normalizes by the "
            "statistics of the batch, and one example has no variance",
        )
    horizon, unit = (cfg.steps, "steps") if cfg.get("surface") is not None else (cfg.epochs, "epochs")
    planned = cfg.scheduler.get("epochs")  # a `${epochs}` spans a surface's steps (surfaces.run)
    if planned is not None and not OmegaConf.is_interpolation(cfg.scheduler, "epochs") and planned < horizon:
        raise ConfigError("scheduler.epochs", planned, f"at least the run's {horizon} {unit}: "
                          "OneCycleLR cannot step past its end, a cosine would climb again")
    if cfg.get("surface") is None and str(cfg.scheduler.get("_target_", "")).endswith("ReduceLROnPlateau") \
            and cfg.scheduler.interval == "step":
        raise ConfigError("scheduler.interval", "step", "epoch: ReduceLROnPlateau steps on the validation "
                          "loss, which is measured once an epoch")
    if str(cfg.scheduler.get("_target_", "")).endswith("Piecewise"):
        piecewise(cfg, horizon)
    if cfg.get("surface") is not None and cfg.optimizer.get("lr") == "find":
        raise ConfigError("optimizer.lr", "find", "a number > 0 on a surface (the range test needs a network and data)")
    if cfg.lr_find.min_lr >= cfg.lr_find.max_lr:
        raise ConfigError("lr_find.max_lr", cfg.lr_find.max_lr, f"a number above lr_find.min_lr={cfg.lr_find.min_lr}")
    low, high = cfg.lr_find.min_lr, cfg.lr_find.max_lr
    if not math.isfinite(high / low):  # the rates are min_lr · (max_lr/min_lr)^t
        raise ConfigError("lr_find.max_lr", high, f"at most {sys.float_info.max * low:.3g} with lr_find.min_lr={low}: "
                          "the range's ratio max_lr / min_lr overflows a float")
    data = cfg.data
    if data.val_fraction + data.test_fraction >= 1:
        raise ConfigError(
            "data.val_fraction", data.val_fraction, "val_fraction + test_fraction < 1"
        )


def piecewise(cfg: DictConfig, horizon: int) -> None:
    """scheduler=piecewise: its epochs within the run, each number one its optimizer key allows."""
    if cfg.scheduler.interval == "step":
        raise ConfigError("scheduler.interval", "step", "epoch: scheduler=piecewise sets numbers after epochs")
    for epoch, values in (cfg.scheduler.at or {}).items():
        if epoch >= horizon:
            raise ConfigError("scheduler.at", {epoch: dict(values)}, f"epochs before the run's last, {horizon}")
        for name, value in values.items():
            rule = GROUP_RULES.get(f"optimizer.{name}")
            if rule is not None and not rule.ok(value):
                raise ConfigError("scheduler.at", {epoch: {name: value}}, f"optimizer.{name}: {rule.allowed}")
            float32("scheduler.at", value, {epoch: {name: value}})


FLOAT32_MAX = 3.4028234663852886e38  # torch's optimizers scale float32 tensors by these numbers


def float32(path: str, value, shown) -> None:
    """A number an optimizer computes with must be one float32 holds: torch raises on a step by more."""
    if isinstance(value, float) and math.isfinite(value) and abs(value) > FLOAT32_MAX:
        raise ConfigError(path, shown, "a number float32 holds (at most 3.4e38): the optimizer steps in float32")
