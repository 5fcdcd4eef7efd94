"""A run's identity: `config_hash` (what a finished run is skipped by and an interrupted one
resumed by), the differences between two configs, and the flattening both use.
"""

from __future__ import annotations

import hashlib
import json

from omegaconf import DictConfig, ListConfig, OmegaConf


def flatten(node, prefix: str = "") -> dict:
    """{'a': {'b': 1}} → {'a.b': 1}: configs compared key by key."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def targets(target) -> dict:
    """The targets a run watches (`target.val_loss`, `target.val_acc` that are set)."""
    return {k: target[k] for k in ("val_loss", "val_acc") if target.get(k) is not None}


def config_hash(cfg: DictConfig) -> str:
    """SHA-1 of the resolved config, less what does not change a run's record (`rerun`,
    `threads`, `summary`, `vectorize`, `tune`) and the nodes of features it does not use, so that adding a
    feature leaves earlier runs' hashes as they were."""
    kept = [k for k in cfg if k not in ("rerun", "threads", "summary", "vectorize", "hydra", "tune") and _used(cfg, k)]
    plain = {k: _plain(cfg, k) for k in kept}  # each resolved in place: a masked copy would copy the config
    return hashlib.sha1(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()


def _plain(cfg: DictConfig, key: str):
    node = cfg._get_node(key)
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, (DictConfig, ListConfig)) else cfg[key]


def _used(cfg: DictConfig, key: str) -> bool:
    """Whether a feature's node matters to this run: `lr_find` with `optimizer.lr=find`, `noise`
    when measured, `target` when set; every other node always."""
    node = cfg.get(key)
    if key in ("noise", "target") and node is None:
        return False
    if key == "lr_find":
        return OmegaConf.select(cfg, "optimizer.lr") == "find"
    if key == "noise":
        return bool(node.every or node.final)
    if key == "target":
        return bool(targets(node))
    return True


def config_changes(saved: DictConfig, cfg: DictConfig) -> list[str]:
    """`key: old → new` for every value that differs between two configs."""
    ignore = ("rerun", "threads", "summary.metric", "summary.x", "vectorize.max_members")
    # a feature's node the run does not use (a run saved before the feature existed has none)
    old, new = (flatten(OmegaConf.to_container(OmegaConf.masked_copy(c, [k for k in c if _used(c, k)])))
                for c in (saved, cfg))
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and k not in ignore)
    return [f"{k}: {old.get(k)} → {new.get(k)}" for k in keys]
