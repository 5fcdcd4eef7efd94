"""`optlab tune` measured, in one run: trials stacked against one at a time and against the
same search written by hand; and a search against the full grid.

- stack   8 trials of `optimizer=momentum` over `optimizer.lr=tag(log,interval(1e-3,1))` and
          `optimizer.momentum=interval(0,0.95)`, 6 epochs, no pruning, `tune.seed=3`:
          `optlab tune` with `tune.stack=4` (four trials a stacked model) beside
          `tune.stack=1` (one at a time), and beside `hand`: the same search written by hand
          (Optuna's TPE seeded alike, asking and telling around a plain PyTorch loop on the
          same split, no logs). Each end to end, the best of `--repeat`, with the best value
          each found and the ratios.
- grid    SGD with momentum, 6 learning rates × 4 momenta × 2 batch sizes = 48 points, 10
          epochs each, on digits: the full grid (every point trained to the end) beside TPE
          with Hyperband pruning, once per `--seeds`. Printed per search: trials, epochs
          trained (the sum of every trial's `epochs_run`), the best validation accuracy found,
          and wall time. The aim: the grid's best within 0.5 points in at most a third of its
          epochs.

    python scripts/bench_tune.py                      # both
    python scripts/bench_tune.py --only stack --repeat 3
    python scripts/bench_tune.py --only grid --trials 30 --seeds 5
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provenance import stamp

SPACE = ["optimizer=momentum", "optimizer.lr=choice(0.001,0.003,0.01,0.03,0.1,0.3)",
         "optimizer.momentum=choice(0.0,0.5,0.9,0.95)", "batch_size=choice(32,128)"]
POINTS = 6 * 4 * 2


def search(folder: Path, epochs: int, *settings: str) -> dict:
    """One `optlab tune` command; what its trials spent and found."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "optlab", "tune", *SPACE, f"epochs={epochs}", "device=cpu",
                             f"tune.dir={folder}", *settings], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"failed: {result.stderr[-2000:]}")
    seconds = time.perf_counter() - started
    trials = [json.loads(p.read_text()) for p in folder.glob("*/metrics.json")]
    return {"trials": len(trials), "pruned": sum(t["status"] == "pruned" for t in trials),
            "epochs": sum(t.get("epochs_run", 0) for t in trials),
            "best": max(t["best_val_acc"] for t in trials  # failed or diverged trials have none
                        if isinstance(t.get("best_val_acc"), float) and not math.isnan(t["best_val_acc"])),
            "seconds": seconds}


STACK_SPACE = ["optimizer=momentum", "optimizer.lr=tag(log,interval(1e-3,1))", "optimizer.momentum=interval(0,0.95)",
               "epochs=6", "tune.trials=8", "tune.pruner=none", "tune.seed=3", "device=cpu"]


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{result.stderr[-2000:]}")
    return time.perf_counter() - started


def stack(repeat: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench_tune_"))
    commands = {f"tune.stack={k}": [sys.executable, "-m", "optlab", "tune", *STACK_SPACE, f"tune.stack={k}"]
                for k in (4, 1)}
    commands["hand"] = [sys.executable, __file__, "--hand", str(work / "hand.json")]
    best = {name: float("inf") for name in commands}
    found = {}
    for round in range(repeat):
        for name, command in commands.items():
            folder = work / f"{name.replace('=', '').replace('.', '_')}-{round}"
            seconds = timed([*command, f"tune.dir={folder}"] if name != "hand" else command)
            best[name] = min(best[name], seconds)
            record = folder / "best_trial.json" if name != "hand" else work / "hand.json"
            found[name] = json.loads(record.read_text())["best_val_acc"]
            print(f"    round {round + 1} {name:<13} {seconds:6.2f} s, best val acc {found[name]:.4f}", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    print(f"  stack: 8 trials × 6 epochs, tune.stack=4 {best['tune.stack=4']:.2f} s = "
          f"{best['tune.stack=4'] / best['tune.stack=1']:.2f}× tune.stack=1 ({best['tune.stack=1']:.2f} s) and "
          f"{best['tune.stack=4'] / best['hand']:.2f}× the hand-written search ({best['hand']:.2f} s); "
          f"best val acc {found['tune.stack=4']:.4f}, {found['tune.stack=1']:.4f}, {found['hand']:.4f}")


def hand(out: Path) -> None:
    """The search by hand: Optuna's TPE (seed 3) over the same two settings, each trial the
    default MLP trained with SGD and momentum, batches of 64, validated every epoch."""
    import optuna
    import plain
    import torch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    x, y, x_val, y_val = plain.digits(torch.device("cpu"))
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=3, constant_liar=True))
    for _ in range(8):
        trial = study.ask()
        lr = trial.suggest_float("optimizer.lr", 1e-3, 1, log=True)
        momentum = trial.suggest_float("optimizer.momentum", 0, 0.95)
        torch.manual_seed(0)
        model = plain.mlp(x.shape[1], [256, 256], 10, x.device)
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
        order = torch.Generator().manual_seed(0)
        accuracy = 0.0
        for _ in range(6):
            plain.epoch(model, optimizer, x, y, 64, order)
            accuracy = max(accuracy, plain.validate(model, x_val, y_val)[1])
        study.tell(trial, accuracy)
    out.write_text(json.dumps({"best_val_acc": study.best_value}))


def grid(args) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench_tune_"))
    rows = [("grid", search(work / "grid", args.epochs, "tune.sampler=grid", "tune.pruner=none",
                            f"tune.trials={POINTS}", "tune.stack=1"))]
    for seed in range(args.seeds):
        rows.append((f"tpe+hyperband seed {seed}",
                     search(work / f"tpe{seed}", args.epochs, "tune.sampler=tpe", "tune.pruner=hyperband",
                            f"tune.trials={args.trials}", f"tune.seed={seed}", "tune.stack=1")))
    shutil.rmtree(work, ignore_errors=True)
    grid = rows[0][1]
    print(f"\n{POINTS}-point space ({' '.join(SPACE[1:])}), {args.epochs} epochs a trial, digits, CPU")
    print(f"{'search':<22} {'trials':>6} {'pruned':>6} {'epochs':>7} {'of grid':>8} {'best val acc':>12} "
          f"{'vs grid':>8} {'wall':>8}")
    for name, row in rows:
        print(f"{name:<22} {row['trials']:>6} {row['pruned']:>6} {row['epochs']:>7} "
              f"{row['epochs'] / grid['epochs']:>8.2f} {row['best']:>12.4f} "
              f"{100 * (row['best'] - grid['best']):>+7.2f}p {row['seconds']:>7.1f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="stack,grid")
    parser.add_argument("--repeat", type=int, default=2, help="stack: each command's best of this many")
    parser.add_argument("--trials", type=int, default=20, help="grid: TPE's trials")
    parser.add_argument("--seeds", type=int, default=4, help="grid: TPE searches, one per tune.seed")
    parser.add_argument("--epochs", type=int, default=10, help="grid: epochs a trial")
    parser.add_argument("--hand", type=Path, help=argparse.SUPPRESS)  # the hand-written search, writing its best here
    args = parser.parse_args()
    if args.hand:
        return hand(args.hand)
    print(stamp())  # the machine, torch version, commit and date these figures come from
    for name in args.only.split(","):
        print(f"{name}:", flush=True)
        {"stack": lambda: stack(args.repeat), "grid": lambda: grid(args)}[name]()


if __name__ == "__main__":
    main()
