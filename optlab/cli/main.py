"""The `optlab` command: a plain dispatcher in front of the Hydra apps (optlab/cli/apps.py) and
the commands that read finished runs (optlab/cli/commands.py). A user's mistake ends in one
line on stderr and exit code 2. Nothing here imports torch.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import partial

from optlab import __version__
from optlab.cli import commands
from optlab.cli.apps import run_app

# every command: what `optlab --help` says of it, and what runs it with the rest of the line
COMMANDS: dict[str, tuple[str, Callable[[list[str]], int]]] = {
    "train": ("train a network on real data (see: optlab train --help)", partial(run_app, "train")),
    "tune": ("search hyperparameters with Optuna, pruning bad trials early (see: optlab tune --help)",
             partial(run_app, "tune")),
    "lr-find": ("the learning-rate range test: which rate to train with (see: optlab lr-find --help)",
                partial(run_app, "lr-find")),
    "compare": ("one summary of runs and sweeps: table, CSV, plots (see: optlab compare --help)", commands.compare),
    "landscape": ("curvature of a finished run: sharpness, spectrum, loss slices (optlab landscape RUN)",
                  commands.landscape),
    "bench": ("which optimizer is better: each tuned with the same budget, rerun, compared (optlab bench --help)",
              commands.bench),
    "report": ("the recitation reproduced: every experiment, each claim checked (see: optlab report --help)",
               commands.report),
}


USAGE = f"""usage: optlab [-h] [--version] <command> [overrides ...]

A command-line lab for deep-learning optimization.

commands:
{chr(10).join(f"  {name:<{max(map(len, COMMANDS)) + 2}}{text}" for name, (text, _) in COMMANDS.items())}

examples:
  optlab train
  optlab train optimizer=adam batch_size=64
  optlab train -m optimizer=sgd,adam batch_size=16,256
  optlab tune 'optimizer=choice(sgd,momentum,adam)' 'optimizer.lr=tag(log,interval(1e-4,1))' tune.trials=30
  optlab lr-find optimizer=adam
  optlab compare outputs/sweeps/2026-11-25_10-00-00 outputs/sweeps/2026-11-25_11-00-00
  eval "$(optlab train -sc install=bash)"      # shell completion
"""


def run() -> None:
    """The `optlab` command (and `python -m optlab`): `main`, then a quick exit.

    Once a command is done, Python's own exit would spend about 0.6 s tearing down torch's
    modules with torch._dynamo, which any torch.optim constructor imports (scripts/bench_startup.py
    prints it): more than a small run trains. So the exit handlers run (logging's flush and close,
    every library's atexit clean-up) and the process ends there, as `os._exit` ends it. Only
    when no other thread is left: one would otherwise be joined first.

    Python's collector is made to run its young passes every 50,000 allocations rather than
    700: importing torch and composing a sweep's configs make hundreds of thousands of objects
    that live as long as the command, and each full pass walks them all: about half a second
    of `optlab train epochs=1` (scripts/bench_startup.py, its last two rows). Cycles are still
    freed, later."""
    import atexit
    import gc
    import threading

    gc.set_threshold(50_000, 20, 10)
    code = main()
    if threading.active_count() > 1:
        raise SystemExit(code)
    atexit._run_exitfuncs()  # what `sys.exit` would run, in the same order
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe, a closed stream: nothing more can reach it
            pass
    os._exit(code if isinstance(code, int) else 1)


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
    return COMMANDS[command][1](rest)


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
    return run_app("train", args)
