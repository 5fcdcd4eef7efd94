"""`optlab train`, `optlab tune` and `optlab lr-find`: one Hydra app each, described by an `App`
spec, run by one function with the same groups and overrides and the same one-line answer to
a user's mistake. `@hydra.main` parses `sys.argv` itself, so the subcommand is dropped from
argv before the app runs. Nothing here imports torch: the job's module is imported only once
Hydra has composed its config.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from optlab.errors import UsageError
from optlab.jobs.command import Command


def _train_goes_on(metrics: dict, run_dir: Path, command: Command, sweep_dir: Path | None) -> str:
    from optlab.jobs.dispatch import sweep_again
    from optlab.naming import command as quoted
    from optlab.naming import relative

    if sweep_dir is not None:
        return f"interrupted after epoch {metrics['epochs_run']}; finish the sweep with: " \
               f"{sweep_again(command.words, sweep_dir)}"
    return f"interrupted after epoch {metrics['epochs_run']}; resume with: " \
           f"{quoted('optlab', 'train', f'resume={relative(run_dir)}')}"


def _tune_goes_on(metrics: dict, run_dir: Path, command: Command, sweep_dir: Path | None) -> str:
    from optlab.jobs.tune.search import go_on

    return "interrupted; go on with: " + go_on([*command.words[2:], *command.search], run_dir)


@dataclass(frozen=True)
class App:
    """One Hydra app of the `optlab` command."""

    config: str  # its primary config in conf/
    job: str  # the module whose `run(cfg, run_dir, command)` is the job
    sweeps: bool  # takes -m and experiment presets; otherwise it runs one job
    resumes: bool  # takes resume=<folder>
    searches: bool  # reads search expressions (choice(...), interval(...)) out of its arguments
    records: bool  # a failed job is taken back or recorded in its folder (a trial records its own)
    goes_on: Callable[[dict, Path, Command, Path | None], str] | None  # how to go on after a signal stopped it
    groups_off: tuple[str, ...] = ()  # config groups it refuses, left out of its --help
    of: str = "sweep"  # what a failed run is part of


APPS = {
    "train": App("config", "optlab.jobs.dispatch", sweeps=True, resumes=True, searches=False, records=True,
                 goes_on=_train_goes_on, groups_off=("search",)),
    "tune": App("tune", "optlab.jobs.tune.search", sweeps=False, resumes=False, searches=True, records=False,
                goes_on=_tune_goes_on, groups_off=("experiment",), of="study"),
    "lr-find": App("lr_find", "optlab.jobs.lr_find", sweeps=False, resumes=False, searches=False, records=True,
                   goes_on=None, groups_off=("experiment", "search", "surface")),
}


def _command(name: str, app: App, args: list[str]) -> tuple[Command, list[str]] | None:
    """What the command line asks for beyond Hydra's overrides, and the overrides Hydra gets.
    None when there is nothing to do (a resume of a finished run)."""
    command = Command()
    if not app.sweeps:
        _one_job(f"optlab {name}", args, app.searches)
    if app.searches:  # choice(...), interval(...): the search space, which Hydra would read as a sweep
        from optlab.jobs.tune.space import split

        args, command.search = split(args)
    resume = [a for a in args if a.split("=", 1)[0] in ("resume", "resume.allow_changes")]
    if resume and app.resumes:
        args = _resume_args(args, resume)
        if args is None:
            return None
        command.resume = Path(dict(a.split("=", 1) for a in resume)["resume"]).expanduser()
    command.words = ["optlab", name, *args]
    if app.searches:  # the StudyGuard (optlab/jobs/tune/study.py) gets the search as its own config
        import json

        from optlab.naming import override

        args = [*args, override("+hydra.callbacks.guard.search", json.dumps(command.search))]
    return command, args


def _task(name: str, app: App, command: Command) -> Callable[[object], dict]:
    """The task function Hydra runs for each job, carrying the `command` it serves (Hydra hands
    it to optlab's sweeper and launcher, which read `task.command`)."""

    def task(cfg) -> dict:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        from optlab.errors import usage_error
        from optlab.jobs.dispatch import failed, stop_interrupted

        command.started = True
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        in_sweep = HydraConfig.get().mode == RunMode.MULTIRUN
        command.readied = None if in_sweep or app.searches else run_dir
        command.study_dir = run_dir if app.searches else None
        try:
            metrics = importlib.import_module(app.job).run(cfg, run_dir, command)
        except Exception as error:
            mistake = failed(run_dir, cfg, error, in_sweep) if app.records else usage_error(error)
            if in_sweep:  # a sweep goes on; its last line names every failed run
                return {"status": "failed"}
            if mistake is None:  # a bug ends in its traceback
                raise
            print(f"optlab {name}: {mistake}", file=sys.stderr)
            sys.exit(2)  # exit here: Hydra would print the job as failed
        if metrics.get("status") == "interrupted" and app.goes_on is not None:
            sweep_dir = Path(HydraConfig.get().sweep.dir) if in_sweep else None
            stop_interrupted(metrics, f"optlab {name}: {app.goes_on(metrics, run_dir, command, sweep_dir)}")
        return metrics

    task.command = command
    return task


def run_app(name: str, args: list[str]) -> int:
    """Run the Hydra app `name` with the command line's `args`; the exit code."""
    import hydra

    from optlab.config.resolvers import register
    from optlab.naming import relative

    register()
    app, prog = APPS[name], f"optlab {name}"
    try:
        made = _command(name, app, args)
    except UsageError as mistake:
        print(f"{prog}: {mistake}", file=sys.stderr)
        return 2
    if made is None:
        return 0
    command, args = made
    sys.argv = [sys.argv[0], *args]
    if {"--help", "-h"} & set(args):
        print(_help(app, [a for a in args if a not in ("--help", "-h")]))
        return 0
    main = hydra.main(config_path="pkg://optlab.conf", config_name=app.config, version_base="1.3")
    code = _guarded(prog, args, command, main(_task(name, app, command)))
    if code == 0 and command.failed:
        failed = command.failed
        print(f"{prog}: {len(failed)} run{'s' * (len(failed) > 1)} of the {app.of} failed (the lines above say "
              f"why): {', '.join(str(relative(Path(f))) for f in failed)}", file=sys.stderr)
        return 1
    return code


def _study_goes_on(command: Command) -> str | None:
    """After a Ctrl-C that stopped `optlab tune` at once (its study starting, its summary): the
    study keeps what its trials saved (never taken back as a run that had not begun), and the
    same command goes on with it; None for any other command."""
    if command.study_dir is None:
        return None
    from optlab.jobs.tune.search import go_on

    return f"stopped at once; go on with the study: {go_on([*command.words[2:], *command.search], command.study_dir)}"


def _guarded(prog: str, args: list[str], command: Command, app: Callable[[], object]) -> int:
    """Run the Hydra `app`; every way it can end, as an exit code and at most one line."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from optlab.config.wording import describe
    from optlab.errors import Refused
    from optlab.jobs.dispatch import stopped_at_once, unready

    user_wants_traceback = "HYDRA_FULL_ERROR" in os.environ
    hooks = threading.excepthook, logging.raiseExceptions
    try:
        os.environ["HYDRA_FULL_ERROR"] = "1"  # let Hydra's errors reach us instead of exit(1)
        threading.excepthook = functools.partial(_quiet_write_failures, threading.excepthook)
        logging.raiseExceptions = False  # a log line a full disk cannot take is dropped, not a traceback
        app()
    except KeyboardInterrupt:  # a Ctrl-C before a run took its own handler, or the second one: no time to save
        print(f"{prog}: {_study_goes_on(command) or stopped_at_once(command)}", file=sys.stderr)
        return 130
    except (Refused, UsageError, HydraException, OmegaConfBaseException) as error:
        if user_wants_traceback:
            raise
        error = error.error if isinstance(error, Refused) else error
        if not isinstance(error, (UsageError, HydraException, OmegaConfBaseException)):
            raise error  # a bug in the guard: its traceback
        print(f"{prog}: {error if isinstance(error, UsageError) else describe(error, args)}", file=sys.stderr)
        return 2
    except ValueError as error:  # Hydra composing the overrides (`=3`), before any job ran
        if isinstance(error.__cause__, OSError) and not user_wants_traceback:  # logging cannot open the job's log
            print(f"{prog}: {unready(error.__cause__)}", file=sys.stderr)
            return 2
        if user_wants_traceback or command.started:
            raise
        print(f"{prog}: cannot apply the overrides: {describe(error, args)}", file=sys.stderr)
        return 2
    except OSError as error:  # Hydra cannot make or write the run folder
        if isinstance(error, BrokenPipeError):
            raise
        print(f"{prog}: {unready(error)}", file=sys.stderr)
        return 2
    finally:
        threading.excepthook, logging.raiseExceptions = hooks
        if not user_wants_traceback:
            del os.environ["HYDRA_FULL_ERROR"]
        if command.discard is not None:  # once Hydra has let go of its log there
            import shutil

            shutil.rmtree(command.discard, ignore_errors=True)
    return 0


def _quiet_write_failures(hook, args) -> None:
    """A thread's failed write (TensorBoard's event writer on a full disk) reaches the job, which
    says it in one line: the thread prints nothing. Anything else goes to `hook`."""
    from optlab.store.files import WRITE_FAILURES

    if not (isinstance(args.exc_value, OSError) and args.exc_value.errno in WRITE_FAILURES):
        hook(args)


def _one_job(prog: str, args: list[str], searches: bool) -> None:
    """tune and lr-find are one job each: no `-m`, no sweep preset (tune's trials are its own sweep)."""
    for arg in args:
        if arg in ("-m", "--multirun") or arg.startswith(("experiment=", "hydra.mode=")):
            raise UsageError(f"{arg}: {prog} runs one job, not a sweep" +
                             " (its trials are its search; presets: search=<name>)" * searches)


def _help(app: App, overrides: list[str]) -> str:
    """`optlab train --help` (and tune's, lr-find's): the app's help template, filled in here.
    Hydra's own help builds a config repository for each of its ~90 groups to list them (over
    1 s); the groups that matter are optlab's, read from conf/ in a few milliseconds."""
    import string

    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from optlab.config.schema import group_keys_help, option_groups, options

    with initialize_config_module("optlab.conf", version_base="1.3"):
        cfg = compose(app.config, overrides, return_hydra_config=True)
    shown = [g for g in option_groups() if g not in app.groups_off]
    groups = "".join(f"{group}: {', '.join(options(group))}\n" for group in shown)
    task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return string.Template(cfg.hydra.help.template).substitute(
        APP_CONFIG_GROUPS=groups, GROUP_KEYS=group_keys_help(task), CONFIG=OmegaConf.to_yaml(task),
        HYDRA_CONFIG_GROUPS="", FLAGS_HELP="")


def _resume_args(args: list[str], resume: list[str]) -> list[str] | None:
    """The arguments that continue a run: its own overrides, the user's others, its folder
    (quoted for Hydra), and no rewrite of its `.hydra/` (see Guard). None when the run
    already completed (it says so; nothing changes)."""
    from optlab.naming import override
    from optlab.store.folder import FINISHED, read_metrics

    options = dict(a.split("=", 1) for a in resume)
    folder = Path(options.get("resume", "")).expanduser()
    if not options.get("resume"):
        raise UsageError("resume: give the folder of the run to continue, e.g. resume=outputs/runs/<run> "
                         "(an interrupted run prints it)")
    if not (folder / ".hydra" / "config.yaml").exists():
        raise UsageError(f"resume: {str(folder)!r} is not a run folder (it needs .hydra/config.yaml); "
                         f"give the folder an interrupted run printed")
    if not (folder / "checkpoints" / "last.pt").exists():
        raise UsageError(f"resume: {folder} has no checkpoints/last.pt to continue from")
    status = (read_metrics(folder) or {}).get("status")  # no record: killed, resume it
    if status in FINISHED:
        print(f"optlab train: {folder} already {status}: nothing to resume (metrics.json)")
        return None
    saved = _saved_overrides(folder / ".hydra" / "overrides.yaml")
    allow = options.get("resume.allow_changes", "false").lower() == "true"
    own = [a for a in args if a not in resume]
    # the Guard (optlab/jobs/hydra_callbacks.py) gets the run to continue as its own config
    return [*saved, *own, override("hydra.run.dir", folder), "hydra.output_subdir=null",
            override("+hydra.callbacks.guard.resume", folder), f"+hydra.callbacks.guard.allow_changes={str(allow).lower()}"]


def _saved_overrides(file: Path) -> list[str]:
    """A run's `overrides.yaml` as typed (`${...}` unresolved), refused in one line naming the file
    unless it is a list of the overrides a run records: its own keys and options, never a flag
    (`--config-dir`) or a `hydra` key (callbacks, launchers, `env_set`), which would run code."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    from optlab.errors import reason
    from optlab.store.files import load_yaml

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
