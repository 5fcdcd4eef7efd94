"""Search against a grid: `optlab tune` on one fixed space, the full grid (every point trained to
the end) beside TPE with Hyperband pruning, each timed end to end.

The space: SGD with momentum, 6 learning rates × 4 momenta × 2 batch sizes = 48 points, 10
epochs each, on digits. Printed per search: trials, epochs trained (the sum of every trial's
`epochs_run`), the best validation accuracy found, and wall time; TPE's once per `--seeds`.
The aim: the grid's best within 0.5 points in at most a third of its epochs.

    python scripts/bench_tune.py                 # grid, then TPE + Hyperband (20 trials) with 4 seeds
    python scripts/bench_tune.py --trials 30 --seeds 5
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


def main() -> None:
    print(stamp())  # the machine, torch version, commit and date these figures come from
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="TPE's trials")
    parser.add_argument("--seeds", type=int, default=4, help="TPE searches, one per tune.seed")
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_tune_"))
    rows = [("grid", search(work / "grid", args.epochs, "tune.sampler=grid", "tune.pruner=none",
                            f"tune.trials={POINTS}"))]
    for seed in range(args.seeds):
        rows.append((f"tpe+hyperband seed {seed}",
                     search(work / f"tpe{seed}", args.epochs, "tune.sampler=tpe", "tune.pruner=hyperband",
                            f"tune.trials={args.trials}", f"tune.seed={seed}")))
    shutil.rmtree(work, ignore_errors=True)
    grid = rows[0][1]
    print(f"\n{POINTS}-point space ({' '.join(SPACE[1:])}), {args.epochs} epochs a trial, digits, CPU")
    print(f"{'search':<22} {'trials':>6} {'pruned':>6} {'epochs':>7} {'of grid':>8} {'best val acc':>12} "
          f"{'vs grid':>8} {'wall':>8}")
    for name, row in rows:
        print(f"{name:<22} {row['trials']:>6} {row['pruned']:>6} {row['epochs']:>7} "
              f"{row['epochs'] / grid['epochs']:>8.2f} {row['best']:>12.4f} "
              f"{100 * (row['best'] - grid['best']):>+7.2f}p {row['seconds']:>7.1f}s")


if __name__ == "__main__":
    main()
