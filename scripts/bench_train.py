"""optlab's training loop against plain PyTorch loops, side by side in one process.

Three loops train the same MLP on the same digits tensors with Adam, the same batch size,
epochs and thread count, and evaluate on the validation split after every epoch:
  optlab      optlab.train.train() with all its logging (TensorBoard, checkpoints, history)
  plain       a hand-written loop that indexes in-memory tensors with a random permutation
  dataloader  the same loop fed by torch.utils.data.DataLoader(TensorDataset, shuffle=True)
They run alternated, `--repeats` times, in a rotating order; the script prints the median
samples/s of each and the median of the per-round ratios (robust to a machine whose speed
drifts). Timing covers the epoch loop only (data loading and start-up excluded) in all three.

    python scripts/bench_train.py [--epochs 20] [--batch-size 64] [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from optlab import config
from optlab.data import load
from optlab.train import evaluate, train


def plain_model(data, hidden: list[int]) -> nn.Module:
    widths = [data.num_features, *hidden]
    layers = [nn.Flatten()]
    for a, b in zip(widths, widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(widths[-1], data.num_classes))


def plain(data, cfg, use_dataloader: bool) -> float:
    torch.manual_seed(cfg.seed)
    model = plain_model(data, list(cfg.model.hidden))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optimizer.lr)
    x, y = data.train.x, data.train.y
    loader = DataLoader(TensorDataset(x, y), batch_size=cfg.batch_size, shuffle=True)
    start = time.perf_counter()
    for _ in range(cfg.epochs):
        model.train()
        if use_dataloader:
            batches = loader
        else:
            batches = ((x[i], y[i]) for i in torch.randperm(len(y)).split(cfg.batch_size))
        for xb, yb in batches:
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        evaluate(model, data.val)
    return cfg.epochs * len(y) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config.register()
    overrides = [
        "optimizer=adam",
        f"batch_size={args.batch_size}",
        f"epochs={args.epochs}",
        f"device={args.device}",
    ]
    with initialize_config_module("optlab.conf", version_base="1.3"):
        cfg = compose("config", overrides)
    data = load(cfg.data, torch.device(args.device))

    with tempfile.TemporaryDirectory() as tmp:
        loops = {
            "optlab": lambda r: train(cfg, Path(tmp) / str(r))["train_samples_per_s"],
            "plain": lambda r: plain(data, cfg, use_dataloader=False),
            "dataloader": lambda r: plain(data, cfg, use_dataloader=True),
        }
        names = list(loops)
        rounds = []
        for r in range(args.repeats + 1):  # round 0 warms up and is dropped
            order = names[r % 3 :] + names[: r % 3]
            rounds.append({name: loops[name](r) for name in order})
        rounds = rounds[1:]

    print(
        f"digits MLP {list(cfg.model.hidden)}, Adam, batch {args.batch_size}, {args.epochs} epochs, "
        f"{args.threads} threads, {args.device}, median of {args.repeats} rounds"
    )
    for name in names:
        print(f"  {name:<11} {statistics.median(r[name] for r in rounds):>10,.0f} samples/s")
    for other in ("plain", "dataloader"):
        ratio = statistics.median(r["optlab"] / r[other] for r in rounds)
        print(f"  optlab / {other:<11} {ratio:.3f}")


if __name__ == "__main__":
    main()
