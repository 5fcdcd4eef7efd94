"""The `optlab` command: a plain dispatcher in front of Hydra apps.

`@hydra.main` parses `sys.argv` itself, so the subcommand is dropped from argv before the
Hydra app runs. A user's mistake (bad override, unknown option, out-of-range value) ends in
one line on stderr and exit code 2; Hydra's flags (--help, --cfg, --info, -m, shell
completion) pass straight through. Nothing here imports torch.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from optlab import __version__

COMMANDS = {"train": "train a network on real data (see: optlab train --help)"}

USAGE = f"""usage: optlab [-h] [--version] <command> [overrides ...]

A command-line lab for deep-learning optimization.

commands:
{chr(10).join(f"  {name:<8}{text}" for name, text in COMMANDS.items())}

examples:
  optlab train
  optlab train optimizer=adam batch_size=64
  optlab train -m optimizer=sgd,adam batch_size=16,256
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
    return _run_train(rest)


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
    sys.argv = [sys.argv[0], *args]
    user_wants_traceback = "HYDRA_FULL_ERROR" in os.environ
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let Hydra's errors reach us instead of exit(1)

    @hydra.main(config_path="pkg://optlab.conf", config_name="config", version_base="1.3")
    def train_app(cfg) -> float | None:
        from hydra.core.hydra_config import HydraConfig

        run_dir = Path(HydraConfig.get().runtime.output_dir)
        try:
            config.validate(cfg)
            if cfg.surface is not None:
                from optlab.surfaces import run  # torch is imported only now

                return run(cfg, run_dir)["final_loss"]
            from optlab.train import train

            return train(cfg, run_dir)["best_val_acc"]
        except Exception as error:  # exit here: Hydra would print the job as failed
            mistake = _usage_error(error)
            if mistake is None:
                raise
            print(f"optlab train: {mistake}", file=sys.stderr)
            sys.exit(2)

    try:
        train_app()
    except (HydraException, OmegaConfBaseException) as error:
        if user_wants_traceback:
            raise
        print(f"optlab train: {describe(error, args)}", file=sys.stderr)
        return 2
    return 0


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
