"""The `Single` engine: one model and its torch optimizer, for every model, optimizer (closures
included) and precision; with `evaluate` and the device a run trains on.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from functools import partial

import torch
from omegaconf import DictConfig

from optlab import models, schedules
from optlab.errors import ConfigError
from optlab.init import initialize
from optlab.optim import FULL_BATCH, build_optimizer, decay_groups, needs_closure
from optlab.training import data as dataset
from optlab.training import minibatch, rng, threads
from optlab.training.callbacks import StepProbe, snapshot
from optlab.training.record import Epoch

log = logging.getLogger("optlab")


class Single:
    """One model and its torch optimizer: the engine of an ordinary run, for every model,
    optimizer (closures included) and precision. See optlab/training/loop.py for what an engine does."""

    def __init__(self, cfg: DictConfig, data: dataset.Data, device: torch.device, order: torch.Generator):
        self.cfg, self.data, self.device, self.order = cfg, data, device, order
        n = len(data.train)
        self.batch_size, self.min_batch = minibatch.batching(cfg, n)
        self.model = models.build(cfg, data).to(device)
        self.masks = rng.masks(cfg.seed, device)
        models.draw_masks_from(self.model, self.masks)
        initialize(self.model, cfg.init, data.train, self.batch_size)
        self.initial = [snapshot(self.model.state_dict())]  # where training starts: the landscape's line begins here
        self.forward = torch.compile(self.model) if cfg.compile else self.model  # same parameters, fused kernels
        half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
        self.autocast = partial(torch.autocast, device.type, dtype=half) if half else nullcontext
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")  # else a no-op

        # optimizer, weight decay and schedule (torch.optim classes, straight from their _target_)
        self.optimizer, self.decoupled, self.l2 = build_optimizer(cfg, self.model)
        self.decayed = decay_groups(self.model, cfg.weight_decay_exclude)[0]
        self.scheduler, self.per_step = schedules.build(
            cfg.scheduler, self.optimizer, minibatch.count_batches(n, self.batch_size, self.min_batch)
        )
        method = cfg.optimizer._target_
        if self.batch_size < n and method in FULL_BATCH:
            log.warning(
                "warning: %s is a full-batch method and batch_size=%s gives mini-batches: %s. "
                "Use batch_size=full.",
                method.rsplit(".", 1)[-1], cfg.batch_size, FULL_BATCH[method],
            )
        threads.for_run(cfg, self.model, data.train, self.batch_size)
        self.closure_based = needs_closure(self.optimizer)
        if self.closure_based and cfg.precision == "fp16":
            raise ConfigError("precision", "fp16", "fp32 or bf16 with a closure-based optimizer "
                              "(lbfgs, newton): gradient scaling cannot re-evaluate their closures")
        self.probe = StepProbe([p for p in self.model.parameters() if p.requires_grad],
                               cfg.diagnostics_every if cfg.diagnostics else 0)
        self.step = 0

    def objective(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(data loss, what is minimized): the task's loss, plus ½·l2·‖θ‖² when l2 > 0."""
        loss = self.data.loss(logits, y)
        return loss, (loss + 0.5 * self.l2 * _total_norm(self.decayed) ** 2 if self.l2 else loss)

    def closure(self, x: torch.Tensor, y: torch.Tensor, backward: bool = True) -> torch.Tensor:
        """The batch objective, re-evaluated by closure-based optimizers (LBFGS, Newton)."""
        total = self.objective(self.forward(x), y)[1]
        if backward:
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
        return total

    def batches(self):
        """One epoch of training batches, in this run's order."""
        return minibatch.epoch(self.data.train, self.batch_size, self.cfg.shuffle, self.order, self.device,
                             self.min_batch, self.cfg.data.workers)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One optimizer step on a batch: (logits, data loss, objective minimized), on the device."""
        optimizer, scaler = self.optimizer, self.scaler
        with self.autocast():
            logits = self.forward(x)
            loss, total = self.objective(logits, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        scaler.unscale_(optimizer)  # true gradients for the probe (fp16 only)
        self.probe.before_step(self.step + 1)
        if self.decoupled:  # θ ← θ − Δθ − w·θ, the decay taken before Δθ as AdamW does
            with torch.no_grad():
                torch._foreach_mul_(self.decayed, 1 - self.decoupled)
        scaler.step(optimizer, *([partial(self.closure, x, y)] if self.closure_based else []))
        scaler.update()
        self.probe.after_step()
        self.step += 1
        return logits, loss, total

    def train_epoch(self, stop) -> list[Epoch] | None:
        self.model.train()
        first_step = self.step + 1
        targets, losses, totals, outputs, lrs, times = [], [], [], [], [], []
        for x, y in self.batches():
            lrs.append(self.optimizer.param_groups[0]["lr"])
            logits, loss, total = self.train_step(x, y)
            if self.per_step:
                self.scheduler.step()
            # keep tensors, not numbers: no host sync inside the loop
            targets.append(y)
            losses.append(loss.detach())
            totals.append(total.detach())
            outputs.append(logits.detach())
            times.append(time.time())
            if stop.signal:
                return None

        # once per epoch: reduce on the device, then one transfer to the host
        sizes = torch.tensor([len(t) for t in targets], device=self.device, dtype=torch.float32)
        count = sum(len(t) for t in targets)
        losses = torch.stack(losses)
        columns = {"step/loss": losses.tolist(), "step/lr": lrs, **self.probe.epoch()}
        if self.l2:
            columns["step/l2_penalty"] = (torch.stack(totals) - losses).tolist()
        train_acc = self.data.score(torch.cat(outputs), torch.cat(targets))  # as they trained
        return [Epoch(first_step, columns, times, (losses @ sizes).item() / count, train_acc.item(), count)]

    def evaluate(self) -> list[tuple[float, float]]:
        return [evaluate(self.forward, self.data, self.data.val, self.autocast)]

    def schedule(self, val_losses: list[float]) -> None:
        if not self.per_step:
            schedules.step(self.scheduler, val_losses[0])

    def member(self, k: int) -> torch.nn.Module:
        return self.model

    def freeze(self, k: int) -> None:
        """A single run that ends leaves the loop: nothing to hold still."""

    def numbers(self, k: int) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng.state(self.order, self.masks),
        }

    def load(self, k: int, saved: dict) -> None:
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        rng.load(saved["rng"], self.order, self.masks)
        self.step = saved["step"]


def _total_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)))


@torch.inference_mode()
def evaluate(model, data: dataset.Data, split: dataset.Split, autocast=nullcontext,
             chunk: int = 8192) -> tuple[float, float]:
    """Mean loss and score (accuracy, or R²) over a split, in eval mode (dropout off, batch
    norm on its running statistics), in chunks so that large splits fit."""
    model.eval()
    outputs, loss_sum = [], 0.0
    device = next(p.device for p in model.parameters())
    for x, y in split.chunks(chunk):
        x, y = x.to(device), y.to(device)
        with autocast():
            out = model(x)
        loss_sum += data.loss(out, y).item() * len(y)
        outputs.append(out.float())
    targets = split.y.to(device)
    return loss_sum / len(split), data.score(torch.cat(outputs), targets).item()


def resolve_device(name: str) -> torch.device:
    """`auto` → CUDA when available, else CPU; refuse a device this machine does not have.
    CUDA comes with its index (`cuda:0`): tensors report theirs, and the data path compares."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name.partition(":")[2] or 0)
        if index >= count:
            have = f"cuda:0 to cuda:{count - 1}" if count else "no CUDA device on this machine"
            raise ConfigError("device", name, f"auto, cpu ({have})")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device", name, "auto, cpu (MPS is not available on this machine)")
    return torch.device(name)
