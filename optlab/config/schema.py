"""The config schema: types for Hydra to check as it composes, range rules for the rest.

Hydra's structured configs check types (`epochs=abc`) but not ranges (`optimizer.lr=-1`), so
every key also has a `Rule`: a predicate plus the words that tell a user what is allowed, and
a help line. One source for `--help`, the reference (docs/reference/config.md, made by
scripts/reference.py) and the checks (optlab/config/checks.py). No torch here, so `--help`,
`--cfg job` and bad input answer at once.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from typing import Any, Callable

from omegaconf import MISSING, DictConfig, ListConfig

from optlab.metrics import CURVE_X, METRICS, TUNE_METRICS

# config groups, plus `summary`: a plain node whose keys are checked like a group's
GROUPS = ("model", "data", "optimizer", "scheduler", "surface", "init", "early_stopping", "summary",
          "curvature", "vectorize", "lr_find", "tune", "noise", "target")


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


FILE_OR_FOLDER = Rule("a file or folder", lambda v: v is None or isinstance(v, str))


COLUMN = Rule("a column name", lambda v: isinstance(v, str))


THREADS = Rule("auto, or an integer >= 1", lambda v: v == "auto" or POSITIVE_INT.ok(v))


@dataclass(frozen=True)
class Key:
    """A group key's rule and the line that explains it."""

    rule: Rule
    help: str


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
    threads: Any = key(THREADS, "torch's CPU threads: auto = one for a small model, else the cores "
                                "(shared by a sweep's parallel jobs, at most OMP_NUM_THREADS)")
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


# every key of a config group: its rule and its help line (one source for the checks,
# `--help` and docs/reference/config.md)
GROUP_KEYS: dict[str, Key] = {
    "model.hidden": Key(
        Rule(
        "a list of integers >= 1, e.g. [128,64]", lambda v: _is_list(v, POSITIVE_INT.ok)
    ),
        "widths of the hidden layers, input to output",
    ),
    "model.activation": Key(
        one_of(*ACTIVATIONS),
        "nonlinearity after every hidden layer (and, for cnn, every conv block)",
    ),
    "model.channels": Key(
        Rule("a list of integers >= 1, e.g. [16,32]", lambda v: _is_list(v, POSITIVE_INT.ok)),
        "output channels of each conv block, Conv2d → activation → MaxPool2d(2) (model=cnn)",
    ),
    "model.kernel_size": Key(
        Rule("an odd integer >= 1", lambda v: _is_int(v) and v >= 1 and v % 2 == 1),
        "side of each square convolution kernel; padding keeps the size (model=cnn)",
    ),
    "data.source.n_samples": Key(POSITIVE_INT, "examples to generate (moons, circles, blobs, spirals, regression)"),
    "data.source.noise": Key(
        NON_NEGATIVE,
        "std of the Gaussian noise on the points (moons, circles, spirals) or on y (regression)",
    ),
    "data.source.random_state": Key(
        NON_NEGATIVE_INT,
        "seed of the generated data (synthetic datasets), apart from seed and split_seed",
    ),
    "data.source.factor": Key(OPEN_FRACTION, "inner circle's radius as a fraction of the outer one's (data=circles)"),
    "data.source.centers": Key(POSITIVE_INT, "number of Gaussian clusters, one per class (data=blobs)"),
    "data.source.n_features": Key(POSITIVE_INT, "input dimensions of the generated points (data=blobs)"),
    "data.source.cluster_std": Key(POSITIVE, "standard deviation of each cluster (data=blobs)"),
    "data.source.classes": Key(
        Rule("an integer >= 2", lambda v: _is_int(v) and v >= 2),
        "spiral arms, one per class (data=spirals)",
    ),
    "data.source.turns": Key(POSITIVE, "turns each spiral arm makes around the centre (data=spirals)"),
    "data.source.features": Key(POSITIVE_INT, "input features, the columns of X (data=regression)"),
    "data.source.kappa": Key(
        Rule("a number >= 1", lambda v: _is_number(v) and v >= 1),
        "condition number of the mean-squared-error Hessian (data=regression)",
    ),
    "data.source.dataset": Key(
        one_of("mnist", "fashion_mnist"),
        "which IDX dataset to read; data=mnist and data=fashion_mnist set it",
    ),
    "data.source.root": Key(
        Rule("a folder", lambda v: isinstance(v, str)),
        "where the image files are; follows data.root (set that instead)",
    ),
    "data.source.download": Key(BOOLEAN, "fetch missing official files; follows data.download (set that instead)"),
    "data.source.path": Key(
        FILE_OR_FOLDER,
        "the file or folder read; follows data.path (set that instead)",
    ),
    "data.source.label": Key(
        COLUMN,
        "the class column of the CSV; follows data.label (set that instead)",
    ),
    "data.val_fraction": Key(
        OPEN_FRACTION,
        "share of the examples held out for validation (of the official training set if any)",
    ),
    "data.test_fraction": Key(
        OPEN_FRACTION,
        "share of the examples held out as the test split (unused with an official test set)",
    ),
    "data.split_seed": Key(
        NON_NEGATIVE_INT,
        "seeds the train/val/test split (and its order), independent of the training seed",
    ),
    "data.order": Key(
        one_of("random", "sorted"),
        "order of the stored training set: the split's, or sorted by class (see shuffle=false)",
    ),
    "data.standardize": Key(BOOLEAN, "standardize each input feature with training statistics only"),
    "data.shape": Key(
        Rule("null or a list of integers >= 1, e.g. [1,8,8]",
                       lambda v: v is None or _is_list(v, POSITIVE_INT.ok)),
        "reshape each example, e.g. to images for model=cnn; null keeps the source's shape",
    ),
    "data.in_memory": Key(
        BOOLEAN,
        "keep the data on the training device (false: a DataLoader feeds it from the host)",
    ),
    "data.workers": Key(NON_NEGATIVE_INT, "worker processes of the DataLoader when data.in_memory=false"),
    "data.root": Key(
        Rule("a folder, e.g. ~/.cache/optlab", lambda v: isinstance(v, str)),
        "folder holding <dataset>/ with the official files (mnist, fashion_mnist, cifar10)",
    ),
    "data.download": Key(
        BOOLEAN,
        "fetch the official files into data.root when missing (mnist, fashion_mnist, cifar10)",
    ),
    "data.path": Key(
        FILE_OR_FOLDER,
        "your data: an .npz file (npz), a .csv file (csv) or a folder of utterances (frames)",
    ),
    "data.label": Key(
        COLUMN,
        "the column that holds the class; every other column is a feature (data=csv)",
    ),
    "data.context": Key(
        NON_NEGATIVE_INT,
        "frames on each side of a frame in its example; input (2·context+1)·features (data=frames)",
    ),
    "optimizer.lr": Key(
        Rule("a number > 0, or find (the learning-rate range test picks it; see optlab lr-find)",
                         lambda v: v == "find" or POSITIVE.ok(v)),
        "learning rate: the step size (rprop: the first step Δ₀; newton: 1 = the full Newton step)",
    ),
    "optimizer.momentum": Key(
        FRACTION,
        "momentum coefficient μ, SGD's b ← μ·b + g (sgd, momentum, nesterov; rmsprop)",
    ),
    "optimizer.dampening": Key(
        FRACTION,
        "the momentum buffer adds (1 − dampening)·g instead of g (sgd, momentum, nesterov)",
    ),
    "optimizer.weight_decay": Key(
        NON_NEGATIVE,
        "decay coefficient w; weight_decay_mode says how it acts (AdamW's own is decoupled)",
    ),
    "optimizer.nesterov": Key(
        BOOLEAN,
        "take the gradient at the look-ahead point, Nesterov's momentum (needs momentum > 0)",
    ),
    "optimizer.betas": Key(
        pair(
        "two numbers in [0, 1), e.g. [0.9,0.999]", lambda a, b: FRACTION.ok(a) and FRACTION.ok(b)
    ),
        "decay rates (β₁, β₂) of the running averages of g and g² (adam, adamw, nadam, ...)",
    ),
    "optimizer.eps": Key(POSITIVE, "added to the denominator for numerical stability (adaptive methods)"),
    "optimizer.amsgrad": Key(BOOLEAN, "divide by the largest g² average so far: AMSGrad (adam, adamw)"),
    "optimizer.alpha": Key(FRACTION, "smoothing constant α of the squared-gradient average v (optimizer=rmsprop)"),
    "optimizer.centered": Key(BOOLEAN, "divide by the gradient's estimated variance, not its second moment (rmsprop)"),
    "optimizer.lr_decay": Key(NON_NEGATIVE, "the rate at step t is lr / (1 + (t − 1)·lr_decay) (optimizer=adagrad)"),
    "optimizer.initial_accumulator_value": Key(
        NON_NEGATIVE,
        "starting value of each weight's sum of squared gradients G (adagrad)",
    ),
    "optimizer.rho": Key(FRACTION, "decay ρ of the running averages E[g²] and E[Δx²] (optimizer=adadelta)"),
    "optimizer.momentum_decay": Key(NON_NEGATIVE, "ψ of Dozat's momentum schedule (optimizer=nadam)"),
    "optimizer.decoupled_weight_decay": Key(
        BOOLEAN,
        "apply weight_decay as AdamW does, not through the gradient (nadam, radam)",
    ),
    "optimizer.etas": Key(
        pair("two numbers 0 < eta- < 1 < eta+, e.g. [0.5,1.2]", lambda a, b: 0 < a < 1 < b),
        "Rprop's step-size factors (decrease, increase) on a sign change / no change",
    ),
    "optimizer.step_sizes": Key(
        pair("two numbers 0 < min <= max, e.g. [1e-6,50]", lambda a, b: 0 < a <= b),
        "bounds (min, max) on each weight's step size Δ (optimizer=rprop)",
    ),
    "optimizer.max_iter": Key(
        POSITIVE_INT,
        "most iterations in one optimizer step, each re-evaluating the loss (lbfgs)",
    ),
    "optimizer.history_size": Key(
        POSITIVE_INT,
        "past updates kept for the inverse-Hessian approximation (optimizer=lbfgs)",
    ),
    "optimizer.tolerance_grad": Key(
        NON_NEGATIVE,
        "a step's iterations end once every |gradient| is at most this (lbfgs)",
    ),
    "optimizer.tolerance_change": Key(
        NON_NEGATIVE,
        "a step's iterations end once loss or weights change by less than this (lbfgs)",
    ),
    "optimizer.line_search_fn": Key(
        Rule("strong_wolfe or null", lambda v: v in ("strong_wolfe", None)),
        "strong-Wolfe line search, or null for fixed steps of lr (optimizer=lbfgs)",
    ),
    "optimizer.mu": Key(POSITIVE, "growth cap μ: a step is at most μ times the previous one (optimizer=quickprop)"),
    "optimizer.decay": Key(NON_NEGATIVE, "weight-decay term decay·w added to each slope (quickprop; Fahlman: 1e-4)"),
    "optimizer.damping": Key(
        NON_NEGATIVE,
        "starting λ of (H + λI)⁻¹∇f: ×3 on a rejected step, ÷3 on a kept one (newton)",
    ),
    "optimizer.max_params": Key(
        POSITIVE_INT,
        "the largest model, in parameters, whose P×P Hessian it builds (optimizer=newton)",
    ),
    "scheduler.interval": Key(
        one_of("epoch", "step"),
        "when optlab calls the schedule's step(): after each epoch, or each optimizer step",
    ),
    "scheduler.factor": Key(
        Rule("a number in (0, 1]", lambda v: _is_number(v) and 0 < v <= 1),
        "multiplies the rate: for total_iters (constant), on each reduction (plateau)",
    ),
    "scheduler.total_iters": Key(
        NON_NEGATIVE_INT,
        "epochs (or steps) at factor·lr before lr returns (scheduler=constant; 0: never)",
    ),
    "scheduler.step_size": Key(POSITIVE_INT, "epochs (or steps) between two decays by gamma (scheduler=step)"),
    "scheduler.gamma": Key(
        Rule("a number in (0, 1]", lambda v: _is_number(v) and 0 < v <= 1),
        "multiplies the rate at each decay (step, multistep)",
    ),
    "scheduler.milestones": Key(
        Rule("a list of epochs, e.g. [10,15]", lambda v: _is_list(v, POSITIVE_INT.ok)),
        "epochs at which the rate is multiplied by gamma (scheduler=multistep)",
    ),
    "scheduler.at": Key(
        Rule("epochs and the numbers they set, e.g. {5:{lr:0.05},10:{lr:0.01,momentum:0.9}}",
             lambda v: v is None or isinstance(v, (dict, DictConfig)) and all(
                 POSITIVE_INT.ok(e) and isinstance(n, (dict, DictConfig)) and n and all(
                     isinstance(name, str) and NON_NEGATIVE.ok(x) for name, x in n.items()) for e, n in v.items())),
        "after each of these epochs, set the optimizer's numbers (scheduler=piecewise: a schedule optlab tune "
        "tune.sampler=pbt found)",
    ),
    "scheduler.k": Key(NON_NEGATIVE, "decay per optimizer step in lr = lr0·e^(−k·t) (scheduler=exponential)"),
    "scheduler.mode": Key(one_of("min"), "plateau: the validation loss is better lower"),
    "scheduler.patience": Key(
        NON_NEGATIVE_INT,
        "epochs without improvement of the validation loss before a reduction (plateau)",
    ),
    "scheduler.threshold": Key(
        NON_NEGATIVE,
        "least relative improvement of the validation loss that counts (plateau)",
    ),
    "scheduler.cooldown": Key(NON_NEGATIVE_INT, "epochs after a reduction before patience counts again (plateau)"),
    "scheduler.min_lr": Key(NON_NEGATIVE, "the rate never falls below this (plateau)"),
    "scheduler.T_max": Key(POSITIVE_INT, "epochs (or steps) of one cosine half-period (scheduler=cosine)"),
    "scheduler.eta_min": Key(NON_NEGATIVE, "the rate the cosine ends at (cosine, warmup_cosine)"),
    "scheduler.warmup_epochs": Key(
        NON_NEGATIVE_INT,
        "epochs of linear warm-up before the cosine (scheduler=warmup_cosine)",
    ),
    "scheduler.start_factor": Key(
        Rule("a number in (0, 1]", lambda v: _is_number(v) and 0 < v <= 1),
        "warm-up starts at start_factor·lr (scheduler=warmup_cosine)",
    ),
    "scheduler.epochs": Key(
        POSITIVE_INT,
        "epochs the schedule is planned over, at least the run's (onecycle, warmup_cosine)",
    ),
    "scheduler.steps_per_epoch": Key(
        Rule("null (optlab fills it in)", lambda v: v is None),
        "optimizer steps in an epoch, from the data and batch size (onecycle, warmup_cosine)",
    ),
    "scheduler.max_lr": Key(
        POSITIVE,
        "the peak learning rate; the cycle starts at max_lr/25, not optimizer.lr (onecycle)",
    ),
    "scheduler.pct_start": Key(
        OPEN_FRACTION,
        "share of the cycle spent raising the rate to max_lr (scheduler=onecycle)",
    ),
    "init.scheme": Key(
        one_of(
        "default", "zeros", "constant", "normal", "uniform", "xavier_uniform", "xavier_normal",
        "kaiming_uniform", "kaiming_normal", "orthogonal", "pretrained", "layerwise",
    ),
        "how every Linear and Conv2d weight starts; init=NAME sets it",
    ),
    "init.bias": Key(
        Rule("a number", _is_number),
        "value every bias starts at (any scheme but default, which keeps PyTorch's)",
    ),
    "init.value": Key(Rule("a number", _is_number), "value every weight starts at (init=constant)"),
    "init.std": Key(POSITIVE, "standard deviation of the Gaussian weights N(0, std²) (init=normal)"),
    "init.a": Key(POSITIVE, "half-width of the uniform weights U(−a, a) (init=uniform)"),
    "init.gain": Key(POSITIVE, "scale factor on the weights (xavier_uniform, xavier_normal, orthogonal)"),
    "init.nonlinearity": Key(
        one_of("relu", "leaky_relu", "tanh", "sigmoid", "linear", "selu"),
        "activation whose gain sets the scale, √2 for relu (kaiming_uniform, kaiming_normal)",
    ),
    "init.path": Key(
        Rule("a checkpoint file or run folder", lambda v: v is None or isinstance(v, str)),
        "checkpoint to start from, or a run folder for its checkpoints/best.pt (init=pretrained)",
    ),
    "init.base": Key(
        one_of(
        "default", "zeros", "xavier_uniform", "xavier_normal", "kaiming_uniform",
        "kaiming_normal", "orthogonal",
    ),
        "scheme for the weights before loading or pretraining (pretrained, layerwise)",
    ),
    "init.epochs": Key(POSITIVE_INT, "autoencoder epochs per hidden layer (init=layerwise)"),
    "init.lr": Key(POSITIVE, "learning rate of Adam for each layer's autoencoder (init=layerwise)"),
    "early_stopping.monitor": Key(
        Rule("val_loss, val_acc or null", lambda v: v in ("val_loss", "val_acc", None)),
        "the validation metric watched; null: no early stopping (early_stopping=off)",
    ),
    "early_stopping.patience": Key(NON_NEGATIVE_INT, "epochs in a row without improvement before training stops"),
    "early_stopping.min_delta": Key(
        NON_NEGATIVE,
        "least absolute change of the monitor that counts as an improvement",
    ),
    "early_stopping.restore_best": Key(
        BOOLEAN,
        "bring the best epoch's weights back at the end; the test metrics come from them",
    ),
    "early_stopping.start_epoch": Key(NON_NEGATIVE_INT, "epochs at the start that are not watched"),
    "curvature.every": Key(NON_NEGATIVE_INT, "measure lambda_max, trace and sharpness every N epochs (0: never)"),
    "curvature.final": Key(
        BOOLEAN,
        "measure everything once at the end, on the tested weights: curvature.json, landscape.png",
    ),
    "curvature.samples": Key(POSITIVE_INT, "training examples (a fixed subset) the Hessian's loss is taken on"),
    "curvature.iters": Key(POSITIVE_INT, "power-iteration steps for lambda_max"),
    "curvature.probes": Key(POSITIVE_INT, "number of Rademacher probes in Hutchinson's estimate of the trace"),
    "curvature.epsilon": Key(POSITIVE, "box radius ε of Keskar's sharpness, relative to each |weight| + 1"),
    "curvature.exact_max_params": Key(
        NON_NEGATIVE_INT,
        "the exact Hessian spectrum for models up to this many parameters (0: never)",
    ),
    "vectorize.max_members": Key(
        POSITIVE_INT,
        "hydra/launcher=vectorized, vectorized_submitit_*: the most runs in one stacked model, or one job "
        "(memory grows with it)",
    ),
    "noise.every": Key(NON_NEGATIVE_INT, "measure the gradient noise scale B_simple every N epochs (0: never)"),
    "noise.final": Key(
        BOOLEAN,
        "measure B_simple once at the end, on the tested weights (metrics.json: noise_b_simple)",
    ),
    "noise.samples": Key(
        Rule("an integer >= 2", lambda v: _is_int(v) and v >= 2),
        "training examples (a fixed subset) whose per-example gradients give B_simple",
    ),
    "target.val_loss": Key(
        Rule("null or a number > 0", lambda v: v is None or POSITIVE.ok(v)),
        "record steps/examples/time_to_target when val loss first ≤ this (null: not watched)",
    ),
    "target.val_acc": Key(
        Rule("null or a number in (0, 1]", lambda v: v is None or _is_number(v) and 0 < v <= 1),
        "record steps/examples/time_to_target when val accuracy first ≥ this (null: not watched)",
    ),
    "target.stop": Key(BOOLEAN, "end the run (completed) at the epoch it first meets every target set"),
    "lr_find.min_lr": Key(POSITIVE, "learning rate the range test starts from; it rises exponentially"),
    "lr_find.max_lr": Key(POSITIVE, "learning rate the range test rises to"),
    "lr_find.steps": Key(
        Rule("an integer >= 10", lambda v: _is_int(v) and v >= 10),
        "optimizer steps the range test takes from min_lr to max_lr",
    ),
    "lr_find.stop_factor": Key(
        Rule("a number > 1", lambda v: _is_number(v) and v > 1),
        "stop the test once the smoothed loss exceeds this times its best",
    ),
    "lr_find.beta": Key(FRACTION, "weight of the exponential average that smooths the test's loss (bias-corrected)"),
    "tune.trials": Key(POSITIVE_INT, "trials in the study; running the command again adds none once reached"),
    "tune.stack": Key(POSITIVE_INT, "trials asked for at once, trained as one stacked model where their settings "
                                    "allow (1: one at a time)"),
    "tune.sampler": Key(
        one_of("tpe", "random", "grid", "cmaes", "pbt"),
        "how Optuna proposes each trial's settings (grid: choices and ranges only); pbt: population-based "
        "training of tune.trials members as one stacked group (tune.pbt)",
    ),
    "tune.pbt.interval": Key(POSITIVE_INT, "epochs between two exploit-and-explore steps (tune.sampler=pbt)"),
    "tune.pbt.quantile": Key(
        Rule("a number in (0, 0.5]", lambda v: _is_number(v) and 0 < v <= 0.5),
        "the bottom fraction that goes on as a member of the top fraction at each step (pbt)",
    ),
    "tune.pbt.factors": Key(
        Rule("a list of numbers > 0, e.g. [0.8,1.2]", lambda v: _is_list(v, POSITIVE.ok) and len(v) > 0),
        "explore: a copied member's numbers are multiplied by one of these, drawn per key (pbt)",
    ),
    "tune.pbt.resample_probability": Key(
        Rule("a number in [0, 1]", lambda v: _is_number(v) and 0 <= v <= 1),
        "explore: the chance a key is drawn afresh from its search expression instead (pbt)",
    ),
    "tune.pruner": Key(
        one_of("none", "median", "hyperband", "successive_halving"),
        "what stops a hopeless trial, judged after every epoch (none: never)",
    ),
    "tune.metric": Key(one_of(*TUNE_METRICS), "what the study optimizes (default: summary.metric)"),
    "tune.direction": Key(one_of("auto", "maximize", "minimize"), "auto: minimize losses, maximize the rest"),
    "tune.seed": Key(NON_NEGATIVE_INT, "the sampler's seed (each further process on the study takes the next one)"),
    "tune.grace_s": Key(POSITIVE, "seconds without a heartbeat (written every grace_s/4) before a trial is retried"),
    "tune.dir": Key(
        Rule("a folder", lambda v: isinstance(v, str) and v != ""),
        "the study's folder: name it to go on with a study, or share it between processes",
    ),
    "tune.storage": Key(
        Rule("null (the journal in tune.dir), or a database URL dialect://... (postgresql, mysql, sqlite)",
             lambda v: v is None or isinstance(v, str) and "://" in v),  # the rest is SQLAlchemy's to read
        "where the study lives: null = study.journal in tune.dir (one machine), a database URL = shared by machines",
    ),
    "tune.study_name": Key(
        Rule("null, or a name", lambda v: v is None or isinstance(v, str) and v.strip() != "" and v.isprintable()),
        "the study's name in tune.storage (null: tune.dir's folder name)",
    ),
    "tune.workers": Key(POSITIVE_INT, "more than 1: this command starts that many workers on the study as "
                                      "submitit jobs (tune.cluster)"),
    "tune.cluster": Key(one_of("local", "slurm"), "where tune.workers run: processes here, or a SLURM job array"),
    "tune.slurm": Key(
        Rule("key: value, e.g. gpus_per_node: 1", lambda v: isinstance(v, (dict, DictConfig))),
        "with tune.cluster=slurm: each worker's resources (keys of submitit's SLURM executor)",
    ),
    "tune.params": Key(
        Rule("key: search expression, e.g. optimizer.lr: tag(log, interval(1e-4, 1))",
                        lambda v: isinstance(v, (dict, DictConfig)) and all(isinstance(x, str) for x in v.values())),
        "the search space, one expression per key (search=<preset> or the command line)",
    ),
    "summary.metric": Key(
        one_of(*METRICS),
        "what a sweep's summary ranks configurations by (also tune.metric's default)",
    ),
    "summary.x": Key(one_of(*CURVE_X), "x-axis of the summary's curves (curves.png)"),
    "surface.kappa": Key(
        Rule("a number >= 1", lambda v: _is_number(v) and v >= 1),
        "condition number κ: the bowl's eigenvalues are κ and 1 (surface=quadratic)",
    ),
    "surface.angle": Key(Rule("a number (degrees)", _is_number), "rotation of the bowl's axes (surface=quadratic)"),
    "surface.start": Key(pair("two numbers [x,y]", lambda x, y: True), "the point the optimizer starts from"),
}
GROUP_RULES: dict[str, Rule] = {path: k.rule for path, k in GROUP_KEYS.items()}


def top_level_keys() -> dict[str, dict]:
    """Top-level key name → its field metadata (rule and help)."""
    return {f.name: f.metadata for f in fields(Config) if f.metadata}


def rule_for(path: str) -> Rule | None:
    meta = top_level_keys().get(path)
    return meta["rule"] if meta else GROUP_RULES.get(path)


def option_groups() -> list[str]:
    """The config groups a user picks an option of: the folders of conf/, less Hydra's."""
    from importlib.resources import files

    # conf/bench/ holds optlab bench's protocols: files it reads as data, no config group
    return sorted(p.name for p in files("optlab.conf").iterdir()
                  if p.is_dir() and p.name not in ("hydra", "bench", "__pycache__"))


def options(group: str) -> list[str]:
    """The options of a config group: the YAML files in conf/<group>/ (empty for a key)."""
    from importlib.resources import files

    folder = files("optlab.conf") / group
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml")) if folder.is_dir() else []


def _help_lines(keys: dict[str, tuple[str, Rule]]) -> str:
    """`  name  help (allowed)`, one line a key, the names in one column (`--help`)."""
    width = max(map(len, keys), default=0)
    return "\n".join(f"  {name:<{width}}  {help} ({rule.allowed})" for name, (help, rule) in keys.items())


def group_keys_help(cfg) -> str:
    """Every key the config's chosen options have, with its help and what it allows (`optlab
    train optimizer=adam --help` lists optimizer.betas; sgd's lists optimizer.momentum)."""
    from omegaconf import OmegaConf

    return _help_lines({path: (key.help, key.rule) for path, key in GROUP_KEYS.items()
                        if OmegaConf.select(cfg, path, default=_ABSENT, throw_on_missing=False) is not _ABSENT})


_ABSENT = object()


def keys_help() -> str:
    return _help_lines({name: (meta["help"], meta["rule"]) for name, meta in top_level_keys().items()})
