"""What each curvature measurement costs, in units of one training epoch, in one process.

For the digits MLP at two sizes, one epoch of training (Adam, batch 64) is timed, then each
measurement of optlab.curvature with the defaults of conf/config.yaml's `curvature` node
(512 examples, 50 power iterations, 20 Hutchinson probes, 10 sharpness steps, 41 points per
slice; the exact spectrum only for the small model).

    python scripts/bench_curvature.py [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module
from provenance import stamp

from optlab import curvature
from optlab.config.resolvers import register
from optlab.models import MLP
from optlab.training.data import load
from optlab.training.minibatch import epoch


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    print(stamp())  # the machine, torch version, commit and date these figures come from
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    register()
    with initialize_config_module("optlab.conf", version_base="1.3"):
        cfg = compose("config", [])
    device = torch.device("cpu")
    data = load(cfg.data, device)
    c = cfg.curvature
    print(f"digits, {len(data.train)} training examples, {args.threads} threads, median of {args.repeats}")
    print(f"  {'model':<22} {'params':>7} {'epoch':>8}  {'lambda_max':>10} {'trace':>8} {'sharpness':>9} "
          f"{'spectrum':>9} {'slices':>8}   (seconds; × one epoch)")
    for hidden in ([32], [256, 256]):
        torch.manual_seed(0)
        model = MLP(data.input_shape, data.num_outputs, hidden=hidden)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        generator = torch.Generator().manual_seed(0)

        def one_epoch():
            for x, y in epoch(data.train, 64, True, generator, device):
                loss = F.cross_entropy(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

        base = timed(one_epoch, args.repeats)
        loss = curvature.subset_loss(model, data, c.samples)
        size = sum(p.numel() for p in model.parameters())
        start = [p.detach().clone() for p in model.parameters()]
        costs = {
            "lambda_max": lambda: curvature.lambda_max(model, loss, iters=c.iters, tol=0),
            "trace": lambda: curvature.trace(model, loss, probes=c.probes),
            "sharpness": lambda: curvature.sharpness(model, loss, epsilon=c.epsilon),
            "spectrum": (lambda: curvature.spectrum(model, loss)) if size <= c.exact_max_params else None,
            "slices": lambda: curvature.slices(model, loss, start),
        }
        cells = []
        for name, fn in costs.items():
            if fn is None:
                cells.append(f"{'—':>9}")
                continue
            seconds = timed(fn, args.repeats)
            cells.append(f"{seconds:.3f} ({seconds / base:.0f}×)")
        print(f"  {'MLP ' + str(hidden):<22} {size:>7,} {base:>8.4f}  " + " ".join(cells))


if __name__ == "__main__":
    main()
