"""What a config may build: the only `_target_` values optlab hands to Hydra's `instantiate`.

A run folder is data, never code. Its `.hydra/config.yaml` and `overrides.yaml` are read back by
resume, `compare`, `landscape`, the sweep summary, `report` and `tune`, and a `_target_` in them
names a callable that `instantiate` would import and call: `torch.load` of a pickle,
`torch.ops.load_library` of a shared object, `os.system`. Hydra's own blocklist stops only a few
names, so optlab keeps an explicit allow-list instead and checks every `_target_` against it
before anything is imported: when a config is validated (the command line's and a file's alike)
and again on the line that builds the object (`config.construct`), whatever path led there.

Each key that builds something takes the callables its shipped options name (conf/<group>/),
plus, for `optimizer`, every optimizer of `torch.optim` and, for `scheduler`, the schedules of
`torch.optim.lr_scheduler` that are made from numbers (LambdaLR, MultiplicativeLR, SequentialLR
and ChainedScheduler take callables or other schedules, which a config cannot name safely). A
`_target_` anywhere else, nested ones included, is refused. Imports no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from omegaconf import DictConfig, ListConfig
from omegaconf.errors import OmegaConfBaseException

TORCH_OPTIMIZERS = ("ASGD", "Adadelta", "Adafactor", "Adagrad", "Adam", "AdamW", "Adamax", "LBFGS", "Muon", "NAdam",
                    "RAdam", "RMSprop", "Rprop", "SGD", "SparseAdam")
TORCH_SCHEDULES = ("ConstantLR", "CosineAnnealingLR", "CosineAnnealingWarmRestarts", "CyclicLR", "ExponentialLR",
                   "LinearLR", "MultiStepLR", "OneCycleLR", "PolynomialLR", "ReduceLROnPlateau", "StepLR")

ALLOWED: dict[str, frozenset[str]] = {
    "data.source._target_": frozenset((
        *(f"optlab.datasets.{name}" for name in ("cifar10", "csv", "digits", "frames", "idx_images", "mnist5k",
                                                 "npz", "regression", "spirals")),
        *(f"sklearn.datasets.make_{name}" for name in ("blobs", "circles", "moons")),
    )),
    "model._target_": frozenset(("optlab.models.MLP", "optlab.models.CNN")),
    "optimizer._target_": frozenset((
        *(f"torch.optim.{name}" for name in TORCH_OPTIMIZERS), "optlab.optim.Newton", "optlab.optim.QuickProp",
    )),
    "scheduler._target_": frozenset((
        *(f"torch.optim.lr_scheduler.{name}" for name in TORCH_SCHEDULES),
        "optlab.schedules.Exponential", "optlab.schedules.warmup_cosine",
    )),
    "surface._target_": frozenset(f"optlab.surfaces.{name}" for name in ("Beale", "Quadratic", "Rosenbrock", "Saddle")),
}


def check(node: Any, at: str) -> None:
    """Refuse, with a one-line ConfigError naming the key and the value, any `_target_` in
    `node` (the config at dotted path `at`, resolved as it is read) that the allow-list does not
    hold for its key."""
    from optlab.config import ConfigError

    for path, value in targets(node, at):
        allowed = ALLOWED.get(path)
        if allowed is None or value not in allowed:
            what = ", ".join(sorted(allowed)) if allowed else \
                f"no _target_ here; only {', '.join(k.rsplit('.', 1)[0] for k in ALLOWED)} name what optlab builds"
            raise ConfigError(path, value, what, "refused")


def check_file(cfg: Any, file: Path) -> None:
    """`check` over a whole config read from `file` (a run folder's): a refusal names the file."""
    from optlab.config import UsageError

    try:
        check(cfg, "")
    except UsageError as error:
        raise UsageError(f"{file}: {error}") from None


def targets(node: Any, at: str) -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every `_target_` at or below `node`, interpolations resolved as
    `instantiate` would resolve them (a `${oc.create:...}` or a reference can make a node that
    holds one)."""
    if isinstance(node, (DictConfig, dict)):
        for name in node:
            try:
                value = node[name]
            except OmegaConfBaseException:  # resolves only inside Hydra: nothing is built from it here either
                continue
            path = f"{at}.{name}" if at else str(name)
            if name == "_target_":
                yield path, value
            else:
                yield from targets(value, path)
    elif isinstance(node, (ListConfig, list, tuple)):
        for i, value in enumerate(node):
            yield from targets(value, f"{at}[{i}]")
