"""What a config may build: the only `_target_` values optlab imports and calls.

A run folder is data, never code. Its `.hydra/config.yaml` and `overrides.yaml` are read back by
resume, `compare`, `landscape`, the sweep summary, `report` and `tune`, and a `_target_` in them
names a callable that building it would import and call: `torch.load` of a pickle,
`torch.ops.load_library` of a shared object, `os.system`. Hydra's own blocklist stops only a few
names, so optlab keeps an explicit allow-list instead and checks every `_target_` against it
before anything is imported: when a config is validated (the command line's and a file's alike)
and again on the line that builds the object (`construct`, below), whatever path led there.

Each key that builds something takes the callables its shipped options name (conf/<group>/),
plus, for `optimizer`, every optimizer of `torch.optim` and, for `scheduler`, the schedules of
`torch.optim.lr_scheduler` that are made from numbers (LambdaLR, MultiplicativeLR, SequentialLR
and ChainedScheduler take callables or other schedules, which a config cannot name safely). A
`_target_` anywhere else, nested ones included, is refused. Imports no torch.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Iterator

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from optlab.errors import UsageError, reason

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
        "optlab.schedules.Exponential", "optlab.schedules.warmup_cosine", "optlab.schedules.Piecewise",
    )),
    "surface._target_": frozenset(f"optlab.surfaces.{name}" for name in ("Beale", "Quadratic", "Rosenbrock", "Saddle")),
}


def check(node: Any, at: str) -> None:
    """Refuse, with a one-line ConfigError naming the key and the value, any `_target_` in
    `node` (the config at dotted path `at`) that the allow-list does not hold for its key: one
    that is not a plain string, an interpolation among them (it could resolve to anything by
    the time the object is built)."""
    from optlab.errors import ConfigError

    for path, value in targets(node, at):
        allowed = ALLOWED.get(path)
        if not isinstance(value, str) or allowed is None or value not in allowed:
            what = ", ".join(sorted(allowed)) if allowed else \
                f"no _target_ here; only {', '.join(k.rsplit('.', 1)[0] for k in ALLOWED)} name what optlab builds"
            raise ConfigError(path, value, what, "refused")


def check_file(cfg: Any, file: Path) -> None:
    """`check` over a whole config read from `file` (a run folder's): a refusal names the file."""
    from optlab.errors import ConfigError, UsageError

    try:
        check(cfg, "")
        for path, text in _texts(cfg, ""):
            if "${" in text:  # an escaped interpolation: live again in any config made of these values
                raise ConfigError(path, text, "a value, not an interpolation once resolved", "refused")
    except UsageError as error:
        raise UsageError(f"{file}: {error}") from None


# the parameters a config can give by name
NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


# keys that steer Hydra's `instantiate`, not the object: `construct` builds without it
HYDRA_FLAGS = ("_args_", "_convert_", "_partial_", "_recursive_")


def built(node: Any, at: str) -> Any:
    """`node` (the config at `at`) as `construct` may build it, plain data: every interpolation
    resolved now, in the config it belongs to (one that does not resolve is a one-line refusal),
    every `_target_` checked, no flag of Hydra's `instantiate`, and no text left that a config
    made of these values would read as an interpolation again."""
    from optlab.errors import ConfigError, UsageError, reason

    try:
        plain = OmegaConf.to_container(node, resolve=True) if isinstance(node, (DictConfig, ListConfig)) else node
    except OmegaConfBaseException as error:
        raise UsageError(f"{at}: cannot resolve: {reason(error)}") from None
    check(plain, at)
    if not isinstance(plain, dict) or "_target_" not in plain:
        allowed = ", ".join(sorted(ALLOWED.get(f"{at}._target_", ())))
        raise ConfigError(at, plain, f"a mapping whose _target_ is one of {allowed}" if allowed else "a mapping")
    odd = [name for name in plain if not isinstance(name, str)]
    if odd:
        raise ConfigError(f"{at}.{odd[0]}", plain[odd[0]], "keys that are names", "refused")
    flags = [name for name in plain if name in HYDRA_FLAGS]
    if flags:
        raise ConfigError(f"{at}.{flags[0]}", plain[flags[0]], "none: optlab calls the _target_ with the "
                          "node's values itself", "refused")
    for path, text in _texts(plain, at):
        if "${" in text:
            raise ConfigError(path, text, "a value, not an interpolation once resolved", "refused")
    return plain


def targets(node: Any, at: str) -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every `_target_` at or below `node` (see `_walk`)."""
    return ((path, value) for path, value in _walk(node, at) if path.rpartition(".")[2] == "_target_")


def _texts(node: Any, at: str) -> Iterator[tuple[str, str]]:
    """(dotted path, text) of every string at or below `node` but a `_target_` (see `_walk`)."""
    return ((path, value) for path, value in _walk(node, at)
            if isinstance(value, str) and path.rpartition(".")[2] != "_target_")


def _walk(node: Any, at: str) -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every `_target_` and every other leaf at or below `node`. An
    interpolated `_target_` is given as its text (never in the list: it could resolve to anything
    by the time the object is built); other interpolations are resolved as they are read (a
    `${oc.create:...}` or a reference can make a node that holds a `_target_`), and one that
    resolves only inside Hydra is left out (`built` refuses it where it must be built)."""
    if isinstance(node, (DictConfig, dict)):
        for name in node:
            path = f"{at}.{name}" if at else str(name)
            if name == "_target_" and isinstance(node, DictConfig) and OmegaConf.is_interpolation(node, name):
                yield path, node._get_node(name)._value()
                continue
            try:
                value = node[name]
            except OmegaConfBaseException:
                continue
            yield from [(path, value)] if name == "_target_" else _walk(value, path)
    elif isinstance(node, (ListConfig, list, tuple)):
        for i, value in enumerate(node):
            yield from _walk(value, f"{at}[{i}]")
    else:
        yield at, node


def construct(key: str, node: Any, mistakes: tuple[type[Exception], ...] = (ValueError,), at: str | None = None,
              **kwargs: Any) -> Any:
    """Build what the user configured (the config at dotted path `at`, default `key`): resolved
    and checked by the allow-list first (`built`), then its `_target_`, located by Hydra's
    `get_method`, called with its plain values and `kwargs` (which win). That is the call Hydra's
    `instantiate(node, _convert_="all")` makes for a node without a nested `_target_` (the
    allow-list refuses those), without first building an OmegaConf config of every argument: a
    run's model, optimizer and schedule in a sixth of `instantiate`'s time (scripts/
    bench_bookkeeping.py, row `build`), three calls of each member of a vectorized group. Arguments the callable does not take, or a missing one, are the user's
    mistake and come out as one line naming them, as does a constructor's complaint about its
    arguments (torch's ValueErrors: `nesterov` without momentum, OneCycleLR on an optimizer
    without momentum; a data file that does not read), starting with `key`. A UsageError raised
    inside comes out as it is."""
    from hydra.utils import get_method

    plain = built(node, at or key)
    arguments = {**{name: value for name, value in plain.items() if name != "_target_"}, **kwargs}  # kwargs win
    try:
        build = get_method(plain["_target_"])
    except Exception as error:  # an allowed name that the installed torch lacks
        raise UsageError(f"{key}: cannot import {plain['_target_']}: {reason(error)}") from None
    signature = inspect.signature(build)
    try:
        signature.bind(**arguments)
    except TypeError as error:  # `optimizer._target_=torch.optim.Adam` with SGD's `momentum`
        takes = [name for name, p in signature.parameters.items() if name not in kwargs and p.kind in NAMED]
        raise UsageError(f"{key}: {plain['_target_']} {error} (its arguments: {', '.join(takes)})") from None
    try:
        return build(**arguments)
    except UsageError:
        raise
    except mistakes as error:
        raise UsageError(f"{key}: {reason(error)}") from None
