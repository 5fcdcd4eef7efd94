"""`optlab bench`: a fair comparison of optimizers. A protocol (conf/bench/default.yaml, or a
user's copy) names problems, optimizers with their search spaces, a tuning budget and seeds. For
each problem and optimizer: `optlab tune` with the budget (its trials stacked where they can),
then `optlab train -m` of the best setting with every seed (a vectorized sweep). Each is an
ordinary study or sweep folder under the bench's folder, and each is skipped once done, so the
same command goes on after an interruption. optlab/analysis/bench.py compares what they wrote.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

from optlab.errors import UsageError
from optlab.metrics import TUNE_METRICS
from optlab.store.files import read_json, write_json

log = logging.getLogger("optlab")

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
# what a protocol's overrides may not set: the bench's own keys, Hydra's, or anything that builds code
FORBIDDEN = ("hydra", "tune.", "seed=", "target.", "_target_", "+", "~")
SAMPLERS = ("tpe", "random", "grid", "cmaes")  # how each optimizer's trials are drawn (optlab tune's)


def protocol_path(name: str) -> Path:
    """A protocol file: a path, or the name of one shipped in conf/bench/."""
    from importlib.resources import files

    given = Path(name)
    if given.suffix in (".yaml", ".yml") or given.exists():
        return given
    shipped = Path(str(files("optlab.conf") / "bench" / f"{name}.yaml"))
    if not shipped.is_file():
        known = sorted(p.name[:-5] for p in Path(str(files("optlab.conf") / "bench")).glob("*.yaml"))
        raise UsageError(f"--protocol {name}: no such file, nor a shipped protocol (shipped: {', '.join(known)})")
    return shipped


def load(path: Path) -> dict:
    """The protocol in `path`, read as data (YAML, no tags) and checked: every mistake is one
    line naming the file, the key, the value and what is allowed."""
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        raise UsageError(f"{path}: not YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(spec, dict):
        raise UsageError(f"{path}: a protocol is a mapping of trials, seeds, seed, problems and optimizers")
    unknown = set(spec) - {"trials", "seeds", "seed", "sampler", "problems", "optimizers"}
    if unknown:
        raise UsageError(f"{path}: unknown key {sorted(unknown)[0]!r} (allowed: trials, seeds, seed, sampler, problems, "
                         "optimizers)")
    spec.setdefault("sampler", "tpe")
    if spec["sampler"] not in SAMPLERS:
        raise UsageError(f"{path}: sampler: {spec['sampler']!r} (allowed: {', '.join(SAMPLERS)})")
    for key, low in (("trials", 1), ("seeds", 1), ("seed", 0)):
        value = spec.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise UsageError(f"{path}: {key}: {value!r} (allowed: an integer >= {low})")
    for group, fields in (("problems", ("overrides", "target", "metric")), ("optimizers", ("overrides", "space"))):
        entries = spec.get(group)
        if not isinstance(entries, dict) or not entries:
            raise UsageError(f"{path}: {group}: {entries!r} (allowed: a mapping of names to their settings)")
        for name, entry in entries.items():
            if isinstance(entry, dict) and group == "problems":
                entry.setdefault("rerun", [])  # more overrides for the reruns (train longer, say)
                _overrides(path, f"{group}.{name}.rerun", entry["rerun"])
            if isinstance(entry, dict) and group == "optimizers" and "search" in entry:  # a preset of conf/search/
                _preset(path, f"{group}.{name}.search", entry.pop("search"), entry)
            _entry(path, f"{group}.{name}", name, entry, fields + ("rerun",) * (group == "problems"))
    return spec


def _entry(path: Path, where: str, name, entry, fields: tuple[str, ...]) -> None:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise UsageError(f"{path}: {where}: the name {name!r} is not a folder name (allowed: letters, digits, _ and -)")
    if not isinstance(entry, dict) or set(entry) != set(fields):
        raise UsageError(f"{path}: {where}: {entry!r} (allowed: a mapping with exactly {', '.join(fields)})")
    _overrides(path, f"{where}.overrides", entry["overrides"])
    if "target" in fields:
        target, metric = entry["target"], entry["metric"]
        if not (isinstance(target, dict) and len(target) == 1 and set(target) <= {"val_acc", "val_loss"}
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in target.values())):
            raise UsageError(f"{path}: {where}.target: {target!r} (allowed: {{val_acc: number}} or {{val_loss: number}})")
        if metric not in TUNE_METRICS:
            raise UsageError(f"{path}: {where}.metric: {metric!r} (allowed: {', '.join(TUNE_METRICS)})")
    else:
        space = entry["space"]
        if not isinstance(space, dict) or not space or not all(
                isinstance(k, str) and isinstance(v, str) and not k.startswith(FORBIDDEN) and "_target_" not in k + v
                for k, v in space.items()):
            raise UsageError(f"{path}: {where}.space: {space!r} (allowed: key: search expression, e.g. "
                             "optimizer.lr: tag(log,interval(1e-4,1)))")


def _preset(path: Path, where: str, name, entry: dict) -> None:
    """An optimizer's space named as a preset of conf/search/ (`search: lr_momentum`): its params."""
    from importlib.resources import files

    from optlab.config.schema import options

    if name not in options("search") or "space" in entry:
        raise UsageError(f"{path}: {where}: {name!r} (allowed: one of {', '.join(options('search'))}, in place of space)")
    preset = yaml.safe_load((files("optlab.conf") / "search" / f"{name}.yaml").read_text())
    entry["space"] = dict(preset["tune"]["params"])


def _overrides(path: Path, where: str, overrides) -> None:
    if not isinstance(overrides, list) or not all(isinstance(o, str) and "=" in o for o in overrides):
        raise UsageError(f"{path}: {where}: {overrides!r} (allowed: a list of key=value)")
    for o in overrides:
        if o.startswith(FORBIDDEN) or "_target_" in o:
            raise UsageError(f"{path}: {where}: {o!r} (allowed: key=value and group=option; not hydra, tune, seed "
                             "or target keys, +, ~ or _target_: the bench sets those)")


def target_overrides(problem: dict) -> list[str]:
    (name, value), = problem["target"].items()
    return [f"target.{name}={value!r}"]


def run(spec: dict, out: Path) -> list[tuple[str, str]]:
    """Tune and rerun every (problem, optimizer) pair not done yet; returns the pairs."""
    pairs = [(p, o) for p in spec["problems"] for o in spec["optimizers"]]
    held = out / "protocol.json"  # the protocol this folder's studies were made for
    if held.is_file() and read_json(held) != spec:
        raise UsageError(f"--out {out} holds the studies of another protocol ({held}): give another --out")
    write_json(held, spec)
    started = time.monotonic()
    for i, (p, o) in enumerate(pairs, 1):
        problem, optimizer = spec["problems"][p], spec["optimizers"][o]
        base = [*problem["overrides"], *optimizer["overrides"], *target_overrides(problem)]
        folder = out / p / o
        study = folder / "tune"
        if not (study / "best_trial.json").is_file():
            log.info("[%d/%d] %s × %s: tuning, %d trials (%.0f s so far)", i, len(pairs), p, o, spec["trials"],
                     time.monotonic() - started)
            space = [f"{k}={v}" for k, v in optimizer["space"].items()]
            _call(["tune", *base, *space, f"tune.trials={spec['trials']}", f"tune.metric={problem['metric']}",
                   "tune.pruner=none", f"tune.sampler={spec['sampler']}", f"tune.seed={spec['seed']}", f"tune.dir={study}"],
                  folder / "tune.out")
        best = json.loads((study / "best_trial.json").read_text())
        settings = [f"{k}={v!r}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items()]
        reruns = folder / "reruns"
        if not (reruns / "summary.csv").is_file():
            log.info("[%d/%d] %s × %s: the best setting (%s) with %d seeds (%.0f s so far)", i, len(pairs), p, o,
                     " ".join(settings), spec["seeds"], time.monotonic() - started)
            _call(["train", "-m", *base, *problem["rerun"], *settings, f"seed=range({spec['seeds']})", "hydra/launcher=vectorized",
                   f"hydra.sweep.dir={reruns}"], folder / "reruns.out")
    return pairs


def _call(args: list[str], output: Path) -> None:
    """`optlab <args>`, its output kept in `output`; a failure ends the bench naming it."""
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w") as f:
        code = subprocess.run([sys.executable, "-m", "optlab", *args], stdout=f, stderr=subprocess.STDOUT).returncode
    if code == 130:
        raise KeyboardInterrupt
    if code != 0:
        last = output.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise UsageError(f"optlab {args[0]} failed ({output}): {last[0]}")
