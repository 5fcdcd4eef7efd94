"""Bad input never crashes: any configuration trains or is one line and exit code 2.

A property-based test draws whole command lines for `optlab train` across every config group
and its options (models, optimizers, schedulers, initializations, early stopping, datasets
pointed at small broken files, 2-D surfaces, launchers, sweeps, resumed runs), each mixed with
overrides of keys with good and bad values, misspelled keys, `~group` deletions and `+key=...`
additions. Every drawn command line runs in this process (a subprocess each would take
minutes) and must end in one of two ways:

- it trains: exit code 0 and a metrics.json whose status is `completed` or `diverged`;
- it is the user's mistake: exit code 2 and exactly one line on stderr, `optlab train: ...`.

A sweep (`-m`) ends with exit code 0 only if every run trained; a run that failed must have
failed by the user's mistake (its metrics.json says UsageError or ConfigError, not a bug), and
then the sweep ends with exit code 1 or 2 and exactly one line.

Never a traceback, never a second line. Explicit examples first run every option of every
group, every broken file and every misspelling at least once; Hypothesis draws the rest.
Everything is kept tiny (1 epoch, 5 surface steps, 80 synthetic examples, 8 hidden units, one
torch thread) so that hundreds of command lines fit a CI budget: `OPTLAB_BAD_INPUT_EXAMPLES`
(default 180: the 150 explicit ones and 30 drawn) of them in all, about 70 s on one of 2 CPU cores.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import pickle
import shutil
import struct
import sys
import traceback
import warnings
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from optlab.cli.main import main

EXAMPLES = int(os.environ.get("OPTLAB_BAD_INPUT_EXAMPLES", "180"))  # in all, explicit ones included
FILES = "@"  # a drawn value `@npz/x.npz` means the file x.npz in the fixture's files folder

# --- what is drawn ---------------------------------------------------------------------------
# Each list is sampled uniformly, so an entry's repeats are its weight: the default (None) and
# every real option often, an unknown option now and then (it ends the command at once).

GROUPS = {
    "model": [None] * 4 + ["mlp", "linear", "cnn"] * 2 + ["transformer"],
    "optimizer": [None, None, "sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw", "adagrad",
                  "adadelta", "adamax", "nadam", "radam", "rprop", "lbfgs", "quickprop", "newton",
                  "nope"],
    "scheduler": [None, None, "constant", "step", "multistep", "exponential", "plateau", "cosine",
                  "warmup_cosine", "onecycle", "nope"],
    "init": [None] * 4 + ["default", "zeros", "constant", "normal", "uniform", "xavier_uniform",
                          "xavier_normal", "kaiming_uniform", "kaiming_normal", "orthogonal",
                          "pretrained", "pretrained", "layerwise", "nope"],
    "early_stopping": [None, None, "off", "val_loss", "val_acc", "nope"],
    "hydra/launcher": [None] * 5 + ["basic", "joblib", "submitit_local", "submitit_slurm", "nope"],
}
SYNTHETIC = ("moons", "circles", "blobs", "spirals", "regression")  # have data.source.n_samples
IMAGES = ("mnist", "fashion_mnist", "cifar10")  # read from data.root
# many loss evaluations a step: full batch unless drawn otherwise, never a CNN (Newton's Hessian
# of a convolution takes seconds), no small batches of the digits (L-BFGS's: seconds)
SLOW = ("lbfgs", "newton")
SURFACES = ["quadratic", "rosenbrock", "beale", "saddle"] * 3 + ["nope"]

# where each dataset that reads files is pointed (None: data.path / init.path left unset)
PATHS = {
    "npz": [None, "@npz/good.npz", "@npz/images.npz", "@npz/string_labels.npz", "@npz/one_class.npz",
            "@npz/mismatched_lengths.npz", "@npz/short_x.npz", "@npz/four_rows.npz",
            "@npz/many_classes.npz", "@npz/one_row.npz", "@npz/empty.npz", "@npz/no_y.npz",
            "@npz/other_arrays.npz", "@npz/one_d.npz", "@npz/nan.npz", "@npz/object.npz",
            "@npz/y_2d.npz", "@npz/truncated.npz", "@npz/garbage.npz", "@npz/missing.npz", "@npz"],
    "csv": [None, "@csv/good.csv", "@csv/text_labels.csv", "@csv/text_feature.csv",
            "@csv/no_label_column.csv", "@csv/header_only.csv", "@csv/empty.csv",
            "@csv/four_rows.csv", "@csv/ragged.csv", "@csv/truncated.csv", "@csv/not_utf8.csv",
            "@csv/only_label.csv", "@csv/empty_field.csv", "@csv/missing.csv"],
    "frames": [None, "@frames/good", "@frames/no_labels", "@frames/mismatched", "@frames/one_d",
               "@frames/different_widths", "@frames/garbage", "@frames/four_frames",
               "@frames/empty", "@frames/good/u1.npy", "@frames/missing"],
    "images": ["@images/tiny", "@images/empty", "@images/garbage", "@images/truncated"],  # data.root
    "init": [None, "@init/run", "@init/run/checkpoints/best.pt", "@init/missing.pt",
             "@init/garbage.pt", "@init/empty.pt", "@init/truncated.pt", "@init/tensor.pt",
             "@init/not_a_state_dict.pt", "@init/foreign.pt", "@init/no_checkpoints"],
    "resume": ["@resume/completed", "@resume/interrupted", "@resume/truncated_last",
               "@resume/foreign_last", "@resume/no_last", "@resume/no_metrics",
               "@resume/garbage_metrics", "@resume/garbage_config", "@resume/no_overrides",
               "@resume/garbage_overrides", "@resume/not_a_run", "@resume/missing", ""],
}

# (data option, data.path or data.root): every broken file about as often as a dataset that trains
DATA = ([(None, None)] * 8 + [("digits", None)] * 4 + [(name, None) for name in SYNTHETIC] * 3
        + [(kind, path) for kind in ("npz", "csv", "frames") for path in PATHS[kind]]
        + [(kind, root) for kind in IMAGES for root in PATHS["images"]]
        + [("imagenet", None)])

# key → (good values, bad values). A good value passes the key's own rule, so a clean example
# (below) fails only where the combination, the data or optlab itself does.
KEYS = {
    "batch_size": (["1", "7", "64", "full"], ["0", "-3", "abc", "2.5", "[1,2]", "null"]),
    "epochs": (["1", "2"], ["0", "-1", "1.5", "abc", "null"]),
    "seed": (["0", "3"], ["-1", "abc"]),
    "device": (["cpu", "auto"], ["cuda", "cuda:7", "mps", "tpu"]),
    "shuffle": (["false"], ["maybe"]),
    "steps": (["1", "5"], ["0", "abc"]),
    "precision": (["fp32", "bf16", "fp16"], ["fp8"]),
    "compile": (["false"], ["maybe"]),  # true: minutes of compiling on a CPU
    "diagnostics": (["false"], ["0.5"]),
    "dropout": (["0", "0.3", "0.99"], ["1", "1.5", "-0.1"]),
    "batchnorm": (["true", "false"], ["maybe"]),
    "l2": (["0", "0.01"], ["-1", "inf"]),
    "weight_decay_mode": (["coupled", "decoupled", "l2"], ["sideways"]),
    "weight_decay_exclude": (["[]", "[bias]"], ["[weights]", "bias"]),
    "diverge_threshold": (["1e-9", "1000"], ["0", "-1", "nan"]),
    "checkpoint_every_s": (["0"], ["-1"]),
    "rerun": (["true"], ["maybe"]),
    "model.hidden": (["[]", "[4]", "[8,4]"], ["[0]", "[-1]", "big", "8", "[8.5]", "null"]),
    "data.val_fraction": (["0.1", "0.5"], ["0.9", "0", "1"]),
    "data.test_fraction": (["0.1", "0.5"], ["0.99", "0"]),
    "data.split_seed": (["1"], ["-1"]),
    "data.order": (["sorted"], ["nope"]),
    "data.standardize": (["false"], ["maybe"]),
    "data.shape": (["null", "[1,8,8]", "[64]"], ["[0]", "[-1,8]"]),
    "data.in_memory": (["false"], ["maybe"]),
    "data.workers": (["0"], ["-1"]),
    "optimizer.lr": (["0.01", "1", "1e9"], ["-1", "0", "zero", "nan", "inf", "null", "1e300"]),
    "scheduler.interval": (["step", "epoch"], ["hour"]),
    "curvature.every": (["1"], ["-1"]),
    "curvature.final": (["true"], ["maybe"]),
    "summary.metric": (["test_acc"], ["happiness"]),
    "summary.x": (["time"], ["nope"]),
    # keys of some options only: unknown (a mistake) with the others
    "model.activation": (["tanh", "gelu"], ["nope"]),
    "model.channels": (["[2]"], ["[0]", "[]"]),
    "model.kernel_size": (["1", "5"], ["2"]),
    "data.source.n_samples": (["3", "10"], ["0", "many"]),
    "data.source.noise": (["0"], ["-1"]),
    "data.source.classes": (["2"], ["1"]),
    "data.source.centers": (["1"], ["0"]),
    "data.source.kappa": (["1", "1e12"], ["0.5"]),
    "data.source.features": (["1"], ["0"]),
    "data.source.factor": (["0.9"], ["1"]),
    "data.source.n_features": (["1", "64"], ["0"]),
    "data.source.cluster_std": (["100"], ["0"]),
    "data.source.turns": (["10"], ["0"]),
    "data.source.random_state": (["1"], ["-1"]),
    "data.label": (["label"], ["nope"]),
    "data.context": (["0", "2"], ["-1"]),
    "data.download": (["false"], ["maybe"]),  # true would go to the network
    "optimizer.momentum": (["0.9", "0"], ["1.5"]),
    "optimizer.nesterov": (["true", "false"], ["yes please"]),
    "optimizer.dampening": (["0.5"], ["1"]),
    "optimizer.amsgrad": (["true"], ["sometimes"]),
    "optimizer.alpha": (["0.5"], ["1"]),
    "optimizer.centered": (["true"], ["maybe"]),
    "optimizer.rho": (["0.5"], ["1"]),
    "optimizer.decay": (["0.1"], ["-1"]),
    "optimizer.tolerance_grad": (["1"], ["-1"]),
    "optimizer.weight_decay": (["0", "0.01"], ["-1"]),
    "optimizer.betas": (["[0.9,0.99]"], ["[1,2]", "0.9", "[0.9]"]),
    "optimizer.eps": (["1e-8"], ["0"]),
    "optimizer.etas": (["[0.5,1.2]"], ["[2,1]"]),
    "optimizer.step_sizes": (["[1e-6,1]"], ["[50,1e-6]"]),
    "optimizer.max_iter": (["1"], ["0"]),
    "optimizer.history_size": (["1"], ["0"]),
    "optimizer.line_search_fn": (["null"], ["armijo"]),
    "optimizer.damping": (["0"], ["-1"]),
    "optimizer.max_params": (["1", "100000"], ["0"]),
    "optimizer.mu": (["100"], ["0"]),
    "scheduler.step_size": (["1"], ["0"]),
    "scheduler.gamma": (["0.5"], ["2"]),
    "scheduler.milestones": (["[]", "[1]", "[1,1]"], ["[0]"]),
    "scheduler.T_max": (["1"], ["0"]),
    "scheduler.max_lr": (["1"], ["-1"]),
    "scheduler.pct_start": (["0.99"], ["0"]),
    "scheduler.warmup_epochs": (["0", "5"], ["-1"]),
    "scheduler.patience": (["0"], ["-1"]),
    "scheduler.factor": (["0.5"], ["0", "2"]),
    "scheduler.total_iters": (["5"], ["-5"]),
    "scheduler.k": (["1e3"], ["-1"]),
    "scheduler.eta_min": (["0.01"], ["-1"]),
    "scheduler.start_factor": (["1"], ["0"]),
    "scheduler.epochs": (["1", "3"], ["0"]),
    "scheduler.min_lr": (["0.01"], ["-1"]),
    "scheduler.cooldown": (["1"], ["-1"]),
    "scheduler.threshold": (["0"], ["-1"]),
    "init.std": (["10"], ["-1"]),
    "init.value": (["1e30"], ["abc"]),
    "init.nonlinearity": (["selu", "tanh"], ["swish"]),
    "init.base": (["zeros"], ["pretrained"]),
    "init.epochs": (["1"], ["0"]),
    "init.gain": (["2"], ["0"]),
    "init.bias": (["0.1"], ["abc"]),
    "init.a": (["0.5"], ["0"]),
    "init.lr": (["0.1"], ["0"]),
    "early_stopping.patience": (["0"], ["-1"]),
    "early_stopping.monitor": (["val_acc", "null"], ["train_loss"]),
    "early_stopping.start_epoch": (["5"], ["-5"]),
    "early_stopping.restore_best": (["false"], ["perhaps"]),
    "early_stopping.min_delta": (["0.5"], ["-1"]),
    "surface.kappa": (["1", "1e6"], ["0.5"]),
    "surface.angle": (["90"], ["abc"]),
    "surface.start": (["[0,0]", "[1e200,1e200]"], ["[1]", "origin"]),
    "hydra.launcher.n_jobs": (["2"], ["many"]),
}
# what a clean example overrides: top-level keys and the keys that every option of a group has
COMMON = [k for k in KEYS if "." not in k or k.split(".")[0] in ("curvature", "summary")
          or k in ("model.hidden", "optimizer.lr", "scheduler.interval", "data.val_fraction",
                   "data.test_fraction", "data.split_seed", "data.order", "data.standardize",
                   "data.shape", "data.in_memory", "data.workers")]
# misspelled keys, deletions, additions and overrides Hydra cannot parse
STRUCTURE = [
    "epochz=3", "batchsize=4", "optimizer.lrr=0.1", "model.hiden=[8]", "data.pth=x.npz",
    "scheduler.gama=0.5", "optimzer=adam", "~scheduler", "~optimizer", "~model", "~data", "~init",
    "~early_stopping", "~surface", "~epochs", "~optimizer.lr", "~data.source", "~model.hidden",
    "~summary", "~curvature", "+newkey=1", "+optimizer.foo=1", "+model.extra=2",
    "+data.source.bar=1", "++epochs=1", "+epochs=1", "optimizer.lr=[", "=3", "batch_size=",
    "model.hidden=[8", "epochs=1=2", "data.val_fraction=0.2 0.3",
    # another class than the option's: arguments it does not take or lacks; none at all; Hydra's flags
    "optimizer._target_=torch.optim.Adam", "scheduler._target_=torch.optim.lr_scheduler.StepLR",
    "~optimizer._target_", "+optimizer._partial_=true",
]
# a 2-value sweep for `-m` (basic launcher)
SWEEPS = ["seed=0,1", "optimizer=sgd,adam", "batch_size=16,full", "optimizer.lr=0.1,-1",
          "model=mlp,transformer", "scheduler=constant,onecycle", "optimizer=sgd,nope",
          "data.source.n_samples=80,4", "data=moons,npz"]


@functools.cache
def option_keys(group: str, option: str | None) -> list[str]:
    """The keys of KEYS that `group=option` has, read from its YAML (None: the default option)."""
    conf = resources.files("optlab.conf")
    if option is None:
        defaults = yaml.safe_load((conf / "config.yaml").read_text())["defaults"]
        option = next((d[group] for d in defaults if isinstance(d, dict) and group in d), None)
    path = conf / group / f"{option}.yaml"
    if option is None or not path.is_file():
        return []

    def paths(node: object, prefix: str):
        for name, value in (node.items() if isinstance(node, dict) else ()):
            yield f"{prefix}.{name}"
            yield from paths(value, f"{prefix}.{name}")

    return [k for k in KEYS if k in set(paths(yaml.safe_load(path.read_text()), group))]


def tiny(overrides: list[str]) -> list[str]:
    """`overrides` and what keeps their run tiny (1 epoch, 8 hidden units, 80 synthetic examples,
    5 surface steps), less what they set or delete themselves."""
    chosen = dict(o.split("=", 1) for o in overrides if "=" in o and not o.startswith(("+", "~")))
    if any(o.startswith("resume=") for o in overrides):
        return overrides  # a resumed run has its own config
    forced = {"epochs": "1"}
    if "surface" in chosen:
        forced["steps"] = "5"
    elif chosen.get("model") != "linear":
        forced["model.hidden"] = "[8]"
    if chosen.get("model") == "cnn":
        forced["model.channels"] = "[2]"
    if chosen.get("data") in SYNTHETIC:
        forced["data.source.n_samples"] = "80"
    if chosen.get("optimizer") in SLOW:
        forced["batch_size"] = "full"
    if chosen.get("init") == "layerwise":
        forced["init.epochs"] = "1"
    if any(k.startswith("curvature.") for k in chosen):
        forced.update({"curvature.samples": "32", "curvature.iters": "3", "curvature.probes": "2"})
    drawn = {o.lstrip("+~").split("=", 1)[0] for o in overrides}
    deleted = [o[1:].split("=", 1)[0] for o in overrides if o.startswith("~")]
    return overrides + [f"{k}={v}" for k, v in forced.items()
                        if k not in drawn and not any(k == d or k.startswith(d + ".") for d in deleted)]


@st.composite
def command_lines(draw) -> list[str]:
    """One `optlab train` command line (without `hydra.run.dir`). A clean one (half of them)
    has only real options and good values, so that it reaches training; the others mix in
    unknown options, bad values, misspelled, deleted and added keys."""
    mode = draw(st.sampled_from(["network"] * 14 + ["surface"] * 3 + ["resume"] + ["sweep"]))
    clean, slow = draw(st.booleans()), False
    overrides: list[str] = []
    picked: dict[str, str | None] = {}  # group → option (None: the default)

    def pick(group: str, but: tuple = ()) -> str | None:
        options = [o for o in GROUPS[group]
                   if o not in but and not (clean and o in ("nope", "transformer"))]
        option = picked[group] = draw(st.sampled_from(options))
        if option is not None:
            overrides.append(f"{group}={option}")
        return option

    if mode == "surface":
        pick("optimizer")
        pick("scheduler")
        picked["surface"] = draw(st.sampled_from(SURFACES[:-1] if clean else SURFACES))
        overrides.append(f"surface={picked['surface']}")
    elif mode == "resume":
        overrides.append(f"resume={draw(st.sampled_from(PATHS['resume']))}")
        if draw(st.booleans()):
            overrides.append(f"resume.allow_changes={draw(st.sampled_from(['true', 'false', 'maybe']))}")
    else:
        model = pick("model")
        data, path = draw(st.sampled_from(DATA[:-1] if clean else DATA))
        picked["data"] = data
        if data is not None:
            overrides.append(f"data={data}")
        if path is not None:
            overrides.append(f"data.{'root' if data in IMAGES else 'path'}={path}")
        slow = pick("optimizer", but=SLOW if model == "cnn" else ()) in SLOW and data in (None, "digits")
        pick("scheduler")
        if pick("init") == "pretrained":
            path = draw(st.sampled_from(PATHS["init"]))
            if path is not None:
                overrides.append(f"init.path={path}")
        pick("early_stopping")
        if mode == "network":
            pick("hydra/launcher")
    keys = draw(st.lists(st.sampled_from(COMMON if clean else sorted(KEYS)), unique=True, max_size=3))
    for group in draw(st.lists(st.sampled_from(sorted(picked)), unique=True, max_size=2)) if picked else ():
        own = [k for k in option_keys(group, picked[group]) if k not in keys]
        if own:  # a key of the picked option itself: scheduler=plateau scheduler.interval=step
            keys.append(draw(st.sampled_from(own)))
    for key in keys:
        good, bad = KEYS[key]
        if key == "batch_size" and slow:
            good = ["64", "full"]
        overrides.append(f"{key}={draw(st.sampled_from(good * 3 if clean else good + bad))}")
    if not clean:
        overrides += draw(st.lists(st.sampled_from(STRUCTURE), unique=True, max_size=2))
    if mode == "sweep":
        overrides = ["-m", "hydra/launcher=basic", draw(st.sampled_from(SWEEPS)), *overrides]
    return tiny(overrides)


def every_option() -> list[list[str]]:
    """Explicit examples that run every option of every group, every file and every misspelling
    at least once, whatever is drawn: each file alone; the groups' options side by side on data
    that trains; each scheduler at the other interval; each scheduler and second-order optimizer
    on a surface; one sweep."""
    lines = [[f"data={kind}", *([f"data.path={p}"] if p else [])]
             for kind in ("npz", "csv", "frames") for p in PATHS[kind]]
    lines += [[f"data={kind}", f"data.root={root}"] for kind in IMAGES for root in PATHS["images"]]
    lines += [["init=pretrained", *([f"init.path={p}"] if p else [])] for p in PATHS["init"]]
    lines += [[f"resume={p}"] for p in PATHS["resume"]]
    options = {g: [o for o in GROUPS[g] if o not in (None, "nope", "transformer", "pretrained")]
               for g in GROUPS}
    for i, optimizer in enumerate(options["optimizer"]):
        model = "mlp" if optimizer in SLOW else options["model"][i % 3]
        data = "digits" if model == "cnn" else ["digits", *SYNTHETIC][i % 6]
        lines.append([f"model={model}", f"data={data}", f"optimizer={optimizer}",
                      *(f"{g}={options[g][i % len(options[g])]}"
                        for g in ("scheduler", "init", "early_stopping", "hydra/launcher"))])
    for scheduler in options["scheduler"]:  # each stepped at the other interval than its own
        own = yaml.safe_load((resources.files("optlab.conf") / "scheduler" / f"{scheduler}.yaml").read_text())
        other = "epoch" if own.get("interval") == "step" else "step"
        lines.append([f"scheduler={scheduler}", f"scheduler.interval={other}", "data=moons"])
    second_order = ["newton", "lbfgs", "quickprop", "rprop"]
    for i, scheduler in enumerate(options["scheduler"]):
        lines.append([f"surface={SURFACES[i % 4]}", f"scheduler={scheduler}",
                      f"optimizer={second_order[i % 4]}"])
    lines += [[o] for o in STRUCTURE]
    lines.append(["-m", "hydra/launcher=basic", "seed=0,1", "data=moons"])
    return [tiny(line) for line in lines]


# --- the files the drawn datasets and checkpoints point at -----------------------------------

def write_idx(path: Path, array: np.ndarray, cut: int = 0) -> None:
    """LeCun's IDX format, gzipped; `cut` bytes short of whole."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    body = header + array.astype(np.uint8).tobytes()
    with gzip.open(path, "wb") as f:
        f.write(body[: len(body) - cut])


def image_roots(root: Path) -> None:
    """data.root folders: tiny valid MNIST/Fashion-MNIST/CIFAR-10, none, garbage, truncated."""
    rng = np.random.default_rng(0)
    (root / "empty").mkdir(parents=True)
    for kind in ("tiny", "garbage", "truncated"):
        for name in ("mnist", "fashion_mnist"):
            folder = root / kind / name
            folder.mkdir(parents=True)
            for prefix, count in (("train", 60), ("t10k", 20)):  # 12 for validation: 10 classes
                images, labels = rng.integers(0, 256, (count, 28, 28)), np.arange(count) % 10
                for file, array in ((f"{prefix}-images-idx3-ubyte.gz", images),
                                    (f"{prefix}-labels-idx1-ubyte.gz", labels)):
                    if kind == "garbage":
                        (folder / file).write_bytes(b"\x1f\x8b not really gzip")
                    else:
                        write_idx(folder / file, array, cut=7 if kind == "truncated" else 0)
        batches = root / kind / "cifar10" / "cifar-10-batches-py"
        batches.mkdir(parents=True)
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            batch = {b"data": rng.integers(0, 256, (12, 3072), dtype=np.uint8),
                     b"labels": list(np.arange(12) % 10)}
            text = pickle.dumps(batch)
            (batches / name).write_bytes({"tiny": text, "truncated": text[: len(text) // 2],
                                          "garbage": b"garbage"}[kind])


def npz_files(root: Path) -> None:
    rng = np.random.default_rng(0)
    root.mkdir()
    x, y = rng.standard_normal((60, 4)).astype(np.float32), np.arange(60) % 3
    arrays = {
        "good": {"X": x, "y": y},
        "images": {"X": rng.standard_normal((60, 1, 4, 4)), "y": y},
        "string_labels": {"X": x, "y": np.array(["cat", "dog"] * 30)},
        "one_class": {"X": x, "y": np.zeros(60, dtype=int)},
        "mismatched_lengths": {"X": x, "y": y[:50]},
        "short_x": {"X": x[:50], "y": y},
        "four_rows": {"X": x[:4], "y": np.array([0, 1, 0, 1])},
        "many_classes": {"X": x[:30], "y": np.arange(30) % 10},  # 6 test examples, 10 classes
        "one_row": {"X": x[:1], "y": y[:1]},
        "empty": {"X": x[:0], "y": y[:0]},
        "no_y": {"X": x},
        "other_arrays": {"a": x, "b": y},
        "one_d": {"X": x[:, 0], "y": y},
        "nan": {"X": np.where(x > 1, np.nan, x), "y": y},
        "y_2d": {"X": x, "y": np.stack([y, y], axis=1)},
    }
    for name, content in arrays.items():
        np.savez(root / f"{name}.npz", **content)
    np.savez(root / "object.npz", X=x, y=np.array([{"a": 1}] * 60, dtype=object))
    good = (root / "good.npz").read_bytes()
    (root / "truncated.npz").write_bytes(good[: len(good) // 2])
    (root / "garbage.npz").write_bytes(b"this is not a zip file at all")


def csv_files(root: Path) -> None:
    root.mkdir()
    rows = [f"{i * 0.1:.1f},{(i % 7) - 3},{i % 3}" for i in range(60)]
    good = "a,b,label\n" + "\n".join(rows) + "\n"
    files = {
        "good": good,
        "text_labels": "a,b,label\n" + "\n".join(f"{i},{-i},{'cat' if i % 2 else 'dog'}"
                                                 for i in range(60)) + "\n",
        "text_feature": "a,b,label\n" + "\n".join(f"{i},x{i},{i % 2}" for i in range(60)) + "\n",
        "no_label_column": "a,b,c\n" + "\n".join(rows) + "\n",
        "header_only": "a,b,label\n",
        "empty": "",
        "four_rows": "a,b,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n",
        "ragged": "a,b,label\n" + "\n".join(rows[:30] + ["1,2,3,4,5"] + rows[30:]) + "\n",
        "truncated": good[: len(good) // 2 + 3],
        "only_label": "label\n" + "\n".join(str(i % 2) for i in range(60)) + "\n",
        "empty_field": "a,b,label\n" + "\n".join(rows[:30] + ["1,,0"] + rows[30:]) + "\n",
    }
    for name, text in files.items():
        (root / f"{name}.csv").write_text(text)
    (root / "not_utf8.csv").write_bytes(b"a,b,label\n\xff\xfe\x00,\x80\x81,1\n" * 20)


def frames_files(root: Path) -> None:
    rng = np.random.default_rng(0)

    def utterances(name: str, shapes: list[tuple], labels: list[int | None]) -> None:
        folder = root / name
        folder.mkdir(parents=True)
        for i, (shape, n) in enumerate(zip(shapes, labels), 1):
            np.save(folder / f"u{i}.npy", rng.standard_normal(shape).astype(np.float32))
            if n is not None:
                np.save(folder / f"u{i}.labels.npy", np.arange(n) % 3)

    utterances("good", [(20, 3), (25, 3), (15, 3)], [20, 25, 15])
    utterances("no_labels", [(20, 3)], [None])
    utterances("mismatched", [(20, 3), (25, 3)], [20, 15])
    utterances("one_d", [(20,), (25,)], [20, 25])
    utterances("different_widths", [(20, 3), (25, 4)], [20, 25])
    utterances("four_frames", [(4, 3)], [4])
    utterances("garbage", [(20, 3)], [20])
    (root / "garbage" / "u1.npy").write_bytes(b"\x93NUMPY garbage")
    (root / "empty").mkdir()


def checkpoints_and_runs(root: Path, run: Path) -> None:
    """init.path targets and resume= folders, made from one real finished run."""
    init = root / "init"
    shutil.copytree(run, init / "run")
    best = (run / "checkpoints" / "best.pt").read_bytes()
    (init / "garbage.pt").write_bytes(b"not a checkpoint\n" * 10)
    (init / "empty.pt").write_bytes(b"")
    (init / "truncated.pt").write_bytes(best[: len(best) // 2])
    torch.save(torch.zeros(3), init / "tensor.pt")
    torch.save({"weights": [1, 2, 3]}, init / "not_a_state_dict.pt")
    torch.save({"model": {"encoder.weight": torch.zeros(5, 5)}}, init / "foreign.pt")
    (init / "no_checkpoints").mkdir()

    resume = root / "resume"
    resume.mkdir()
    (resume / "not_a_run").mkdir()

    def variant(name: str) -> Path:
        folder = resume / name
        shutil.copytree(run, folder)
        if name != "completed":
            metrics = json.loads((folder / "metrics.json").read_text())
            (folder / "metrics.json").write_text(json.dumps({**metrics, "status": "interrupted"}))
        return folder

    variant("completed")
    variant("interrupted")
    last = variant("truncated_last") / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    torch.save({"model": {}}, variant("foreign_last") / "checkpoints" / "last.pt")
    (variant("no_last") / "checkpoints" / "last.pt").unlink()
    (variant("no_metrics") / "metrics.json").unlink()
    (variant("garbage_metrics") / "metrics.json").write_text('{"status": "interr')
    (variant("garbage_config") / ".hydra" / "config.yaml").write_text("model: [unclosed\n  : :\n")
    (variant("no_overrides") / ".hydra" / "overrides.yaml").unlink()
    (variant("garbage_overrides") / ".hydra" / "overrides.yaml").write_text("- optimizer.lr=[\n")


def call(argv: list[str]) -> tuple[int | None, str | None]:
    """`optlab <argv>` in this process, as a fresh process would run it: (exit code, the
    traceback of an exception that escaped, which a user would see)."""


    threads, argv0 = torch.get_num_threads(), sys.argv[:]
    torch.set_num_threads(1)  # tiny models: one thread is several times faster than two
    try:
        with warnings.catch_warnings():  # warnings reach stderr, once per place, as in a process
            warnings.resetwarnings()
            warnings.simplefilter("default")
            for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.filterwarnings("ignore", category=category)
            warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: \
                sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))
            return main(argv), None
    except SystemExit as stop:
        return (stop.code if isinstance(stop.code, int) else 1), None
    except BaseException:  # noqa: BLE001 - what escapes main() is a traceback for the user
        return None, traceback.format_exc()
    finally:
        torch.set_num_threads(threads)  # the joblib launcher sets them too
        sys.argv = argv0


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Small broken (and a few good) data files, checkpoints and run folders."""
    root = tmp_path_factory.mktemp("files")
    image_roots(root / "images")
    npz_files(root / "npz")
    csv_files(root / "csv")
    frames_files(root / "frames")
    run = root / "made" / "run"
    code, error = call(["train", "epochs=1", "model.hidden=[8]", f"hydra.run.dir={run}"])
    assert code == 0 and error is None, error
    checkpoints_and_runs(root, run)
    return root


def resolve(argv: list[str], files: Path, scratch: Path) -> list[str]:
    """`@...` placeholders → paths under `files`; a resumed run is a fresh copy of its folder,
    since resuming changes it."""
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and value.startswith(FILES):
            value = str(files / value[1:])
            if key == "resume" and Path(value).exists():
                copy = scratch / f"resumed{len(list(scratch.glob('resumed*')))}"
                shutil.copytree(value, copy)
                value = str(copy)
        out.append(f"{key}{sep}{value}")
    return out


MISTAKES = ("UsageError", "ConfigError")  # how a failed run's metrics.json names a user's mistake


def outcome(argv: list[str], files: Path, scratch: Path, capfd) -> tuple[list[str], int | None, str | None]:
    """Run one drawn command line: (its argv as run, its exit code, what is wrong or None)."""
    argv = resolve(argv, files, scratch)
    sweep = "-m" in argv
    folder = scratch / f"run{len(list(scratch.glob('run*')))}"
    argv = ["train", *argv, f"hydra.{'sweep' if sweep else 'run'}.dir={folder}"]
    resumed = next((a.split("=", 1)[1] for a in argv if a.startswith("resume=")), None)
    if resumed and Path(resumed, ".hydra", "config.yaml").exists():
        folder = Path(resumed)  # a resumed run goes on in its own folder
    capfd.readouterr()
    code, escaped = call(argv)
    err = capfd.readouterr().err
    lines = err.splitlines()
    one_line = len(lines) == 1 and lines[0].startswith("optlab train: ")
    if escaped is not None:
        return argv, code, f"an exception escaped main():\n{escaped}\nstderr:\n{err}"
    if "Traceback" in err:
        return argv, code, f"exit {code} with a traceback on stderr:\n{err}"
    if sweep:
        return argv, code, sweep_outcome(folder, code, one_line, err)
    if code == 2:
        return argv, code, None if one_line else f"exit 2 with {len(lines)} lines on stderr, not one:\n{err}"
    if code != 0:
        errors = [e.read_text().strip().splitlines()[-1] for e in folder.rglob("error.txt")]
        return argv, code, f"exit {code}:\n{err}" + "".join(f"\nerror.txt: {e}" for e in errors)
    metrics = folder / "metrics.json"
    status = json.loads(metrics.read_text()).get("status") if metrics.exists() else "no metrics.json"
    if status not in ("completed", "diverged"):
        return argv, code, f"exit 0 but status {status!r}:\n{err}"
    return argv, code, None


def sweep_outcome(folder: Path, code: int | None, one_line: bool, err: str) -> str | None:
    """What is wrong with a sweep's end: each run trains or fails by a mistake, and any failure
    ends the sweep with exit code 1 or 2 and one line."""
    records = {str(m.parent.relative_to(folder)): json.loads(m.read_text())
               for m in folder.rglob("metrics.json")} if folder.is_dir() else {}
    failed = {run: r.get("error", "") for run, r in records.items()
              if r.get("status") not in ("completed", "diverged")}
    bugs = {run: error for run, error in failed.items() if not error.startswith(MISTAKES)}
    if bugs:
        tracebacks = [e.read_text() for e in folder.rglob("error.txt")]
        return f"exit {code}; runs failed with a bug: {bugs}\n{err}\nerror.txt:\n{''.join(tracebacks[:1])}"
    if code == 0 and (failed or not records):
        return f"exit 0 but the sweep's runs ended {failed or 'with no metrics.json'}:\n{err}"
    if code != 0 and not (code in (1, 2) and one_line and (code == 2 or failed)):
        return f"exit {code} with {len(err.splitlines())} lines on stderr (failed runs: {failed}):\n{err}"
    return None


COVERAGE = every_option()


@pytest.mark.slow
@pytest.mark.parametrize("part", [0, 1])
def test_every_option_file_and_misspelling_trains_or_exits_2_with_exactly_one_line(files, tmp_path, capfd, part):
    """The explicit command lines (`every_option`), in two halves that test workers run side by side."""
    scratch = tmp_path / "runs"
    scratch.mkdir()
    for line in COVERAGE[part::2]:
        ran, _, wrong = outcome(line, files, scratch, capfd)
        assert wrong is None, f"optlab {' '.join(ran)}\n{wrong}"


@pytest.mark.slow
def test_any_drawn_command_line_trains_or_exits_2_with_exactly_one_line(files, tmp_path, capfd):
    scratch = tmp_path / "runs"
    scratch.mkdir()

    @settings(max_examples=max(1, EXAMPLES - len(COVERAGE)), deadline=None, derandomize=True,
              database=None, phases=[Phase.generate, Phase.shrink],  # no slow `explain`
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                     HealthCheck.data_too_large])
    @given(command_lines())
    def check(argv):
        ran, _, wrong = outcome(argv, files, scratch, capfd)
        assert wrong is None, f"optlab {' '.join(ran)}\n{wrong}"

    check()
