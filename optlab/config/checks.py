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


def _leaves(node: dict, prefix: str):
    """(dotted path, value, parent node) for every value in a group; lists are values."""
    for name, value in node.items():
        path = f"{prefix}.{name}"
        if isinstance(value, dict) and path not in GROUP_RULES:  # `tune.params` is one value
            yield from _leaves(value, path)
        elif name != "_target_":
            yield path, value, node


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for the first value a rule rejects, or a key no rule knows (a job's
    config may carry Hydra's own `hydra` node: Hydra checks that). The rules read one resolved
    copy of the config, made here: every value read through OmegaConf costs tens of
    microseconds, and a sweep checks every job's hundreds."""
    for name in (*top_level_keys(), *GROUPS):  # `~scheduler`, `~data`, `~curvature`
        gone = name not in cfg or OmegaConf.is_missing(cfg, name) or name == "data" and "source" not in cfg.data
        if gone and name != "surface":
            allowed = options(name) or ([top_level_keys()[name]["rule"].allowed] if name in top_level_keys() else [])
            hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
            raise UsageError(f"no value for '{name}': it cannot be removed{hint}")
    keys = top_level_keys()
    for name in cfg:
        if name not in GROUPS and name not in keys and name != "hydra":
            raise ConfigError(name, cfg[name], ", ".join(keys), "unknown key")
    for group in GROUPS:  # before anything else reads it: a `_target_` is code (an interpolated one too)
        if cfg.get(group) is not None:
            allowlist.check(cfg[group], group)
    plain = {name: OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
             for name in cfg if name != "hydra" for value in [cfg[name]]}
    for name, meta in keys.items():
        if not meta["rule"].ok(plain[name]):
            raise ConfigError(name, plain[name], meta["rule"].allowed)
    group_values(plain, GROUPS)
    for path, value, _ in _leaves(plain["optimizer"], "optimizer"):
        float32(path, value, value)
    across_keys(plain, cfg)


def group_values(plain: dict, groups) -> None:
    """Raise ConfigError for a key no rule knows, or a value its rule rejects, in each of
    `groups` of a resolved config (`plain`; a group left out is skipped)."""
    for group in groups:
        if not isinstance(plain.get(group), dict):  # an optional group left out (surface)
            continue
        for path, value, parent in _leaves(plain[group], group):
            rule = GROUP_RULES.get(path)
            if rule is None:
                known = [k for k in parent if f"{path.rsplit('.', 1)[0]}.{k}" in GROUP_RULES]
                raise ConfigError(path, value, ", ".join(known) or "none", "unknown key")
            if not rule.ok(value):
                raise ConfigError(path, value, rule.allowed)


def across_keys(plain: dict, cfg: DictConfig) -> None:
    """The rules that span several keys, on `validate`'s resolved copy of `cfg`."""
    if plain["batchnorm"] and plain["batch_size"] == 1:
        raise ConfigError(
            "batch_size", 1, "2 or more with batchnorm=true: batch norm normalizes by the "
            "statistics of the batch, and one example has no variance",
        )
    surface, scheduler = plain.get("surface") is not None, plain["scheduler"]
    horizon, unit = (plain["steps"], "steps") if surface else (plain["epochs"], "epochs")
    planned = scheduler.get("epochs")  # a `${epochs}` spans a surface's steps (surfaces.run)
    if planned is not None and not OmegaConf.is_interpolation(cfg.scheduler, "epochs") and planned < horizon:
        raise ConfigError("scheduler.epochs", planned, f"at least the run's {horizon} {unit}: "
                          "OneCycleLR cannot step past its end, a cosine would climb again")
    if not surface and str(scheduler.get("_target_", "")).endswith("ReduceLROnPlateau") \
            and scheduler["interval"] == "step":
        raise ConfigError("scheduler.interval", "step", "epoch: ReduceLROnPlateau steps on the validation "
                          "loss, which is measured once an epoch")
    if str(scheduler.get("_target_", "")).endswith("Piecewise"):
        piecewise(scheduler, horizon)
    if surface and plain["optimizer"].get("lr") == "find":
        raise ConfigError("optimizer.lr", "find", "a number > 0 on a surface (the range test needs a network and data)")
    low, high = plain["lr_find"]["min_lr"], plain["lr_find"]["max_lr"]
    if low >= high:
        raise ConfigError("lr_find.max_lr", high, f"a number above lr_find.min_lr={low}")
    if not math.isfinite(high / low):  # the rates are min_lr · (max_lr/min_lr)^t
        raise ConfigError("lr_find.max_lr", high, f"at most {sys.float_info.max * low:.3g} with lr_find.min_lr={low}: "
                          "the range's ratio max_lr / min_lr overflows a float")
    data = plain["data"]
    if data["val_fraction"] + data["test_fraction"] >= 1:
        raise ConfigError(
            "data.val_fraction", data["val_fraction"], "val_fraction + test_fraction < 1"
        )


def piecewise(scheduler: dict, horizon: int) -> None:
    """scheduler=piecewise: its epochs within the run, each number one its optimizer key allows."""
    if scheduler["interval"] == "step":
        raise ConfigError("scheduler.interval", "step", "epoch: scheduler=piecewise sets numbers after epochs")
    for epoch, values in (scheduler["at"] or {}).items():
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
