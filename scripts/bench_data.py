"""optlab's batches against a DataLoader and a hand-written loop, side by side in one process.

Each feeds the same training step (the digits MLP 64-256-256-10, Adam) at each batch size:
  optlab      optlab.training.minibatch.epoch(): a seeded permutation, one gather per batch on the device
  plain       a hand-written loop: x[i], y[i] for i in torch.randperm(n).split(batch_size)
  dataloader  torch.utils.data.DataLoader(TensorDataset(x, y), batch_size, shuffle=True)
The three run alternated, `--repeats` times in a rotating order; the script prints the median
samples/s of each and the median of the per-round ratios.

    python scripts/bench_data.py [--batch-sizes 16 64 256 full] [--epochs 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module
from provenance import stamp
from torch.utils.data import DataLoader, TensorDataset

from optlab.config.resolvers import register
from optlab.models import MLP
from optlab.training.data import load
from optlab.training.minibatch import epoch


def main() -> None:
    print(stamp())  # the machine, torch version, commit and date these figures come from
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", nargs="+", default=["16", "64", "256", "full"])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    register()
    with initialize_config_module("optlab.conf", version_base="1.3"):
        cfg = compose("config", [])
    data = load(cfg.data, device)
    split = data.train
    x, y, n = split.x, split.y, len(split)

    def run(batches, batch_size: int) -> float:
        torch.manual_seed(0)
        model = MLP(data.input_shape, data.num_outputs, hidden=[256, 256]).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        generator = torch.Generator().manual_seed(0)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(args.epochs):
            for xb, yb in batches(batch_size, generator):
                loss = F.cross_entropy(model(xb), yb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return args.epochs * n / (time.perf_counter() - start)

    def optlab_batches(batch_size, generator):
        return epoch(split, batch_size, True, generator, device)

    def plain_batches(batch_size, generator):
        return ((x[i], y[i]) for i in torch.randperm(n, generator=generator).to(device).split(batch_size))

    def loader_batches(batch_size, generator):
        return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True, generator=generator)

    sources = {"optlab": optlab_batches, "plain": plain_batches, "dataloader": loader_batches}
    print(f"digits MLP [256, 256], Adam, {args.epochs} epochs of {n} examples, {args.threads} threads, "
          f"{device}, median of {args.repeats} rounds (samples/s)")
    print(f"  {'batch':>6}  {'optlab':>10}  {'plain':>10}  {'dataloader':>10}  "
          f"{'optlab/plain':>12}  {'optlab/dataloader':>17}")
    for size in args.batch_sizes:
        batch_size = n if size == "full" else int(size)
        rounds = []
        for r in range(args.repeats + 1):  # round 0 warms up and is dropped
            names = list(sources)[r % 3:] + list(sources)[: r % 3]
            rounds.append({name: run(sources[name], batch_size) for name in names})
        rounds = rounds[1:]
        speed = {name: statistics.median(r[name] for r in rounds) for name in sources}
        plain = statistics.median(r["optlab"] / r["plain"] for r in rounds)
        loader = statistics.median(r["optlab"] / r["dataloader"] for r in rounds)
        print(f"  {size:>6}  {speed['optlab']:>10,.0f}  {speed['plain']:>10,.0f}  "
              f"{speed['dataloader']:>10,.0f}  {plain:>12.3f}  {loader:>17.3f}")


if __name__ == "__main__":
    main()
