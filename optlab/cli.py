"""The `optlab` command: a plain dispatcher in front of Hydra apps.

`@hydra.main` parses `sys.argv` itself, so the subcommand is dropped from argv before the
Hydra app runs. A user's mistake (bad override, unknown option, out-of-range value) ends in
one line on stderr and exit code 2; Hydra's flags (--help, --cfg, --info, -m, shell
completion) pass straight through. Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from pathlib import Path

from optlab import __version__

COMMANDS = {
    "train": "train a network on real data (see: optlab train --help)",
    "compare": "one summary of runs and sweeps: table, CSV, plots (see: optlab compare --help)",
    "landscape": "curvature of a finished run: sharpness, spectrum, loss slices (optlab landscape RUN)",
}

USAGE = f"""usage: optlab [-h] [--version] <command> [overrides ...]

A command-line lab for deep-learning optimization.

commands:
{chr(10).join(f"  {name:<8}{text}" for name, text in COMMANDS.items())}

examples:
  optlab train
  optlab train optimizer=adam batch_size=64
  optlab train -m optimizer=sgd,adam batch_size=16,256
  optlab compare outputs/sweeps/2026-11-25_10-00-00 outputs/sweeps/2026-11-25_11-00-00
  eval "$(optlab train -sc install=bash)"      # shell completion
"""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    if args[0] in ("-V", "--version"):
        print(f"optlab {__version__}")
        return 0
    if args[0] in ("-sc", "--shell-completion"):
        return _complete(args)
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(
            f"optlab: unknown command {command!r} (allowed: {', '.join(COMMANDS)})",
            file=sys.stderr,
        )
        return 2
    return {"compare": _run_compare, "landscape": _run_landscape}.get(command, _run_train)(rest)


def _run_landscape(args: list[str]) -> int:
    """`optlab landscape RUN`: curvature.json and landscape.png for a finished run."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="optlab landscape",
        description="Measure the curvature of a finished run's best weights: top Hessian "
        "eigenvalue, trace, ε-sharpness, the exact spectrum of a small model, and loss slices. "
        "Writes curvature.json and landscape.png into the run folder. The `curvature` keys of "
        "the run's config set the sample size and precision (see optlab train --help).",
    )
    parser.add_argument("run", type=Path, help="a run folder (with .hydra/ and checkpoints/)")
    options = parser.parse_args(args)
    from optlab.config import UsageError

    try:
        from optlab.train import landscape_of

        result = landscape_of(options.run)
    except UsageError as mistake:
        print(f"optlab landscape: {mistake}", file=sys.stderr)
        return 2
    extra = (f", condition number {result['condition_number']:.3g}, "
             f"{100 * result['negative_fraction']:.1f}% negative eigenvalues" if "eigenvalues" in result else "")
    print(f"λ_max {result['lambda_max']:.4g} (2/lr = {result['stability_threshold']:.4g}), trace "
          f"{result['trace']:.4g}, sharpness {result['sharpness']:.3g}%{extra}\n"
          f"written: {options.run / 'curvature.json'}, {options.run / 'landscape.png'}")
    return 0


def _run_compare(args: list[str]) -> int:
    """`optlab compare PATH [PATH ...]`: the summary a sweep ends with, over any runs."""
    import argparse
    import time

    from optlab.config import CURVE_X, METRICS

    parser = argparse.ArgumentParser(
        prog="optlab compare",
        description="Compare runs: every run folder at or below each PATH (sweeps, single "
        "runs, several sweeps at once). Runs that differ only in seed are grouped (mean ± std).",
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="run or sweep folders")
    parser.add_argument("--metric", default="best_val_acc", choices=METRICS, help="rank by this")
    parser.add_argument("--x", default="epoch", choices=CURVE_X, help="x-axis of the curves")
    parser.add_argument(
        "--out", type=Path,
        help="where to write the summary (default: the PATH if one, else outputs/comparisons/<time>)",
    )
    options = parser.parse_args(args)
    missing = [str(p) for p in options.paths if not p.is_dir()]
    if missing:
        print(f"optlab compare: no such folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    out = options.out or (
        options.paths[0] if len(options.paths) == 1
        else Path("outputs/comparisons") / time.strftime("%Y-%m-%d_%H-%M-%S")
    )
    from optlab.compare import summarize

    if not summarize(options.paths, out, options.metric, options.x):
        where = ", ".join(map(str, options.paths))
        print(f"optlab compare: no runs (folders with metrics.json) under {where}", file=sys.stderr)
        return 2
    return 0


def _complete(args: list[str]) -> int:
    """Bash completion asks `optlab -sc query=bash` with the whole line in COMP_LINE."""
    words = os.environ.get("COMP_LINE", "").split()
    typed = words[1:] if len(words) > 1 else []
    line_ends_word = not os.environ.get("COMP_LINE", "").endswith(" ")
    if not typed or (len(typed) == 1 and line_ends_word):
        prefix = typed[0] if typed else ""
        print(" ".join(c for c in COMMANDS if c.startswith(prefix)))
        return 0
    # Hand Hydra the line as if the subcommand were the program itself.
    os.environ["COMP_LINE"] = " ".join(words[:1] + words[2:]) + ("" if line_ends_word else " ")
    return _run_train(args)


def _run_train(args: list[str]) -> int:
    import hydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from optlab import config

    config.register()
    resume = [a for a in args if a.split("=", 1)[0] in ("resume", "resume.allow_changes")]
    if resume:
        try:
            args = _resume_args(args, resume)
        except config.UsageError as mistake:
            print(f"optlab train: {mistake}", file=sys.stderr)
            return 2
        if args is None:
            return 0
    sys.argv = [sys.argv[0], *args]
    user_wants_traceback = "HYDRA_FULL_ERROR" in os.environ

    @hydra.main(config_path="pkg://optlab.conf", config_name="config", version_base="1.3")
    def train_app(cfg) -> float | None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        run_dir = Path(HydraConfig.get().runtime.output_dir)
        in_sweep = HydraConfig.get().mode == RunMode.MULTIRUN
        try:
            return _train_job(cfg, run_dir)
        except Exception as error:
            from optlab.sweep import record_failure

            mistake = _usage_error(error)
            if in_sweep or mistake is None:  # a sweep goes on; a bug ends in its traceback
                with contextlib.suppress(OSError):  # a full disk cannot take the record either
                    record_failure(run_dir, cfg, mistake or error)
            if in_sweep:
                name = f"{run_dir.parent.name}/{run_dir.name}"
                print(f"optlab train: run {name} failed: {mistake or error}", file=sys.stderr)
                return None
            if mistake is None:
                raise
            print(f"optlab train: {mistake}", file=sys.stderr)
            sys.exit(2)  # exit here: Hydra would print the job as failed

    try:
        os.environ["HYDRA_FULL_ERROR"] = "1"  # let Hydra's errors reach us instead of exit(1)
        train_app()
    except KeyboardInterrupt:  # the second Ctrl-C: no time to save
        print("optlab train: stopped at once; the run folder keeps its last save", file=sys.stderr)
        return 130
    except (HydraException, OmegaConfBaseException) as error:  # (some are OSErrors too)
        if user_wants_traceback:
            raise
        print(f"optlab train: {describe(error, args)}", file=sys.stderr)
        return 2
    except OSError as error:  # Hydra cannot make or write the run folder
        print(f"optlab train: cannot write {error.filename or ''}: {error.strerror or error}", file=sys.stderr)
        return 2
    finally:
        if not user_wants_traceback:
            del os.environ["HYDRA_FULL_ERROR"]
    return 0


# set by `resume=<run folder>`: the run's folder, its saved config and .hydra files, allow_changes
_RESUME: dict = {}


def _resume_args(args: list[str], resume: list[str]) -> list[str] | None:
    """The arguments that continue a run: its own overrides, the user's others, its folder.
    None when the run already completed (it says so; nothing changes)."""
    import json

    from omegaconf import OmegaConf

    from optlab.config import UsageError

    options = dict(a.split("=", 1) for a in resume)
    folder = Path(options.get("resume", "")).expanduser()
    if not options.get("resume") or not (folder / ".hydra" / "config.yaml").exists():
        raise UsageError(f"resume: {str(folder)!r} is not a run folder (it needs .hydra/config.yaml); "
                         f"give the folder an interrupted run printed")
    if not (folder / "checkpoints" / "last.pt").exists():
        raise UsageError(f"resume: {folder} has no checkpoints/last.pt to continue from")
    try:
        status = json.loads((folder / "metrics.json").read_text()).get("status")
    except (OSError, ValueError):
        status = None  # killed before it wrote metrics.json: resume from its last save
    if status == "completed":
        print(f"optlab train: {folder} already completed: nothing to resume (metrics.json)")
        return None
    hydra_files = {p: p.read_bytes() for p in (folder / ".hydra").glob("*.yaml")}
    _RESUME.update(
        dir=folder.resolve(),
        config=OmegaConf.load(folder / ".hydra" / "config.yaml"),
        allow_changes=options.get("resume.allow_changes", "false").lower() == "true",
        hydra_files=hydra_files,
    )
    saved = [str(o) for o in OmegaConf.load(folder / ".hydra" / "overrides.yaml")]
    own = [a for a in args if a not in resume]
    return [*saved, *own, f"hydra.run.dir={folder}"]


def _config_changes(saved, cfg) -> list[str]:
    """`key: old → new` for every value that differs between two configs."""
    from omegaconf import OmegaConf

    from optlab.compare import flatten

    ignore = ("rerun", "summary.metric", "summary.x")
    old, new = (flatten(OmegaConf.to_container(c)) for c in (saved, cfg))
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and k not in ignore)
    return [f"{k}: {old.get(k)} → {new.get(k)}" for k in keys]


def _train_job(cfg, run_dir: Path) -> float | None:
    """One run: validate; continue it if resumed or interrupted in a sweep; skip it if it
    already finished with this config; else train."""
    from optlab import config, sweep

    config.validate(cfg)
    log = logging.getLogger("optlab")
    resume = bool(_RESUME) and run_dir.resolve() == _RESUME["dir"]
    if resume:
        changes = _config_changes(_RESUME["config"], cfg)
        if changes and not _RESUME["allow_changes"]:
            for path, text in _RESUME["hydra_files"].items():  # the run's record stays as it was
                path.write_bytes(text)
            raise config.UsageError(
                f"resume: the config differs from the run's in {'; '.join(changes)} "
                f"(resume.allow_changes=true resumes anyway)"
            )
    else:
        previous = sweep.previous_metrics(run_dir) or {}
        resume = previous.get("status") == "interrupted" and previous.get("config_hash") == sweep.config_hash(cfg)
    done = None if cfg.rerun or resume else sweep.finished(run_dir, cfg)
    if done is not None:
        log.info("skipped: %s already %s with this config (rerun=true trains it again)",
                 run_dir, done["status"])
        return done.get("best_val_acc", done.get("final_loss"))
    if not resume:
        archived = sweep.archive_previous(run_dir)
        if archived:
            log.info("an earlier attempt's outputs moved to %s", archived)
    sweep.set_threads()
    if cfg.surface is not None:
        from optlab.surfaces import run  # torch is imported only now

        return run(cfg, run_dir)["final_loss"]
    from optlab.train import train

    metrics = train(cfg, run_dir, resume=resume)
    if metrics["status"] == "interrupted":
        from optlab.logs import relative

        code = 130 if metrics["interrupted_by"] == "SIGINT" else 143
        print(f"optlab train: interrupted after epoch {metrics['epochs_run']}; resume with: "
              f"optlab train resume={relative(run_dir)}", file=sys.stderr)
        sys.exit(code)
    return metrics["best_val_acc"]



def _usage_error(error: BaseException | None) -> BaseException | None:
    """The user's mistake behind `error`, if any (Hydra's instantiate wraps it)."""
    from optlab.config import UsageError

    while error is not None and not isinstance(error, UsageError):
        error = error.__cause__
    return error


def describe(error: Exception, args: list[str]) -> str:
    """One line for a user's mistake: the key, the value, and what is allowed."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    from optlab import config

    if isinstance(error, OverrideParseException):
        return f"cannot parse override: {str(error).splitlines()[0]}"
    if isinstance(error, MissingConfigException) and error.options:
        missing = re.search(r"Could not find '([^']+)'", str(error))
        group, _, option = (missing.group(1) if missing else "?/?").rpartition("/")
        return str(config.ConfigError(group, option, ", ".join(error.options), "unknown option for"))
    cause = error.__cause__ or error
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError, ValidationError)) and cause.full_key:
        path = cause.full_key
        value = _typed_value(path, args)
        if isinstance(cause, ValidationError):
            rule = config.rule_for(path)
            allowed = rule.allowed if rule else str(cause).splitlines()[0]
            return str(config.ConfigError(path, value, allowed))
        parent, _, name = path.rpartition(".")
        known = [str(k) for k in (cause.parent_node or {}) if k not in ("_target_", "hydra")]
        hint = config.suggest(name, known)
        where = f"'{parent}'" if parent else "the top level"
        return (
            f"unknown key '{path}': {config.show(value)}{hint} "
            f"(allowed at {where}: {', '.join(known)})"
        )
    return str(error).strip().splitlines()[0]


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
