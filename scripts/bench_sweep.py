"""What a sweep costs end to end: optlab's launchers beside a hand-written loop, in one run.

The sweep: `optimizer.lr` × `seed` (4 × 4 = 16 runs by default), 10 epochs each, on digits,
timed from the command to the summary, with each launcher:

- basic       `optlab train -m ...` (Hydra's basic launcher: one run after another)
- joblib      `... hydra/launcher=joblib hydra.launcher.n_jobs=2` (two processes)
- vectorized  `... hydra/launcher=vectorized` (the runs as one stacked model)
- hand        a plain PyTorch script training the same configurations in turn in one
              process: the same data split, model, batches and per-epoch validation, no logs

Modes alternate, `--repeat` times; the best time of each is reported, with its ratio to the
hand-written script, and the vectorized sweep's summed member throughput against a single
run's (the basic sweep's runs).

    python scripts/bench_sweep.py                    # the default MLP, [256, 256]
    python scripts/bench_sweep.py --hidden 64        # a smaller model: a larger stacked gain
    python scripts/bench_sweep.py --seeds 16 --modes basic,vectorized,hand   # K = 64
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provenance import stamp

LRS = (0.01, 0.03, 0.1, 0.3)


def sweep_args(args, out: Path) -> list[str]:
    return ["-m", f"optimizer.lr={','.join(map(str, LRS))}", f"seed=range({args.seeds})", f"epochs={args.epochs}",
            f"model.hidden=[{','.join(map(str, args.hidden))}]", f"device={args.device}", f"hydra.sweep.dir={out}"]


LAUNCHERS = {
    "basic": [],
    "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    "vectorized": ["hydra/launcher=vectorized"],
}


def timed(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{result.stderr[-2000:]}")
    return time.perf_counter() - started


def throughput(folder: Path) -> list[float]:
    """Each run's train_samples_per_s in a sweep folder."""
    return [json.loads(p.read_text())["train_samples_per_s"] for p in folder.glob("**/metrics.json")]


def main() -> None:
    print(stamp())  # the machine, torch version, commit and date these figures come from
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--hidden", type=int, nargs="*", default=[256, 256])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--modes", default="basic,joblib,vectorized,hand")
    parser.add_argument("--hand", action="store_true", help=argparse.SUPPRESS)  # the hand-written child
    args = parser.parse_args()
    if args.hand:
        return hand(args)
    modes = args.modes.split(",")
    work = Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    best: dict[str, float] = {}
    rates: dict[str, list[float]] = {}
    for round in range(args.repeat):
        for mode in modes:
            out = work / f"{mode}-{round}"
            if mode == "hand":
                command = [sys.executable, __file__, "--hand", f"--seeds={args.seeds}", f"--epochs={args.epochs}",
                           f"--device={args.device}", "--hidden", *map(str, args.hidden)]
            else:
                command = [sys.executable, "-m", "optlab", "train", *sweep_args(args, out), *LAUNCHERS[mode]]
            seconds = timed(command, work)
            best[mode] = min(best.get(mode, float("inf")), seconds)
            if mode != "hand":
                rates[mode] = throughput(out)
                shutil.rmtree(out)
            print(f"  round {round + 1} {mode:<10} {seconds:6.2f} s", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    runs = len(LRS) * args.seeds
    print(f"\n{runs} runs × {args.epochs} epochs, model.hidden={args.hidden}, device={args.device}, "
          f"best of {args.repeat} ({os.cpu_count()} cores)")
    for mode in modes:
        ratio = f"  {best[mode] / best['hand']:.2f}× the hand-written script" if "hand" in best else ""
        print(f"  {mode:<10} {best[mode]:6.2f} s{ratio}")
    if "vectorized" in rates and "basic" in rates:
        single = sum(rates["basic"]) / len(rates["basic"])
        total = sum(rates["vectorized"])
        print(f"  vectorized: summed member throughput {total:,.0f} samples/s = {total / single:.1f}× "
              f"a single run's {single:,.0f} samples/s")


def hand(args) -> None:
    """The hand-written script: digits split 60/20/20 and standardized, the same MLP, SGD,
    batches of 64 in a seeded order, validation after every epoch; nothing logged."""
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from torch import nn

    device = torch.device(args.device if args.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu")
    x, y = load_digits(return_X_y=True)
    x_rest, _, y_rest, _ = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    x_train, x_val, y_train, y_val = train_test_split(x_rest, y_rest, test_size=0.25, stratify=y_rest, random_state=0)
    mean, std = x_train.mean(0), x_train.std(0)
    std[std == 0] = 1
    x, x_val = (torch.tensor((a - mean) / std, dtype=torch.float32, device=device) for a in (x_train, x_val))
    y, y_val = (torch.tensor(a, device=device) for a in (y_train, y_val))
    for lr in LRS:
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            widths = [x.shape[1], *args.hidden]
            layers = [m for a, b in zip(widths, widths[1:]) for m in (nn.Linear(a, b), nn.ReLU())]
            model = nn.Sequential(*layers, nn.Linear(widths[-1], 10)).to(device)
            optimizer = torch.optim.SGD(model.parameters(), lr=lr)
            order = torch.Generator().manual_seed(seed)
            for _ in range(args.epochs):
                model.train()
                for index in torch.randperm(len(y), generator=order).to(device).split(64):
                    loss = nn.functional.cross_entropy(model(x[index]), y[index])
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                model.eval()
                with torch.no_grad():
                    out = model(x_val)
                    print(f"{nn.functional.cross_entropy(out, y_val).item():.4f} "
                          f"{(out.argmax(1) == y_val).float().mean().item():.4f}", file=sys.stderr)


if __name__ == "__main__":
    main()
