"""The training run, top to bottom: config → data and model → optimizer and schedule → loop → logs."""

from __future__ import annotations

import logging
import random
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from optlab import data as datasets
from optlab.callbacks import Checkpoint
from optlab.config import ConfigError
from optlab.logs import RunLog
from optlab.optim import FULL_BATCH, needs_closure

log = logging.getLogger("optlab")


def train(cfg: DictConfig, run_dir: Path) -> dict:
    """Train as `cfg` says, write everything into `run_dir`, and return the final metrics."""
    started = time.perf_counter()
    device = resolve_device(cfg.device)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    # data and model
    data = datasets.load(cfg.data, device)
    model = instantiate(cfg.model, in_features=data.num_features, num_classes=data.num_classes)
    model = model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]

    # optimizer and schedule (torch.optim classes, straight from their _target_)
    optimizer = instantiate(cfg.optimizer, params=params, _convert_="all")
    scheduler = instantiate(cfg.scheduler, optimizer=optimizer, _convert_="all")

    n = len(data.train)
    batch_size = n if cfg.batch_size == "full" else min(cfg.batch_size, n)
    method = cfg.optimizer._target_
    if batch_size < n and method in FULL_BATCH:
        log.warning(
            "warning: %s is a full-batch method and batch_size=%s gives mini-batches: %s. "
            "Use batch_size=full.",
            method.rsplit(".", 1)[-1], cfg.batch_size, FULL_BATCH[method],
        )
    closure_based = needs_closure(optimizer)

    def closure(x: torch.Tensor, y: torch.Tensor, backward: bool = True) -> torch.Tensor:
        """The batch loss, re-evaluated by closure-based optimizers (LBFGS, Newton)."""
        loss = F.cross_entropy(model(x), y)
        if backward:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        return loss

    order = torch.Generator().manual_seed(cfg.seed)  # batch order: its own stream
    run = RunLog(run_dir, cfg)
    checkpoint = Checkpoint(run_dir / "checkpoints", OmegaConf.to_container(cfg))
    step, epoch = 0, 0

    def state() -> dict:
        return {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "step": step,
            "rng": {
                "python": random.getstate(),
                "numpy": np.random.get_state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "order": order.get_state(),
            },
        }

    probe = StepProbe(params, cfg.diagnostics)
    loop_started = time.perf_counter()
    for epoch in run.progress(range(1, cfg.epochs + 1)):
        model.train()
        first_step = step + 1
        indices, losses, outputs, lrs, times = [], [], [], [], []
        for index in datasets.batches(n, batch_size, cfg.shuffle, order, device):
            x, y = data.train.x[index], data.train.y[index]
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            probe.before_step()
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step(partial(closure, x, y) if closure_based else None)
            probe.after_step()
            step += 1
            # keep tensors, not numbers: no host sync inside the loop
            indices.append(index)
            losses.append(loss.detach())
            outputs.append(logits.detach())
            times.append(time.time())
        scheduler.step()

        # once per epoch: reduce on the device, then one transfer to the host
        sizes = torch.tensor([len(i) for i in indices], device=device, dtype=torch.float32)
        losses = torch.stack(losses)
        correct = (torch.cat(outputs).argmax(dim=1) == data.train.y[torch.cat(indices)]).sum()
        val_loss, val_acc = evaluate(model, data.val)
        row = {
            "epoch": epoch,
            "train_loss": (losses @ sizes).item() / n,
            "train_acc": correct.item() / n,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": lrs[-1],
            "elapsed_s": time.perf_counter() - loop_started,
        }
        run.steps(first_step, {"step/loss": losses.tolist(), "step/lr": lrs, **probe.epoch()}, times)
        run.epoch(row)
        checkpoint.on_epoch_end(epoch, row, state)
    train_time = time.perf_counter() - loop_started

    # test the best-validation state
    checkpoint.on_train_end(state)
    model.load_state_dict(checkpoint.best_state["model"])
    test_loss, test_acc = evaluate(model, data.test)
    metrics = {
        "status": "completed",
        "test_acc": test_acc,
        "test_loss": test_loss,
        "best_val_acc": max(r["val_acc"] for r in run.history),
        "best_val_loss": min(r["val_loss"] for r in run.history),
        "best_epoch": checkpoint.best_epoch,
        "epochs_run": epoch,
        "steps": step,
        "final_train_loss": run.history[-1]["train_loss"],
        "final_train_acc": run.history[-1]["train_acc"],
        "num_params": sum(p.numel() for p in params),
        "device": str(device),
        "wall_time_s": time.perf_counter() - started,
        "train_time_s": train_time,
        "train_samples_per_s": epoch * n / train_time,
    }
    run.finish(
        metrics,
        f"best val acc {metrics['best_val_acc']:.4f} (epoch {metrics['best_epoch']}) · "
        f"test acc {test_acc:.4f} · {epoch} epochs in {metrics['wall_time_s']:.1f} s "
        f"({metrics['train_samples_per_s']:,.0f} samples/s)",
    )
    return metrics


class StepProbe:
    """Per-step ‖∇L‖ (`step/grad_norm`) and ‖Δθ‖/‖θ‖ (`step/update_ratio`), when enabled.

    θ is the parameter vector before the step. Norms are taken per tensor with one foreach
    kernel, kept on the device, and combined and read once per epoch. They cost a few kernels
    a step: `diagnostics=false` skips them.
    """

    def __init__(self, params: list[torch.nn.Parameter], enabled: bool):
        self.params, self.enabled = params, enabled
        self.before = [p.detach().clone() for p in params] if enabled else []
        self.norm = _total_norm(self.before) if enabled else None
        self.grad_norms: list[list[torch.Tensor]] = []
        self.moves: list[list[torch.Tensor]] = []

    def before_step(self) -> None:
        if self.enabled:
            self.grad_norms.append(torch._foreach_norm([p.grad for p in self.params]))

    def after_step(self) -> None:
        if self.enabled:
            torch._foreach_sub_(self.before, self.params)  # before = −Δθ
            self.moves.append(torch._foreach_norm(self.before + self.params))  # ‖Δθ‖, ‖θ_new‖
            torch._foreach_copy_(self.before, self.params)

    def epoch(self) -> dict[str, list[float]]:
        """This epoch's values per step, by TensorBoard tag; then start afresh."""
        if not self.enabled:
            return {}
        steps = len(self.grad_norms)
        grads = torch.stack([t for norms in self.grad_norms for t in norms]).view(steps, -1)
        moves = torch.stack([t for norms in self.moves for t in norms]).view(steps, 2, -1)
        delta, after = torch.linalg.vector_norm(moves, dim=2).unbind(dim=1)
        before = torch.cat([self.norm.view(1), after[:-1]])  # ‖θ‖ before each step
        self.norm, self.grad_norms, self.moves = after[-1], [], []
        return {
            "step/grad_norm": torch.linalg.vector_norm(grads, dim=1).tolist(),
            "step/update_ratio": (delta / before).tolist(),
        }


def _total_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)))


@torch.inference_mode()
def evaluate(model: torch.nn.Module, split: datasets.Split, chunk: int = 8192) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over a split, in eval mode (dropout off, BN running stats)."""
    model.eval()
    loss_sum = correct = 0.0
    for x, y in zip(split.x.split(chunk), split.y.split(chunk)):
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(dim=1) == y).sum().item()
    return loss_sum / len(split), correct / len(split)


def resolve_device(name: str) -> torch.device:
    """`auto` → CUDA when available, else CPU; refuse a device this machine does not have."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name.partition(":")[2] or 0)
        if index >= count:
            have = f"cuda:0 to cuda:{count - 1}" if count else "no CUDA device on this machine"
            raise ConfigError("device", name, f"auto, cpu ({have})")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device", name, "auto, cpu (MPS is not available on this machine)")
    return torch.device(name)
