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
import math
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from optlab.errors import UsageError
from optlab.metrics import TUNE_METRICS
from optlab.store.files import read_json, stamped, write_json

log = logging.getLogger("optlab")

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*")  # a config key or group: `optimizer.lr`, `model`
# what a protocol may not set: the bench's own keys, Hydra's and a resume (and no `_target_`: code)
FORBIDDEN = ("hydra", "tune", "seed", "target", "resume")
LIMITS = {"trials": (1, 10_000), "seeds": (1, 1_000), "seed": (0, 2**32 - 1)}
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
        if not path.is_file() or path.stat().st_size > 1 << 20:
            raise UsageError(f"{path}: not a protocol file (a YAML file under 1 MB)")
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read {path}: {getattr(error, 'strerror', None) or error}") from None
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
    for key, (low, high) in LIMITS.items():
        value = spec.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise UsageError(f"{path}: {key}: {value!r} (allowed: an integer from {low} to {high})")
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
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and
                        (0 <= v <= 1 if k == "val_acc" else v >= 0) for k, v in target.items())):
            raise UsageError(f"{path}: {where}.target: {target!r} (allowed: {{val_acc: a number in [0, 1]}} or "
                             "{val_loss: a number >= 0})")
        if metric not in TUNE_METRICS:
            raise UsageError(f"{path}: {where}.metric: {metric!r} (allowed: {', '.join(TUNE_METRICS)})")
    else:
        space = entry["space"]
        if not isinstance(space, dict) or not space or not all(
                isinstance(k, str) and isinstance(v, str) and allowed_key(k) and "_target_" not in k + v
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
        if not allowed_key(o.partition("=")[0]) or "_target_" in o:
            raise UsageError(f"{path}: {where}: {o!r} (allowed: key=value and group=option; not hydra, tune, seed, "
                             "target or resume keys, +, ~ or _target_: the bench sets those)")


def allowed_key(key: str) -> bool:
    """A config key or group a protocol may set: `optimizer.lr`, `model`; not the bench's own."""
    return KEY.fullmatch(key) is not None and key.split(".")[0] not in FORBIDDEN


def target_overrides(problem: dict) -> list[str]:
    (name, value), = problem["target"].items()
    return [f"target.{name}={value!r}"]


def run(spec: dict, out: Path) -> list[tuple[str, str]]:
    """Tune and rerun every (problem, optimizer) pair not done yet; returns the pairs."""
    pairs = [(p, o) for p in spec["problems"] for o in spec["optimizers"]]
    started = time.monotonic()
    for i, (p, o) in enumerate(pairs, 1):
        problem, optimizer = spec["problems"][p], spec["optimizers"][o]
        base = [*problem["overrides"], *optimizer["overrides"], *target_overrides(problem)]
        folder = out / p / o
        study, reruns = folder / "tune", folder / "reruns"
        tuning = {"problem": {k: problem[k] for k in ("overrides", "target", "metric")}, "optimizer": optimizer,
                  **{k: spec[k] for k in ("trials", "seed", "sampler")}}
        if _step(study, tuning, (study / "best_trial.json").is_file(), f"{p} × {o}"):
            log.info("[%d/%d] %s × %s: tuning, %d trials (%.0f s so far)", i, len(pairs), p, o, spec["trials"],
                     time.monotonic() - started)
            space = [f"{k}={v}" for k, v in optimizer["space"].items()]
            _call(["tune", *base, *space, f"tune.trials={spec['trials']}", f"tune.metric={problem['metric']}",
                   "tune.pruner=none", f"tune.sampler={spec['sampler']}", f"tune.seed={spec['seed']}",
                   f"tune.dir={study}"], folder / "tune.out")
        if not (study / "best_trial.json").is_file():  # every trial diverged or failed: nothing to rerun
            raise UsageError(f"{p} × {o}: no trial of its study finished with a {problem['metric']} (see "
                             f"{folder / 'tune.out'}): its search space may hold only rates that diverge")
        best = read_json(study / "best_trial.json")
        settings = [f"{k}={v!r}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items()]
        if _step(reruns, {**tuning, "best": best["params"], "seeds": spec["seeds"], "rerun": problem["rerun"]},
                 (reruns / "summary.csv").is_file(), f"{p} × {o}"):
            log.info("[%d/%d] %s × %s: the best setting (%s) with %d seeds (%.0f s so far)", i, len(pairs), p, o,
                     " ".join(settings), spec["seeds"], time.monotonic() - started)
            _call(["train", "-m", *base, *problem["rerun"], *settings, f"seed=range({spec['seeds']})",
                   "hydra/launcher=vectorized", f"hydra.sweep.dir={reruns}"], folder / "reruns.out")
    return pairs


def _step(folder: Path, settings: dict, done: bool, pair: str) -> bool:
    """Whether a step (a pair's tuning or reruns) is still to run. Its settings are kept beside it
    (`<step>.json`): a finished step of other settings is refused (another protocol's budget), an
    unfinished one is moved aside into `.previous/` (a protocol fixed after a failure starts it anew)."""
    record = folder.with_name(f"{folder.name}.json")
    held = read_json(record) if record.is_file() else None
    if held is not None and held != json.loads(json.dumps(settings)):
        if done:
            differs = ", ".join(k for k in settings if held.get(k) != json.loads(json.dumps(settings[k])))
            raise UsageError(f"{pair}: {folder} holds the {folder.name} of another protocol (its {differs} differ): "
                             "give another --out")
        if folder.exists():
            aside = next(a for a in stamped(folder.parent / ".previous", f"{folder.name}-") if not a.exists())
            aside.parent.mkdir(parents=True, exist_ok=True)
            folder.rename(aside)
    if done and held is not None:
        return False
    write_json(record, settings)
    return not done


def _call(args: list[str], output: Path) -> None:
    """`optlab <args>`, its output kept in `output`; a failure ends the bench naming it. Ctrl-C
    reaches the child as its own Ctrl-C (it stops at its last finished epoch, resumable)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w") as f, subprocess.Popen([sys.executable, "-m", "optlab", *args], stdout=f,
                                                 stderr=subprocess.STDOUT) as child:
        try:
            code = child.wait()
        except KeyboardInterrupt:  # a Ctrl-C to this process alone: the child stops as after its own
            child.send_signal(signal.SIGINT)
            child.wait()
            raise
    if code == 130:
        raise KeyboardInterrupt
    if code != 0:
        last = output.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
        said = f"killed by signal {-code}" if code < 0 else last[0]
        raise UsageError(f"optlab {args[0]} failed ({output}): {said}")
