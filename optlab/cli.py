"""The `optlab` command: a plain dispatcher in front of Hydra apps.

`@hydra.main` parses `sys.argv` itself, so the subcommand is dropped from argv before the
Hydra app runs. A user's mistake (bad override, unknown option, out-of-range value) ends in
one line on stderr and exit code 2; Hydra's flags (--help, --cfg, --info, -m, shell
completion) pass straight through. Nothing here imports torch.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
from pathlib import Path

from optlab import __version__

COMMANDS = {
    "train": "train a network on real data (see: optlab train --help)",
    "tune": "search hyperparameters with Optuna, pruning bad trials early (see: optlab tune --help)",
    "lr-find": "the learning-rate range test: which rate to train with (see: optlab lr-find --help)",
    "compare": "one summary of runs and sweeps: table, CSV, plots (see: optlab compare --help)",
    "landscape": "curvature of a finished run: sharpness, spectrum, loss slices (optlab landscape RUN)",
    "report": "the recitation reproduced: every experiment, each claim checked (see: optlab report --help)",
}

USAGE = f"""usage: optlab [-h] [--version] <command> [overrides ...]

A command-line lab for deep-learning optimization.

commands:
{chr(10).join(f"  {name:<{max(map(len, COMMANDS)) + 2}}{text}" for name, text in COMMANDS.items())}

examples:
  optlab train
  optlab train optimizer=adam batch_size=64
  optlab train -m optimizer=sgd,adam batch_size=16,256
  optlab tune 'optimizer=choice(sgd,momentum,adam)' 'optimizer.lr=tag(log,interval(1e-4,1))' tune.trials=30
  optlab lr-find optimizer=adam
  optlab compare outputs/sweeps/2026-11-25_10-00-00 outputs/sweeps/2026-11-25_11-00-00
  eval "$(optlab train -sc install=bash)"      # shell completion
"""


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # the reader went away (`optlab train --help | head -1`): nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # as Python's docs do, so exit is quiet
        return 1


def _main(argv: list[str] | None) -> int:
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
    if command in APPS:
        return _run_app(command, rest)
    return {"compare": _run_compare, "landscape": _run_landscape, "report": _run_report}[command](rest)


def _run_report(args: list[str]) -> int:
    """`optlab report [--out DIR]`: index.html and report.md, running what is missing."""
    import argparse
    import logging

    parser = argparse.ArgumentParser(
        prog="optlab report",
        description="Run every experiment preset of conf/report.yaml that has not been run (about 6 "
        "minutes on 2 CPU cores; a second call reuses the runs), test each claim of the recitation "
        "against its runs (difference of means over seeds, 95%% interval, verdict), and write "
        "report.md and a self-contained index.html.",
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/report"), help="the report's folder")
    parser.add_argument("--keep", choices=("all", "records"), default="all",
                        help="records: delete the checkpoints of every finished run (most of the disk the "
                        "runs take); the verdicts read their metrics.json, so a later call reuses them")
    options = parser.parse_args(args)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from optlab.config import UsageError
    from optlab.report import report

    try:
        findings = report(options.out, options.keep)
    except UsageError as mistake:
        print(f"optlab report: {mistake}", file=sys.stderr)
        return 2
    shown = sum(f.verdict == "shown" for f in findings)
    print(f"{len(findings)} claims, {shown} shown: {options.out / 'index.html'}, {options.out / 'report.md'}")
    return 0


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
    try:
        from optlab.config import usage_error
        from optlab.train import landscape_of

        result = landscape_of(options.run)
    except Exception as error:
        mistake = usage_error(error)  # instantiate wraps a dataset's complaint
        if mistake is None:
            raise
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
    from optlab.config import UsageError

    try:
        found = summarize(options.paths, out, options.metric, options.x)
    except UsageError as mistake:  # the summary cannot be written there
        print(f"optlab compare: {mistake}", file=sys.stderr)
        return 2
    if not found:
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
    return _run_app("train", args)


# the Hydra apps: command → (primary config in conf/, the module whose `run(cfg, run_dir)` is the job)
APPS = {"train": ("config", "optlab.jobs"), "tune": ("tune", "optlab.tune"), "lr-find": ("lr_find", "optlab.lr_find")}


def _run_app(name: str, args: list[str]) -> int:
    """`optlab train`, `optlab tune` or `optlab lr-find`: one Hydra app each, the same groups and
    overrides, and the same one-line answer to a user's mistake."""
    import importlib

    import hydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from optlab import config, jobs
    from optlab.naming import command, relative

    config.register()
    jobs.current = jobs.Command()
    prog = f"optlab {name}"
    try:
        if name != "train":
            _one_job(prog, args)
        if name == "tune":  # choice(...), interval(...): the search space, which Hydra would read as a sweep
            from optlab.space import split

            args, jobs.current.search = split(args)
        resume = [a for a in args if a.split("=", 1)[0] in ("resume", "resume.allow_changes")]
        if resume and name == "train":
            args = _resume_args(args, resume)
            if args is None:
                return 0
    except config.UsageError as mistake:
        print(f"{prog}: {mistake}", file=sys.stderr)
        return 2
    sys.argv = [sys.argv[0], *args]
    jobs.current.words = ["optlab", name, *args]
    user_wants_traceback = "HYDRA_FULL_ERROR" in os.environ
    config_name, module = APPS[name]

    @hydra.main(config_path="pkg://optlab.conf", config_name=config_name, version_base="1.3")
    def app(cfg) -> dict:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        jobs.current.started = True
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        in_sweep = HydraConfig.get().mode == RunMode.MULTIRUN
        try:
            metrics = importlib.import_module(module).run(cfg, run_dir)
        except Exception as error:
            mistake = jobs.failed(run_dir, cfg, error, in_sweep) if name != "tune" else config.usage_error(error)
            if in_sweep:  # a sweep goes on; its last line names every failed run
                return {"status": "failed"}
            if mistake is None:  # a bug ends in its traceback
                raise
            print(f"{prog}: {mistake}", file=sys.stderr)
            sys.exit(2)  # exit here: Hydra would print the job as failed
        if metrics.get("status") == "interrupted":  # train or tune: how to go on
            if name == "train":
                again = (jobs.sweep_again(Path(HydraConfig.get().sweep.dir)) if in_sweep
                         else command("optlab", "train", f"resume={relative(run_dir)}"))
                message = (f"{prog}: interrupted after epoch {metrics['epochs_run']}; "
                           f"{'finish the sweep' if in_sweep else 'resume'} with: {again}")
            else:
                from optlab.tune import go_on

                message = f"{prog}: interrupted; go on with: " + go_on([*args, *jobs.current.search], run_dir)
            jobs.stop_interrupted(metrics, message)
        return metrics

    hooks = threading.excepthook, logging.raiseExceptions
    try:
        os.environ["HYDRA_FULL_ERROR"] = "1"  # let Hydra's errors reach us instead of exit(1)
        threading.excepthook = functools.partial(_quiet_write_failures, threading.excepthook)
        logging.raiseExceptions = False  # a log line a full disk cannot take is dropped, not a traceback
        if {"--help", "-h"} & set(args):
            print(_help(config_name, [a for a in args if a not in ("--help", "-h")]))
            return 0
        app()
    except KeyboardInterrupt:  # a Ctrl-C before a run took its own handler, or the second one: no time to save
        print(f"{prog}: {jobs.stopped_at_once()}", file=sys.stderr)
        return 130
    except (jobs.Refused, config.UsageError, HydraException, OmegaConfBaseException) as error:
        if user_wants_traceback:
            raise
        error = error.error if isinstance(error, jobs.Refused) else error
        if not isinstance(error, (config.UsageError, HydraException, OmegaConfBaseException)):
            raise error  # a bug in the guard: its traceback
        print(f"{prog}: {error if isinstance(error, config.UsageError) else config.describe(error, args)}",
              file=sys.stderr)
        return 2
    except ValueError as error:  # Hydra composing the overrides (`=3`), before any job ran
        if isinstance(error.__cause__, OSError) and not user_wants_traceback:  # logging cannot open the job's log
            print(f"{prog}: {jobs.unready(error.__cause__)}", file=sys.stderr)
            return 2
        if user_wants_traceback or jobs.current.started:
            raise
        print(f"{prog}: cannot apply the overrides: {config.describe(error, args)}", file=sys.stderr)
        return 2
    except OSError as error:  # Hydra cannot make or write the run folder
        if isinstance(error, BrokenPipeError):
            raise
        print(f"{prog}: {jobs.unready(error)}", file=sys.stderr)
        return 2
    finally:
        threading.excepthook, logging.raiseExceptions = hooks
        if not user_wants_traceback:
            del os.environ["HYDRA_FULL_ERROR"]
        if jobs.current.discard is not None:  # once Hydra has let go of its log there
            import shutil

            shutil.rmtree(jobs.current.discard, ignore_errors=True)
    if jobs.current.failed:
        failed = jobs.current.failed
        print(f"{prog}: {len(failed)} run{'s' * (len(failed) > 1)} of the {'study' if name == 'tune' else 'sweep'} failed "
              f"(the lines above say why): {', '.join(str(relative(Path(f))) for f in failed)}", file=sys.stderr)
        return 1
    return 0


def _quiet_write_failures(hook, args) -> None:
    """A thread's failed write (TensorBoard's event writer on a full disk) reaches the job, which
    says it in one line: the thread prints nothing. Anything else goes to `hook`."""
    from optlab.files import WRITE_FAILURES

    if not (isinstance(args.exc_value, OSError) and args.exc_value.errno in WRITE_FAILURES):
        hook(args)


def _one_job(prog: str, args: list[str]) -> None:
    """tune and lr-find are one job each: no `-m`, no sweep preset (tune's trials are its own sweep)."""
    from optlab.config import UsageError

    for arg in args:
        if arg in ("-m", "--multirun") or arg.startswith(("experiment=", "hydra.mode=")):
            raise UsageError(f"{arg}: {prog} runs one job, not a sweep" +
                             " (its trials are its search; presets: search=<name>)" * prog.endswith("tune"))


def _help(config_name: str, overrides: list[str]) -> str:
    """`optlab train --help` (and tune's, lr-find's): the app's help template, filled in here.
    Hydra's own help builds a config repository for each of its ~90 groups to list them (over
    1 s); the groups that matter are optlab's, read from conf/ in a few milliseconds."""
    import string

    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from optlab import config

    with initialize_config_module("optlab.conf", version_base="1.3"):
        cfg = compose(config_name, overrides, return_hydra_config=True)
    shown = [g for g in config.option_groups() if g != "search" or config_name == "tune"]  # tune's presets
    groups = "".join(f"{group}: {', '.join(config.options(group))}\n" for group in shown)
    task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return string.Template(cfg.hydra.help.template).substitute(
        APP_CONFIG_GROUPS=groups, CONFIG=OmegaConf.to_yaml(task), HYDRA_CONFIG_GROUPS="", FLAGS_HELP="")


def _resume_args(args: list[str], resume: list[str]) -> list[str] | None:
    """The arguments that continue a run: its own overrides, the user's others, its folder
    (quoted for Hydra), and no rewrite of its `.hydra/` (see jobs.Guard). None when the run
    already completed (it says so; nothing changes)."""
    from optlab import jobs
    from optlab.config import UsageError
    from optlab.naming import override

    options = dict(a.split("=", 1) for a in resume)
    folder = Path(options.get("resume", "")).expanduser()
    if not options.get("resume") or not (folder / ".hydra" / "config.yaml").exists():
        raise UsageError(f"resume: {str(folder)!r} is not a run folder (it needs .hydra/config.yaml); "
                         f"give the folder an interrupted run printed")
    if not (folder / "checkpoints" / "last.pt").exists():
        raise UsageError(f"resume: {folder} has no checkpoints/last.pt to continue from")
    status = (jobs.read_metrics(folder) or {}).get("status")  # no record: killed, resume it
    if status in jobs.FINISHED:
        print(f"optlab train: {folder} already {status}: nothing to resume (metrics.json)")
        return None
    saved = _saved_overrides(folder / ".hydra" / "overrides.yaml")
    jobs.current.resume = folder
    jobs.current.allow_changes = options.get("resume.allow_changes", "false").lower() == "true"
    own = [a for a in args if a not in resume]
    return [*saved, *own, override("hydra.run.dir", folder), "hydra.output_subdir=null"]


def _saved_overrides(file: Path) -> list[str]:
    """A run's `overrides.yaml` as typed (`${...}` unresolved), refused in one line naming the file
    unless it is a list of the overrides a run records: its own keys and options, never a flag
    (`--config-dir`) or a `hydra` key (callbacks, launchers, `env_set`), which would run code."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    from optlab.config import UsageError, reason
    from optlab.files import load_yaml

    saved = OmegaConf.to_container(load_yaml(file, "resume: "))
    if not isinstance(saved, list) or not all(isinstance(item, str) for item in saved):
        raise UsageError(f"resume: cannot read {file}: not a list of overrides (key=value lines)")
    parser = OverridesParser.create()
    for item in saved:
        try:
            parsed = None if item.startswith("-") else parser.parse_override(item)
        except HydraException as error:
            raise UsageError(f"resume: cannot read {file}: {item!r}: {reason(error)}") from None
        if parsed is not None and parsed.key_or_group in ("experiment", "search"):  # a preset sets Hydra's mode
            raise UsageError(f"resume: {file}: {item!r}: a job of a preset's sweep resumes with its sweep: the "
                             "command that made it, with hydra.sweep.dir=<the sweep's folder>")
        if parsed is None or parsed.is_hydra_override() or parsed.package is not None:  # `@hydra...` too
            raise UsageError(f"resume: refused {file}: {item!r} (allowed: the run's own keys and options, "
                             f"never a flag, a hydra key or a package)")
    return saved
