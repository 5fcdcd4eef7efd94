"""The config schema: types for Hydra to check as it composes, range rules for the rest.

Hydra's structured configs check types (`epochs=abc`) but not ranges (`optimizer.lr=-1`), so
every key also has a `Rule`: a predicate plus the words that tell a user what is allowed.
This module imports no torch, so `--help`, `--cfg job` and bad input answer at once.
"""

from __future__ import annotations

import difflib
import math
import re
import sys
from dataclasses import dataclass, field, fields
from typing import Any, Callable

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from optlab import allowlist

# config groups, plus `summary`: a plain node whose keys are checked like a group's
GROUPS = ("model", "data", "optimizer", "scheduler", "surface", "init", "early_stopping", "summary",
          "curvature", "vectorize", "lr_find", "tune", "noise", "target")

# what a sweep summary can rank by and plot against (optlab/compare.py)
METRICS = (
    "best_val_acc", "best_val_loss", "test_acc", "test_loss", "final_train_loss", "final_train_acc",
    "final_val_loss", "final_val_acc",
    "generalization_gap", "epoch_time_s", "wall_time_s", "epochs_run", "final_loss", "final_distance",
    "rate_measured", "lambda_max", "trace", "sharpness", "condition_number", "noise_b_simple",
    "steps_to_target", "examples_to_target", "time_to_target",
)
CURVE_X = ("epoch", "step", "examples", "time")
# what `optlab tune` can optimize: metrics a run has after every epoch, so a trial can be pruned
TUNE_METRICS = ("best_val_acc", "best_val_loss", "final_val_acc", "final_val_loss", "final_train_loss",
                "final_train_acc")

# Activation names a model may use, mapped to their torch.nn class names.
ACTIVATIONS = {
    "relu": "ReLU",
    "tanh": "Tanh",
    "sigmoid": "Sigmoid",
    "gelu": "GELU",
    "elu": "ELU",
    "leaky_relu": "LeakyReLU",
    "silu": "SiLU",
}


class UsageError(ValueError):
    """A user's mistake: the CLI prints its one-line message and exits with code 2."""


def flatten(node, prefix: str = "") -> dict:
    """{'a': {'b': 1}} → {'a.b': 1}: configs compared key by key."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def usage_error(error: BaseException | None) -> BaseException | None:
    """The user's mistake behind `error`, if any (Hydra's instantiate wraps it)."""
    while error is not None and not isinstance(error, UsageError):
        error = error.__cause__
    return error


def reason(error: BaseException, lines: int = 1) -> str:
    """What went wrong, for a one-line message: the first non-empty line(s) of the error's
    text, or its type's name when it has none."""
    text = [line.strip() for line in str(error).splitlines() if line.strip()]
    return " ".join(text[:lines]) or type(error).__name__


class ConfigError(UsageError):
    """A bad config value: names the key, the bad value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str, problem: str = "invalid value for"):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{problem} '{key}': {show(value)} (allowed: {allowed})")


def show(value: Any) -> str:
    """A value as the user would type it back: strings quoted, lists plain."""
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value)
    return repr(value) if isinstance(value, str) else str(value).replace("'", "")


@dataclass(frozen=True)
class Rule:
    allowed: str
    ok: Callable[[Any], bool]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_list(v: Any, item: Callable[[Any], bool]) -> bool:
    return isinstance(v, (list, tuple, ListConfig)) and all(item(x) for x in v)


def one_of(*choices: str) -> Rule:
    return Rule(", ".join(choices), lambda v: v in choices)


def pair(allowed: str, ok: Callable[[Any, Any], bool]) -> Rule:
    return Rule(allowed, lambda v: _is_list(v, _is_number) and len(v) == 2 and ok(*v))


POSITIVE_INT = Rule("an integer >= 1", lambda v: _is_int(v) and v >= 1)
NON_NEGATIVE_INT = Rule("an integer >= 0", lambda v: _is_int(v) and v >= 0)
POSITIVE = Rule("a number > 0", lambda v: _is_number(v) and v > 0)
NON_NEGATIVE = Rule("a number >= 0", lambda v: _is_number(v) and v >= 0)
FRACTION = Rule("a number in [0, 1)", lambda v: _is_number(v) and 0 <= v < 1)
OPEN_FRACTION = Rule("a number in (0, 1)", lambda v: _is_number(v) and 0 < v < 1)
BOOLEAN = Rule("true or false", lambda v: isinstance(v, bool))
BATCH_SIZE = Rule("an integer >= 1, or 'full'", lambda v: v == "full" or POSITIVE_INT.ok(v))
DEVICE = Rule(
    "auto, cpu, cuda, cuda:N or mps",
    lambda v: isinstance(v, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", v) is not None,
)


def key(rule: Rule, help: str) -> Any:
    """A top-level schema field: its value comes from conf/config.yaml."""
    return field(default=MISSING, metadata={"rule": rule, "help": help})


@dataclass
class Config:
    """Top-level keys. The groups are dicts here; `GROUP_RULES` checks their keys."""

    model: Any = MISSING
    data: Any = MISSING
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    surface: Any = None
    init: Any = MISSING
    early_stopping: Any = MISSING
    batch_size: Any = key(
        BATCH_SIZE, "examples per optimizer step; 'full' = batch gradient descent, 1 = SGD"
    )
    epochs: int = key(POSITIVE_INT, "passes over the training set")
    seed: int = key(NON_NEGATIVE_INT, "seeds weight init and batch order (not the data split)")
    device: str = key(DEVICE, "where to train: auto = CUDA when available, else CPU")
    shuffle: bool = key(BOOLEAN, "draw a new random batch order every epoch")
    steps: int = key(POSITIVE_INT, "optimizer steps on a 2-D surface (with surface=...)")
    precision: str = key(one_of("fp32", "bf16", "fp16"), "autocast to bf16 or fp16 (gradient scaling for fp16)")
    compile: bool = key(BOOLEAN, "torch.compile the model (slow to start, faster per step on a GPU)")
    diagnostics: bool = key(
        BOOLEAN, "log step/grad_norm, step/update_ratio, init/distinct_units (false: faster)"
    )
    diagnostics_every: int = key(
        POSITIVE_INT, "measure step/grad_norm and step/update_ratio every this many steps (1: every step)"
    )
    dropout: float = key(FRACTION, "dropout probability on every hidden layer (0 = none)")
    batchnorm: bool = key(BOOLEAN, "BatchNorm1d after each hidden affine layer, before its activation")
    l2: float = key(NON_NEGATIVE, "adds ½·l2·‖θ‖² to the loss (logged as step/l2_penalty)")
    weight_decay_mode: str = key(
        one_of("coupled", "decoupled", "l2"),
        "how optimizer.weight_decay=w acts: coupled (torch's), decoupled (θ ← θ − Δθ − w·θ) or l2",
    )
    weight_decay_exclude: Any = key(
        Rule("a list of: bias, norm", lambda v: _is_list(v, lambda x: x in ("bias", "norm"))),
        "parameters that get no weight decay or l2: biases, normalization layers",
    )
    diverge_threshold: float = key(
        POSITIVE, "stop a run as diverged once its loss exceeds this times its first loss (or NaN)"
    )
    rerun: bool = key(BOOLEAN, "in a sweep, train again runs already completed with this config")
    checkpoint_every_s: float = key(
        NON_NEGATIVE, "write checkpoints/last.pt at the end of an epoch this often (seconds; 0: every epoch)"
    )
    summary: Any = MISSING
    curvature: Any = MISSING
    vectorize: Any = MISSING
    lr_find: Any = MISSING
    noise: Any = MISSING
    target: Any = MISSING
    tune: Any = None  # only `optlab tune` (conf/tune.yaml) has it


GROUP_RULES: dict[str, Rule] = {
    "model.hidden": Rule(
        "a list of integers >= 1, e.g. [128,64]", lambda v: _is_list(v, POSITIVE_INT.ok)
    ),
    "model.activation": one_of(*ACTIVATIONS),
    "model.channels": Rule("a list of integers >= 1, e.g. [16,32]", lambda v: _is_list(v, POSITIVE_INT.ok)),
    "model.kernel_size": Rule("an odd integer >= 1", lambda v: _is_int(v) and v >= 1 and v % 2 == 1),
    "data.source.return_X_y": Rule("true", lambda v: v is True),
    "data.source.n_samples": POSITIVE_INT,
    "data.source.noise": NON_NEGATIVE,
    "data.source.random_state": NON_NEGATIVE_INT,
    "data.source.factor": OPEN_FRACTION,
    "data.source.centers": POSITIVE_INT,
    "data.source.n_features": POSITIVE_INT,
    "data.source.cluster_std": POSITIVE,
    "data.source.classes": Rule("an integer >= 2", lambda v: _is_int(v) and v >= 2),
    "data.source.turns": POSITIVE,
    "data.source.features": POSITIVE_INT,
    "data.source.kappa": Rule("a number >= 1", lambda v: _is_number(v) and v >= 1),
    "data.source.dataset": one_of("mnist", "fashion_mnist"),
    "data.source.root": Rule("a folder", lambda v: isinstance(v, str)),
    "data.source.download": BOOLEAN,
    "data.source.path": Rule("a file or folder", lambda v: v is None or isinstance(v, str)),
    "data.source.label": Rule("a column name", lambda v: isinstance(v, str)),
    "data.val_fraction": OPEN_FRACTION,
    "data.test_fraction": OPEN_FRACTION,
    "data.split_seed": NON_NEGATIVE_INT,
    "data.order": one_of("random", "sorted"),
    "data.standardize": BOOLEAN,
    "data.shape": Rule("null or a list of integers >= 1, e.g. [1,8,8]",
                       lambda v: v is None or _is_list(v, POSITIVE_INT.ok)),
    "data.in_memory": BOOLEAN,
    "data.workers": NON_NEGATIVE_INT,
    "data.root": Rule("a folder, e.g. ~/.cache/optlab", lambda v: isinstance(v, str)),
    "data.download": BOOLEAN,
    "data.path": Rule("a file or folder", lambda v: v is None or isinstance(v, str)),
    "data.label": Rule("a column name", lambda v: isinstance(v, str)),
    "data.context": NON_NEGATIVE_INT,
    "optimizer.lr": Rule("a number > 0, or find (the learning-rate range test picks it; see optlab lr-find)",
                         lambda v: v == "find" or POSITIVE.ok(v)),
    "optimizer.momentum": FRACTION,
    "optimizer.dampening": FRACTION,
    "optimizer.weight_decay": NON_NEGATIVE,
    "optimizer.nesterov": BOOLEAN,
    "optimizer.betas": pair(
        "two numbers in [0, 1), e.g. [0.9,0.999]", lambda a, b: FRACTION.ok(a) and FRACTION.ok(b)
    ),
    "optimizer.eps": POSITIVE,
    "optimizer.amsgrad": BOOLEAN,
    "optimizer.alpha": FRACTION,
    "optimizer.centered": BOOLEAN,
    "optimizer.lr_decay": NON_NEGATIVE,
    "optimizer.initial_accumulator_value": NON_NEGATIVE,
    "optimizer.rho": FRACTION,
    "optimizer.momentum_decay": NON_NEGATIVE,
    "optimizer.decoupled_weight_decay": BOOLEAN,
    "optimizer.etas": pair("two numbers 0 < eta- < 1 < eta+, e.g. [0.5,1.2]", lambda a, b: 0 < a < 1 < b),
    "optimizer.step_sizes": pair("two numbers 0 < min <= max, e.g. [1e-6,50]", lambda a, b: 0 < a <= b),
    "optimizer.max_iter": POSITIVE_INT,
    "optimizer.history_size": POSITIVE_INT,
    "optimizer.tolerance_grad": NON_NEGATIVE,
    "optimizer.tolerance_change": NON_NEGATIVE,
    "optimizer.line_search_fn": Rule("strong_wolfe or null", lambda v: v in ("strong_wolfe", None)),
    "optimizer.mu": POSITIVE,
    "optimizer.decay": NON_NEGATIVE,
    "optimizer.damping": NON_NEGATIVE,
    "optimizer.max_params": POSITIVE_INT,
    "scheduler.interval": one_of("epoch", "step"),
    "scheduler.factor": Rule("a number in (0, 1]", lambda v: _is_number(v) and 0 < v <= 1),
    "scheduler.total_iters": NON_NEGATIVE_INT,
    "scheduler.step_size": POSITIVE_INT,
    "scheduler.gamma": Rule("a number in (0, 1]", lambda v: _is_number(v) and 0 < v <= 1),
    "scheduler.milestones": Rule("a list of epochs, e.g. [10,15]", lambda v: _is_list(v, POSITIVE_INT.ok)),
    "scheduler.k": NON_NEGATIVE,
    "scheduler.mode": one_of("min"),
    "scheduler.patience": NON_NEGATIVE_INT,
    "scheduler.threshold": NON_NEGATIVE,
    "scheduler.cooldown": NON_NEGATIVE_INT,
    "scheduler.min_lr": NON_NEGATIVE,
    "scheduler.T_max": POSITIVE_INT,
    "scheduler.eta_min": NON_NEGATIVE,
    "scheduler.warmup_epochs": NON_NEGATIVE_INT,
    "scheduler.start_factor": Rule("a number in (0, 1]", lambda v: _is_number(v) and 0 < v <= 1),
    "scheduler.epochs": POSITIVE_INT,
    "scheduler.steps_per_epoch": Rule("null (optlab fills it in)", lambda v: v is None),
    "scheduler.max_lr": POSITIVE,
    "scheduler.pct_start": OPEN_FRACTION,
    "init.scheme": one_of(
        "default", "zeros", "constant", "normal", "uniform", "xavier_uniform", "xavier_normal",
        "kaiming_uniform", "kaiming_normal", "orthogonal", "pretrained", "layerwise",
    ),
    "init.bias": Rule("a number", _is_number),
    "init.value": Rule("a number", _is_number),
    "init.std": POSITIVE,
    "init.a": POSITIVE,
    "init.gain": POSITIVE,
    "init.nonlinearity": one_of("relu", "leaky_relu", "tanh", "sigmoid", "linear", "selu"),
    "init.path": Rule("a checkpoint file or run folder", lambda v: v is None or isinstance(v, str)),
    "init.base": one_of(
        "default", "zeros", "xavier_uniform", "xavier_normal", "kaiming_uniform",
        "kaiming_normal", "orthogonal",
    ),
    "init.epochs": POSITIVE_INT,
    "init.lr": POSITIVE,
    "early_stopping.monitor": Rule("val_loss, val_acc or null", lambda v: v in ("val_loss", "val_acc", None)),
    "early_stopping.patience": NON_NEGATIVE_INT,
    "early_stopping.min_delta": NON_NEGATIVE,
    "early_stopping.restore_best": BOOLEAN,
    "early_stopping.start_epoch": NON_NEGATIVE_INT,
    "curvature.every": NON_NEGATIVE_INT,
    "curvature.final": BOOLEAN,
    "curvature.samples": POSITIVE_INT,
    "curvature.iters": POSITIVE_INT,
    "curvature.probes": POSITIVE_INT,
    "curvature.epsilon": POSITIVE,
    "curvature.exact_max_params": NON_NEGATIVE_INT,
    "vectorize.max_members": POSITIVE_INT,
    "noise.every": NON_NEGATIVE_INT,
    "noise.final": BOOLEAN,
    "noise.samples": Rule("an integer >= 2", lambda v: _is_int(v) and v >= 2),
    "target.val_loss": Rule("null or a number > 0", lambda v: v is None or POSITIVE.ok(v)),
    "target.val_acc": Rule("null or a number in (0, 1]", lambda v: v is None or _is_number(v) and 0 < v <= 1),
    "target.stop": BOOLEAN,
    "lr_find.min_lr": POSITIVE,
    "lr_find.max_lr": POSITIVE,
    "lr_find.steps": Rule("an integer >= 10", lambda v: _is_int(v) and v >= 10),
    "lr_find.stop_factor": Rule("a number > 1", lambda v: _is_number(v) and v > 1),
    "lr_find.beta": FRACTION,
    "tune.trials": POSITIVE_INT,
    "tune.sampler": one_of("tpe", "random", "grid", "cmaes"),
    "tune.pruner": one_of("none", "median", "hyperband", "successive_halving"),
    "tune.metric": one_of(*TUNE_METRICS),
    "tune.direction": one_of("auto", "maximize", "minimize"),
    "tune.seed": NON_NEGATIVE_INT,
    "tune.grace_s": POSITIVE,
    "tune.dir": Rule("a folder", lambda v: isinstance(v, str) and v != ""),
    "tune.params": Rule("key: search expression, e.g. optimizer.lr: tag(log, interval(1e-4, 1))",
                        lambda v: isinstance(v, DictConfig) and all(isinstance(x, str) for x in v.values())),
    "summary.metric": one_of(*METRICS),
    "summary.x": one_of(*CURVE_X),
    "surface.kappa": Rule("a number >= 1", lambda v: _is_number(v) and v >= 1),
    "surface.angle": Rule("a number (degrees)", _is_number),
    "surface.start": pair("two numbers [x,y]", lambda x, y: True),
}


def top_level_keys() -> dict[str, dict]:
    """Top-level key name → its field metadata (rule and help)."""
    return {f.name: f.metadata for f in fields(Config) if f.metadata}


def rule_for(path: str) -> Rule | None:
    meta = top_level_keys().get(path)
    return meta["rule"] if meta else GROUP_RULES.get(path)


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
            allowed = options(name) or [top_level_keys()[name]["rule"].allowed] if name in top_level_keys() else []
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


def construct(key: str, node: Any, mistakes: tuple[type[Exception], ...] = (ValueError,), at: str | None = None,
              **kwargs: Any) -> Any:
    """`instantiate(node)` for something the user configured (the config at dotted path `at`,
    default `key`), resolved and checked by the allow-list first (optlab/allowlist.py): a
    constructor's complaint about its arguments (torch's ValueErrors: `nesterov` without
    momentum, OneCycleLR on an optimizer without momentum; a data file that does not read) is the
    user's to fix, so it comes out as a one-line UsageError starting with `key`. A UsageError
    raised inside comes out as it is."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    plain = allowlist.built(node, at or key)
    try:
        return instantiate(plain, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, UsageError):
            raise cause from None
        if isinstance(cause, mistakes):
            raise UsageError(f"{key}: {reason(cause)}") from None
        raise


def option_groups() -> list[str]:
    """The config groups a user picks an option of: the folders of conf/, less Hydra's."""
    from importlib.resources import files

    return sorted(p.name for p in files("optlab.conf").iterdir() if p.is_dir() and p.name not in ("hydra", "__pycache__"))


def options(group: str) -> list[str]:
    """The options of a config group: the YAML files in conf/<group>/ (empty for a key)."""
    from importlib.resources import files

    folder = files("optlab.conf") / group
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml")) if folder.is_dir() else []


def suggest(name: str, known: list[str]) -> str:
    """' (did you mean 'x'?)' for a near miss, else ''."""
    close = difflib.get_close_matches(name, known, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def keys_help() -> str:
    width = max(map(len, top_level_keys()))
    return "\n".join(
        f"  {name:<{width}}  {meta['help']} ({meta['rule'].allowed})"
        for name, meta in top_level_keys().items()
    )


def targets(target) -> dict:
    """The targets a run watches (`target.val_loss`, `target.val_acc` that are set)."""
    return {k: target[k] for k in ("val_loss", "val_acc") if target.get(k) is not None}


def scaled_lr(batch_size: Any, lr_max: float, b_noise: float) -> float:
    """`${optlab_scaled_lr:${batch_size},lr_max,b_noise}`: the learning rate for a batch size as
    McCandlish et al. (2018, eq. 2.6) scale it, ε(B) = ε_max / (1 + B_noise/B): linear in B for
    small batches, saturating at ε_max for large ones (`full` takes ε_max)."""
    return float(lr_max) if batch_size == "full" else float(lr_max) / (1 + float(b_noise) / float(batch_size))


def register() -> None:
    """Make the schema and the resolvers that conf/config.yaml uses known to Hydra."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="optlab_schema", node=Config)
    from optlab.naming import job_dir, run_name

    resolvers = {"optlab_run_name": run_name, "optlab_job_dir": job_dir, "optlab_keys_help": keys_help,
                 "optlab_scaled_lr": scaled_lr}
    for name, resolver in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


def describe(error: Exception, args: list[str]) -> str:
    """One line for a user's mistake: the key, the value, and what is allowed."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    if isinstance(error, OverrideParseException):
        return f"cannot parse override: {reason(error)}"
    if isinstance(error, MissingConfigException) and error.options:
        missing = re.search(r"Could not find '([^']+)'", str(error))
        group, _, option = (missing.group(1) if missing else "?/?").rpartition("/")
        return str(ConfigError(group, option, ", ".join(error.options), "unknown option for"))
    cause = error.__cause__ or error
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError, ValidationError)) and cause.full_key:
        path = cause.full_key
        value = _typed_value(path, args)
        if isinstance(cause, ValidationError):
            rule = rule_for(path)
            allowed = rule.allowed if rule else reason(cause)
            return str(ConfigError(path, value, allowed))
        removed = [a.partition("=")[0][1:] for a in args if a.startswith("~")]
        for key in removed:
            if path == key or path.startswith(f"{key}."):
                return f"'{key}' cannot be removed: every run needs it (see: optlab train --help)"
        parent, _, name = path.rpartition(".")
        known = [str(k) for k in (cause.parent_node or {}) if k not in ("_target_", "hydra")]
        hint = suggest(name, known)
        where = f"'{parent}'" if parent else "the top level"
        return (
            f"unknown key '{path}': {show(value)}{hint} "
            f"(allowed at {where}: {', '.join(known)})"
        )
    return reason(error)


def _typed_value(path: str, args: list[str]) -> object:
    """The value the user wrote for `path` on the command line, parsed as YAML reads it."""
    import yaml

    for arg in args:
        name, sep, value = arg.lstrip("+~").partition("=")
        if sep and name == path:
            try:
                return yaml.safe_load(value)
            except yaml.YAMLError:
                return value
    return "?"
