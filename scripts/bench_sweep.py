"""What a sweep costs end to end: optlab's launchers beside a hand-written loop, in one run.

Every sweep is `optimizer.lr` × `seed` on digits (or mnist5k for the CNN), timed from the
command to the summary, everything a run writes written. Four measurements:

- member   the marginal cost of one more member of a vectorized group: the vectorized sweep
           of a tiny model (`model.hidden=[32]`, 2 epochs) at K = 16 and K = 64 runs,
           (t64 − t16) / 48
- mlp      16 runs of the default MLP at the default 20 epochs: vectorized beside `hand`, a
           plain PyTorch script training the same configurations in turn in one process (the
           same data split, model, batches and per-epoch validation, no logs), and beside
           `hand-stacked`, the same 16 runs written by hand as one stacked model (a batched
           matmul per layer, the SGD step as one in-place update, no logs): the most any
           vectorized sweep can gain on this machine
- basic    the same 16 runs at 10 epochs: Hydra's basic launcher (one run after another)
           beside `hand`
- cnn      8 runs of `model=cnn data=mnist5k`: vectorized beside basic

Each timing is the best of `--repeat` (alternating modes); ratios are printed beside them.

    python scripts/bench_sweep.py                       # all four
    python scripts/bench_sweep.py --only member,mlp     # some of them
    python scripts/bench_sweep.py --device cuda --seeds 16   # on a GPU: K = 64 MLPs
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provenance import stamp

LRS = (0.01, 0.03, 0.1, 0.3)
LAUNCHERS = {"basic": [], "vectorized": ["hydra/launcher=vectorized"]}


def sweep(seeds: int, epochs: int, device: str, *extra: str) -> list[str]:
    return ["-m", f"optimizer.lr={','.join(map(str, LRS))}", f"seed=range({seeds})", f"epochs={epochs}",
            f"device={device}", *extra]


def timed(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{result.stderr[-2000:]}")
    return time.perf_counter() - started


class Bench:
    """Runs commands in a scratch folder, keeps each mode's best time."""

    def __init__(self, repeat: int):
        self.repeat, self.work = repeat, Path(tempfile.mkdtemp(prefix="bench_sweep_"))

    def best(self, commands: dict[str, list[str]]) -> dict[str, float]:
        best = {name: float("inf") for name in commands}
        for round in range(self.repeat):
            for name, command in commands.items():
                out = self.work / f"{name}-{round}"
                seconds = timed([*command, f"hydra.sweep.dir={out}"] if "-m" in command else command, self.work)
                best[name] = min(best[name], seconds)
                shutil.rmtree(out, ignore_errors=True)
                print(f"    round {round + 1} {name:<14} {seconds:7.2f} s", flush=True)
        return best


def optlab(args: list[str], launcher: str) -> list[str]:
    return [sys.executable, "-m", "optlab", "train", *args, *LAUNCHERS[launcher]]


def hand_command(seeds: int, epochs: int, device: str, *extra: str) -> list[str]:
    return [sys.executable, __file__, "--hand", f"--seeds={seeds}", f"--epochs={epochs}", f"--device={device}", *extra]


def member(bench: Bench, device: str) -> None:
    tiny = ["model.hidden=[32]"]
    t = bench.best({f"K{4 * s}": optlab(sweep(s, 2, device, *tiny), "vectorized") for s in (4, 16)})
    cost = (t["K64"] - t["K16"]) / 48
    print(f"  member: one more member of a vectorized group costs {cost * 1e3:.1f} ms "
          f"(K=16 {t['K16']:.2f} s, K=64 {t['K64']:.2f} s; model.hidden=[32], 2 epochs)")


def mlp(bench: Bench, device: str, seeds: int) -> None:
    t = bench.best({"vectorized": optlab(sweep(seeds, 20, device), "vectorized"),
                    "hand": hand_command(seeds, 20, device), "hand-stacked": hand_command(seeds, 20, device, "--stacked")})
    print(f"  mlp: {4 * seeds} runs × 20 epochs, vectorized {t['vectorized']:.2f} s = "
          f"{t['vectorized'] / t['hand']:.2f}× the hand-written script's {t['hand']:.2f} s; "
          f"written by hand as one stacked model {t['hand-stacked']:.2f} s = {t['hand-stacked'] / t['hand']:.2f}×")


def basic(bench: Bench, device: str, seeds: int) -> None:
    t = bench.best({"basic": optlab(sweep(seeds, 10, device), "basic"), "hand": hand_command(seeds, 10, device)})
    print(f"  basic: {4 * seeds} runs × 10 epochs, basic launcher {t['basic']:.2f} s = "
          f"{t['basic'] / t['hand']:.2f}× the hand-written script's {t['hand']:.2f} s")


def cnn(bench: Bench, device: str, seeds: int, epochs: int) -> None:
    args = sweep(seeds // 2, epochs, device, "model=cnn", "data=mnist5k")
    t = bench.best({"vectorized": optlab(args, "vectorized"), "basic": optlab(args, "basic")})
    print(f"  cnn: {2 * seeds} runs of model=cnn data=mnist5k × {epochs} epochs, vectorized {t['vectorized']:.2f} s "
          f"= {t['vectorized'] / t['basic']:.2f}× the basic launcher's {t['basic']:.2f} s")


def main() -> None:
    print(stamp())  # the machine, torch version, commit and date these figures come from
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4, help="seeds per learning rate (4: 16 runs)")
    parser.add_argument("--cnn-epochs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20, help=argparse.SUPPRESS)  # the hand-written child's
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--only", default="member,mlp,basic,cnn")
    parser.add_argument("--hand", action="store_true", help=argparse.SUPPRESS)  # the hand-written child
    parser.add_argument("--stacked", action="store_true", help=argparse.SUPPRESS)  # ... as one stacked model
    args = parser.parse_args()
    if args.hand:
        return hand_stacked(args) if args.stacked else hand(args)
    bench = Bench(args.repeat)
    print(f"best of {args.repeat}, {os.cpu_count()} cores, device={args.device}")
    for name in args.only.split(","):
        print(f"{name}:", flush=True)
        {"member": lambda: member(bench, args.device), "mlp": lambda: mlp(bench, args.device, args.seeds),
         "basic": lambda: basic(bench, args.device, args.seeds),
         "cnn": lambda: cnn(bench, args.device, args.seeds, args.cnn_epochs)}[name]()
    shutil.rmtree(bench.work, ignore_errors=True)


def hand(args) -> None:
    """The hand-written script: digits split 60/20/20 and standardized, the default MLP, SGD,
    batches of 64 in a seeded order, validation after every epoch; nothing logged."""
    import plain
    import torch

    device = torch.device(args.device if args.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu")
    x, y, x_val, y_val = plain.digits(device)
    for lr in LRS:
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            model = plain.mlp(x.shape[1], [256, 256], 10, device)
            optimizer = torch.optim.SGD(model.parameters(), lr=lr)
            order = torch.Generator().manual_seed(seed)
            for _ in range(args.epochs):
                plain.epoch(model, optimizer, x, y, 64, order)
                print("%.4f %.4f" % plain.validate(model, x_val, y_val), file=sys.stderr)


def hand_stacked(args) -> None:
    """The same runs written by hand as one stacked model: member k's weights are row k of
    [K, fan_in, fan_out] tensors (each drawn as its run draws them), a batched matmul per layer,
    each member its own batch order, SGD as one in-place update per tensor; validation after
    every epoch; nothing logged."""
    import plain
    import torch

    device = torch.device(args.device if args.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu")
    x, y, x_val, y_val = plain.digits(device)
    runs = [(lr, seed) for lr in LRS for seed in range(args.seeds)]
    models = []
    for _, seed in runs:
        torch.manual_seed(seed)
        models.append([layer for layer in plain.mlp(x.shape[1], [256, 256], 10, device) if hasattr(layer, "weight")])
    weights = [torch.stack([m[i].weight.T for m in models]).detach().requires_grad_() for i in range(3)]
    biases = [torch.stack([m[i].bias[None] for m in models]).detach().requires_grad_() for i in range(3)]
    lrs = torch.tensor([lr for lr, _ in runs], device=device)[:, None, None]
    orders = [torch.Generator().manual_seed(seed) for _, seed in runs]

    def forward(h):
        for i, (w, b) in enumerate(zip(weights, biases)):
            h = torch.baddbmm(b, h, w)  # [K, B, fan_out]: every member's layer in one kernel
            h = h.relu() if i < 2 else h
        return h

    for _ in range(args.epochs):
        batches = torch.stack([torch.randperm(len(y), generator=order) for order in orders]).to(device)
        for index in batches.split(64, dim=1):
            out = forward(x[index])
            loss = torch.nn.functional.cross_entropy(out.flatten(0, 1), y[index].flatten(), reduction="none")
            grads = torch.autograd.grad(loss.view(len(runs), -1).mean(1).sum(), weights + biases)
            with torch.no_grad():
                for p, g in zip(weights + biases, grads):
                    p.sub_(lrs * g)
        with torch.no_grad():
            out = forward(x_val.expand(len(runs), *x_val.shape))
            for k in range(len(runs)):
                loss = torch.nn.functional.cross_entropy(out[k], y_val).item()
                print("%.4f %.4f" % (loss, (out[k].argmax(1) == y_val).float().mean().item()), file=sys.stderr)


if __name__ == "__main__":
    main()
