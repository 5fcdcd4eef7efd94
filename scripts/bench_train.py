"""optlab's training loop against hand-written PyTorch loops, side by side in one process.

All loops train the same MLP on the same digits tensors with Adam, the same batch size, epochs
and thread count, and evaluate on the validation split after every epoch:
  optlab       optlab.jobs.train.train(): TensorBoard events, history, checkpoints, metrics
  optlab-lean  the same with diagnostics=false (no per-step gradient norm or update ratio)
  plain        a hand-written loop that indexes in-memory tensors with a random permutation and
               records what optlab records by default (per-step loss; gradient norm and update
               ratio every `diagnostics_every` steps; per-epoch train loss and accuracy), read
               once per epoch
  bare         the same loop recording nothing: forward, backward, step
  dataloader   the bare loop fed by torch.utils.data.DataLoader(TensorDataset, shuffle=True)
  lightning    PyTorch Lightning's Trainer with its extras off (no logger, checkpoints, progress
               bar or model summary), fed by the same DataLoader, validating every epoch; run
               when pytorch-lightning is installed (`pip install pytorch-lightning`)
They run alternated, `--repeats` times, in a rotating order; the script prints the median
samples/s of each and the median of the per-round ratios (robust to a machine whose speed
drifts). Timing covers the epoch loop only (data loading and start-up excluded) in all.

    python scripts/bench_train.py [--epochs 20] [--batch-size 64] [--repeats 9] [--threads 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module
from provenance import stamp
from torch import nn
from torch.nn.utils import get_total_norm
from torch.utils.data import DataLoader, TensorDataset

from optlab.config.resolvers import register
from optlab.jobs.train import train
from optlab.training.data import load
from optlab.training.single import evaluate


def plain_model(data, hidden: list[int]) -> nn.Module:
    widths = [math.prod(data.input_shape), *hidden]
    layers = [nn.Flatten()]
    for a, b in zip(widths, widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(widths[-1], data.num_outputs))


def hand_written(data, cfg, batches: str, record: bool) -> float:
    """Samples/s of a loop written by hand; `batches` is 'index' or 'dataloader'."""
    torch.manual_seed(cfg.seed)
    model = plain_model(data, list(cfg.model.hidden)).to(data.train.x.device)
    params = list(model.parameters())
    optimizer = torch.optim.Adam(params, lr=cfg.optimizer.lr)
    x, y = data.train.x, data.train.y
    loader = DataLoader(TensorDataset(x, y), batch_size=cfg.batch_size, shuffle=True)
    history = []
    start = time.perf_counter()
    for _ in range(cfg.epochs):
        model.train()
        if batches == "dataloader":
            epoch = loader
        else:
            epoch = ((x[i], y[i]) for i in torch.randperm(len(y)).split(cfg.batch_size))
        losses, norms, ratios, loss_sum, correct = [], [], [], 0, 0
        for step, (xb, yb) in enumerate(epoch):
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            optimizer.zero_grad()
            loss.backward()
            probe = record and step % cfg.diagnostics_every == 0
            if probe:
                norms.append(get_total_norm([p.grad for p in params]))
                before = [p.detach().clone() for p in params]
            optimizer.step()
            if probe:
                update = get_total_norm([p.detach() - b for p, b in zip(params, before)])
                ratios.append(update / get_total_norm(before))
            if record:
                losses.append(loss.detach())
                loss_sum += loss.detach() * len(yb)
                correct += (logits.argmax(dim=1) == yb).sum()
        if record:
            history.append([torch.stack(v).tolist() for v in (losses, norms, ratios)])
            history.append((loss_sum.item() / len(y), correct.item() / len(y)))
        history.append(evaluate(model, data, data.val))
    return cfg.epochs * len(y) / (time.perf_counter() - start)


def lightning(data, cfg, device: str) -> float:
    """Samples/s of PyTorch Lightning's Trainer with its extras off, on the same model, Adam and
    DataLoader batches, validating every epoch."""
    import logging
    import warnings

    import pytorch_lightning as pl

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = plain_model(data, list(cfg.model.hidden))

        def training_step(self, batch, index):
            x, y = batch
            return F.cross_entropy(self.model(x), y)

        def validation_step(self, batch, index):
            x, y = batch
            out = self.model(x)
            return F.cross_entropy(out, y), (out.argmax(dim=1) == y).float().mean()

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=cfg.optimizer.lr)

    torch.manual_seed(cfg.seed)
    train = DataLoader(TensorDataset(data.train.x, data.train.y), batch_size=cfg.batch_size, shuffle=True)
    val = DataLoader(TensorDataset(data.val.x, data.val.y), batch_size=8192)
    trainer = pl.Trainer(max_epochs=cfg.epochs, accelerator=device, devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0)
    start = time.perf_counter()
    trainer.fit(Module(), train, val)
    return cfg.epochs * len(data.train) / (time.perf_counter() - start)


def main() -> None:
    print(stamp())  # the machine, torch version, commit and date these figures come from
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    register()
    overrides = [
        "optimizer=adam",
        f"batch_size={args.batch_size}",
        f"epochs={args.epochs}",
        f"device={args.device}",
        f"threads={args.threads}",  # optlab's runs on the threads the plain loops use
    ]
    with initialize_config_module("optlab.conf", version_base="1.3"):
        cfg = compose("config", overrides)
        lean = compose("config", [*overrides, "diagnostics=false"])
    data = load(cfg.data, torch.device(args.device))

    with tempfile.TemporaryDirectory() as tmp:
        loops = {
            "optlab": lambda r: train(cfg, Path(tmp) / f"{r}")["train_samples_per_s"],
            "optlab-lean": lambda r: train(lean, Path(tmp) / f"{r}-lean")["train_samples_per_s"],
            "plain": lambda r: hand_written(data, cfg, "index", record=True),
            "bare": lambda r: hand_written(data, cfg, "index", record=False),
            "dataloader": lambda r: hand_written(data, cfg, "dataloader", record=False),
        }
        if importlib.util.find_spec("pytorch_lightning"):
            loops["lightning"] = lambda r: lightning(data, cfg, args.device)
        names = list(loops)
        rounds = []
        for r in range(args.repeats + 1):  # round 0 warms up and is dropped
            order = names[r % len(names) :] + names[: r % len(names)]
            rounds.append({name: loops[name](r) for name in order})
        rounds = rounds[1:]

    print(
        f"digits MLP {list(cfg.model.hidden)}, Adam, batch {args.batch_size}, {args.epochs} epochs, "
        f"{args.threads} threads, {args.device}, median of {args.repeats} rounds"
    )
    for name in names:
        print(f"  {name:<12} {statistics.median(r[name] for r in rounds):>10,.0f} samples/s")
    for a, b in [("optlab", "plain"), ("optlab-lean", "bare"), ("optlab", "dataloader"),
                 ("optlab-lean", "dataloader"), ("optlab", "optlab-lean"), ("optlab", "lightning")]:
        if b not in names:
            continue
        ratio = statistics.median(r[a] / r[b] for r in rounds)
        print(f"  {a + ' / ' + b:<26} {ratio:.3f}")


if __name__ == "__main__":
    main()
