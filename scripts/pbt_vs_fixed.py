"""Population-based training against the same number of fixed-setting runs, in one run.

For each seed, two studies of the same problem and space with the same budget: `tune.sampler=pbt`
(8 members trained as one population, exploit and explore every 2 epochs) and `tune.sampler=random`
(8 runs, each at its drawn setting throughout: the population's own first draws, since both
samplers are Optuna's RandomSampler with the seed). Each trains 8 × 16 epochs of the digits MLP
(`model.hidden=[64]`, SGD, `optimizer.lr` log-uniform in [0.001, 1]). Prints the best validation
loss of each (PBT: its best lineage's) and draws docs/images/pbt_vs_fixed.png from one seed
(`--figure-seed`): the learning rate and validation loss along PBT's best lineage beside every
fixed run's.

    python scripts/pbt_vs_fixed.py                # seeds 0-4
    python scripts/pbt_vs_fixed.py --seeds 0,1 --figure /tmp/pbt.png
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from provenance import stamp

PROBLEM = ["optimizer.lr=tag(log,interval(0.001,1))", "model.hidden=[64]", "epochs=16", "tune.trials=8",
           "tune.metric=best_val_loss", "device=cpu"]
SAMPLERS = {"pbt": ["tune.sampler=pbt"], "fixed": ["tune.sampler=random", "tune.pruner=none", "tune.stack=8"]}


def study(kind: str, seed: int, work: Path) -> dict:
    folder = work / f"{kind}-{seed}"
    command = [sys.executable, "-m", "optlab", "tune", *PROBLEM, *SAMPLERS[kind], f"tune.seed={seed}",
               f"tune.dir={folder}"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{result.stderr[-2000:]}")
    return {"folder": folder, **json.loads((folder / "best_trial.json").read_text())}


def curves(found: dict) -> list[dict]:
    """The rows of a study's best: PBT's best lineage, or the best fixed run's history."""
    from optlab.jobs.tune import pbt

    folder = found["folder"]
    if "lineage" not in found:
        return list(pbt.read_history(folder.parent / found["run"] / "history.csv").values())
    histories = {pbt.folder_number(p.name): pbt.read_history(p / "history.csv")
                 for p in folder.iterdir() if (p / "history.csv").is_file()}
    return [row for _, row in pbt.lineage(histories, found["number"])]


def figure(pbt: dict, fixed: dict, path: Path, seed: int) -> None:
    from optlab.jobs.tune.pbt import read_history
    from optlab.store.plots import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    for run in sorted(p for p in fixed["folder"].iterdir() if (p / "history.csv").is_file()):
        rows = list(read_history(run / "history.csv").values())
        for ax, key in zip(axes, ("lr", "val_loss")):
            ax.step([r["epoch"] for r in rows], [r[key] for r in rows], where="post", color="tab:blue", lw=0.7,
                    alpha=0.4)
    for found, label, style in ((fixed, "best of 8 fixed-setting runs", {"color": "tab:blue"}),
                                (pbt, "PBT's best lineage (8 members)", {"color": "black", "lw": 2})):
        rows = curves(found)
        epochs = [r["epoch"] for r in rows]
        axes[0].step(epochs, [r["lr"] for r in rows], where="post", label=label, **style)
        axes[1].step(epochs, [r["val_loss"] for r in rows], label=f"{label}: best {min(r['val_loss'] for r in rows):.4f}",
                     where="post", **style)
    axes[0].set(xlabel="epoch", ylabel="learning rate", yscale="log", title="the rate each epoch trained with")
    axes[1].set(xlabel="epoch", ylabel="validation loss", yscale="log", title="validation loss (thin: each fixed run)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"digits MLP [64], SGD, lr log-uniform in [0.001, 1], 16 epochs a member; seed {seed}", fontsize=10)
    save_figure(fig, path)


def main() -> None:
    print(stamp())  # the machine, torch version, commit and date these figures come from
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--figure-seed", type=int, default=2, help="the seed the figure shows")
    parser.add_argument("--figure", type=Path, default=Path(__file__).resolve().parents[1] / "docs/images/pbt_vs_fixed.png")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pbt_vs_fixed_"))
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"{'seed':>4}  {'PBT best val_loss':>17}  {'best fixed':>10}  {'PBT / fixed':>11}  PBT's schedule (lr after epoch)")
    wins = 0
    for seed in seeds:
        found = {kind: study(kind, seed, work) for kind in SAMPLERS}
        a, b = found["pbt"]["best_val_loss"], found["fixed"]["best_val_loss"]
        wins += a < b
        schedule = ", ".join(f"{e}: {v['lr']:.3g}" for e, v in found["pbt"]["schedule"].items()) or "none"
        print(f"{seed:>4}  {a:>17.4f}  {b:>10.4f}  {a / b:>11.3f}  {found['pbt']['params']['optimizer.lr']:.3g}, {schedule}",
              flush=True)
        if seed == args.figure_seed:
            figure(found["pbt"], found["fixed"], args.figure, seed)
    print(f"PBT reached the lower validation loss in {wins} of {len(seeds)} seeds; figure: {args.figure}")


if __name__ == "__main__":
    main()
