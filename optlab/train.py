"""A run, top to bottom: config → data and model → optimizer and schedule → loop → logs.

`train` is one run: the `Single` engine (one model and its torch optimizer) driven by the loop
in optlab/loop.py, which a vectorized group (optlab/stacked.py) shares; `finish` tests a run's
weights and writes its record, for both.
"""

from __future__ import annotations

import csv
import logging
import math
import signal
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import torch
from omegaconf import DictConfig

from optlab import data as dataset
from optlab import allowlist, curvature, jobs, lr_find, models, noise, rng, schedules, sweep
from optlab.callbacks import StepProbe, snapshot, tested_checkpoint
from optlab.config import ConfigError, UsageError, reason
from optlab.files import atomic_write, load_checkpoint, load_yaml, refuse_links, write_json
from optlab.init import initialize
from optlab.loop import fit
from optlab.optim import FULL_BATCH, build_optimizer, decay_groups, needs_closure
from optlab.run import Epoch, Run, lesson

log = logging.getLogger("optlab")


def train(cfg: DictConfig, run_dir: Path, resume: bool = False, pruner=None) -> dict:
    """Train as `cfg` says, write everything into `run_dir`, and return the final metrics.

    With `resume`, continue the run in `run_dir` from its checkpoints/last.pt: the state at the
    end of its last finished epoch, every RNG stream included, so that it ends exactly as if it
    had never stopped. With `optimizer.lr=find`, the learning-rate range test picks the rate
    first (optlab/lr_find.py). `pruner` may end the run after an epoch (optlab/tune.py).
    """
    device = resolve_device(cfg.device)
    order = rng.seed(cfg.seed)
    data = dataset.load(cfg.data, device)
    trained = lr_find.resolve(cfg, run_dir, data, device, resume) if cfg.optimizer.get("lr") == "find" else cfg
    engine = Single(trained, data, device, order)
    run = Run(trained, run_dir, partial(engine.numbers, 0), asked=cfg, pruner=pruner)
    start(engine, [run], resume)
    stopped_by = fit(engine, [run], data, cfg.epochs)
    return finish(run, engine.model, data, engine.initial[0], stopped_by, engine.autocast, engine.forward)


class Single:
    """One model and its torch optimizer: the engine of an ordinary run, for every model,
    optimizer (closures included) and precision. See optlab/loop.py for what an engine does."""

    def __init__(self, cfg: DictConfig, data: dataset.Data, device: torch.device, order: torch.Generator):
        self.cfg, self.data, self.device, self.order = cfg, data, device, order
        n = len(data.train)
        self.batch_size, self.min_batch = dataset.batching(cfg, n)
        self.model = models.build(cfg, data).to(device)
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
            cfg.scheduler, self.optimizer, dataset.count_batches(n, self.batch_size, self.min_batch)
        )
        method = cfg.optimizer._target_
        if self.batch_size < n and method in FULL_BATCH:
            log.warning(
                "warning: %s is a full-batch method and batch_size=%s gives mini-batches: %s. "
                "Use batch_size=full.",
                method.rsplit(".", 1)[-1], cfg.batch_size, FULL_BATCH[method],
            )
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
        return dataset.epoch(self.data.train, self.batch_size, self.cfg.shuffle, self.order, self.device,
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
            "rng": rng.state(self.order),
        }

    def load(self, k: int, saved: dict) -> None:
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        rng.load(saved["rng"], self.order)
        self.step = saved["step"]


def start(engine, runs: list[Run], resume: bool) -> None:
    """Resume each run from its last.pt, or record where it starts in init.pt."""
    for k, run in enumerate(runs):
        folder = run.dir / "checkpoints"
        if not resume:
            atomic_write(folder / "init.pt", lambda f, s=engine.initial[k]: torch.save(s, f))
            continue
        try:
            saved = load_checkpoint(folder / "last.pt", engine.device)
            engine.load(k, saved)
            run.load_state_dict(saved)
            best = (run.checkpoint.best_state or saved)["model"]  # best.pt must fit the model too
            mismatched = [key for key, v in saved["model"].items() if key not in best or best[key].shape != v.shape]
            if mismatched:
                raise UsageError(f"{folder / 'best.pt'} holds no {mismatched[0]} of this model's shape")
        except UsageError as error:  # a file that does not load: the message names it
            raise UsageError(f"resume: {error}") from None
        except Exception as error:  # foreign, or for another model: the user's to fix
            # two lines of torch's text say which tensor does not fit
            raise UsageError(f"resume: cannot continue from {folder / 'last.pt'}: {reason(error, lines=2)}") from None
        engine.initial[k] = load_checkpoint(folder / "init.pt", engine.device)
        run.logger.info("resumed %s after epoch %d (step %d)", run.dir, saved["epoch"], saved["step"])


def finish(run: Run, model: torch.nn.Module, data: dataset.Data, initial: dict, stopped_by: int | None,
           autocast=nullcontext, forward=None) -> dict:
    """Test the run's weights, measure them as asked, and write its record: checkpoints,
    metrics.json, history.csv, HParams. Returns the metrics."""
    cfg, history, forward = run.cfg, run.history, forward or model
    nan = float("nan")
    # the final weights (the last finished epoch's: a diverged or interrupted epoch is dropped)
    # on the training set in eval mode, dropout off: their accuracy minus the final validation
    # accuracy is the generalization gap
    model.load_state_dict(run.resume_point["model"])
    final_train_acc = evaluate(forward, data, data.train, autocast)[1] if history else nan

    # test the best state (early stopping's verdict when it watches), or the final one
    run.checkpoint.save(run.resume_point)
    tested = run.resume_point if tested_checkpoint(cfg) == "last.pt" else run.checkpoint.best(run.resume_point)
    model.load_state_dict(tested["model"])
    test_loss, test_acc = evaluate(forward, data, data.test, autocast) if history else (nan, nan)
    last = history[-1] if history else {}
    measured = {}
    if cfg.curvature.final and history:  # on the weights that were tested
        measured = landscape(model, data, cfg, initial, last["lr"], run.dir, run.log.writer)
    if cfg.noise.final and history:
        measured.update({f"noise_{k}": v for k, v in noise.measure(model, data, cfg.noise.samples).items()})
    train_time = run.train_time
    metrics = {
        "status": run.status,
        "test_acc": test_acc,
        "test_loss": test_loss,
        "best_val_acc": max((r["val_acc"] for r in history), default=nan),
        "best_val_loss": min((r["val_loss"] for r in history), default=nan),
        "best_epoch": run.checkpoint.best_epoch,
        "stopped_epoch": run.stopper.stopped_epoch or None if run.stopper else None,
        "diverged_step": run.diverged_step,
        "interrupted_by": signal.Signals(stopped_by).name if stopped_by and run.status == "interrupted" else None,
        "epochs_run": run.epoch,  # an interrupted epoch is dropped
        "steps": run.step,
        "final_train_loss": last.get("train_loss", nan),
        "final_train_acc": last.get("train_acc", nan),
        "final_val_loss": last.get("val_loss", nan),
        "final_val_acc": last.get("val_acc", nan),
        "generalization_gap": final_train_acc - last.get("val_acc", nan),
        "num_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "device": str(next(model.parameters()).device),
        "wall_time_s": time.perf_counter() - run.started,
        "train_time_s": train_time,
        "epoch_time_s": train_time / max(run.epoch, 1),
        "train_samples_per_s": run.seen / train_time if train_time else nan,
        "config_hash": jobs.config_hash(run.asked),
        **run.to_target(),
        **{k: v for k, v in measured.items() if isinstance(v, float)},
    }
    metrics["hint"] = lesson(cfg, metrics, data.num_outputs if data.task == "classification" else None, run.first_loss)
    monitor = run.checkpoint.monitor
    best = tested_checkpoint(cfg) == "best.pt" and run.checkpoint.best_state is not None
    chosen_by = f"{'lowest' if 'loss' in monitor else 'highest'} {monitor}" if best else None
    run.log.finish(metrics, closing_line(metrics, history, tested["epoch"], chosen_by, data.task), sweep.hparams(cfg))
    return metrics


def closing_line(metrics: dict, history: list[dict], epoch: int, chosen_by: str | None, task: str) -> str:
    """The line a run ends with: how it ended; the tested `epoch` (the best by `chosen_by`, or the
    last when None) with its own validation score and the test score of its weights; the time
    it took."""
    score = "R²" if task == "regression" else "acc"  # what `acc` means for this task
    row = next((r for r in history if r["epoch"] == epoch), None)
    tested = "no epoch finished" if row is None else (
        f"{f'best epoch {epoch} ({chosen_by})' if chosen_by else f'last epoch {epoch}'}: "
        f"val {score} {row['val_acc']:.4f}, test {score} {metrics['test_acc']:.4f}")
    ran = metrics["epochs_run"]
    epochs = f"{ran} epochs" if len(history) >= ran else f"{len(history)} epochs and part of epoch {ran}"
    return (f"{metrics['status']} · {tested} · {epochs} in {metrics['wall_time_s']:.1f} s "
            f"({metrics['train_samples_per_s']:,.0f} samples/s)")


def landscape(model, data, cfg: DictConfig, initial: dict, lr: float, run_dir: Path, writer=None) -> dict:
    """Every curvature measurement of `model` as it is, written to curvature.json and
    landscape.png in `run_dir` (and to TensorBoard when a writer is given)."""
    loss = curvature.subset_loss(model, data, cfg.curvature.samples)
    start = [initial[name].to(p) for name, p in model.named_parameters() if p.requires_grad]
    result = {**curvature.measure(model, loss, cfg.curvature, lr), **curvature.slices(model, loss, start)}
    write_json(run_dir / "curvature.json", result)
    title = f"λ_max {result['lambda_max']:.4g} (2/lr = {2 / lr:.4g}), sharpness {result['sharpness']:.3g}%"
    path = curvature.plot(result, run_dir / "landscape.png", title)
    if writer is not None:
        from PIL import Image
        import numpy as np

        writer.add_image("landscape", np.asarray(Image.open(path).convert("RGB")), dataformats="HWC")
    log.info("curvature: λ_max %.4g (2/lr %.4g), trace %.4g, sharpness %.3g%%; %s",
             result["lambda_max"], 2 / lr, result["trace"], result["sharpness"], path.name)
    return result


def landscape_of(run_dir: Path) -> dict:
    """`optlab landscape <run folder>`: every curvature measurement of a finished run's best
    weights, from its own config, data and checkpoints, into curvature.json and landscape.png."""
    config = run_dir / ".hydra" / "config.yaml"
    if not config.exists():
        raise UsageError(f"{run_dir} is not a run folder (missing {config})")
    cfg = load_yaml(config)
    if not isinstance(cfg, DictConfig) or not {"model", "data", "device"} <= set(cfg):
        raise UsageError(f"cannot read {config}: it is not a run's config")
    allowlist.check_file(cfg, config)  # the folder may come from anyone: its config is data, never code
    refuse_links(run_dir)  # curvature.json, landscape.png and curves are written into it
    files = [run_dir / "checkpoints" / name for name in (tested_checkpoint(cfg), "init.pt")]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise UsageError(f"{run_dir} is not a finished run (missing {', '.join(missing)})")
    if cfg.get("surface") is not None:
        raise UsageError(f"{run_dir} is a surface run; its landscape is trajectory.png")
    device = resolve_device(cfg.device)
    data = dataset.load(cfg.data, device)
    model = models.build(cfg, data).to(device)
    initial = load_checkpoint(files[1], device)
    try:
        model.load_state_dict(load_checkpoint(files[0], device)["model"])
    except (KeyError, RuntimeError) as error:  # loads, but holds no state of this model
        raise UsageError(f"cannot load {files[0]} into the run's model: {reason(error)}") from None
    history = run_dir / "history.csv"
    source = history if history.exists() else config  # the rate the run ended at: λ_max is read against 2/lr
    try:
        rows = list(csv.DictReader(history.open())) if source == history else []
        lr = float(rows[-1]["lr"]) if rows else float(cfg.optimizer.lr)
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"its last learning rate, {lr}, is not a number > 0")
    except (OSError, ValueError, TypeError, KeyError, csv.Error) as error:
        raise UsageError(f"cannot read {source}: {reason(error)}") from None
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(run_dir)) as writer:  # the image joins the run's curves
        return landscape(model, data, cfg, initial, lr, run_dir, writer)


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
