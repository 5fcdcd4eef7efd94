"""The training run, top to bottom: config → data and model → optimizer and schedule → loop → logs."""

from __future__ import annotations

import csv
import logging
import random
import signal
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.optim.lr_scheduler import ReduceLROnPlateau

from optlab import data as dataset
from optlab import curvature, jobs, schedules, sweep
from optlab.callbacks import Checkpoint, EarlyStopping, StopOnSignal, snapshot, tested_checkpoint
from optlab.config import ConfigError, UsageError, construct, reason
from optlab.files import atomic_write, load_checkpoint, load_yaml, write_json
from optlab.init import distinct_units, initialize
from optlab.logs import RunLog
from optlab.optim import FULL_BATCH, decay_groups, needs_closure

log = logging.getLogger("optlab")


def train(cfg: DictConfig, run_dir: Path, resume: bool = False) -> dict:
    """Train as `cfg` says, write everything into `run_dir`, and return the final metrics.

    With `resume`, continue the run in `run_dir` from its checkpoints/last.pt: the state at the
    end of its last finished epoch, every RNG stream included, so that it ends exactly as if it
    had never stopped.
    """
    started = time.perf_counter()
    device = resolve_device(cfg.device)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    # data and model
    data = dataset.load(cfg.data, device)
    n = len(data.train)
    batch_size = n if cfg.batch_size == "full" else min(cfg.batch_size, n)
    min_batch = 2 if cfg.batchnorm else 1  # batch norm cannot train on a batch of one
    model = instantiate(
        cfg.model,
        input_shape=data.input_shape,
        num_classes=data.num_outputs,
        dropout=cfg.dropout,
        batchnorm=cfg.batchnorm,
    ).to(device)
    initialize(model, cfg.init, data.train, batch_size)
    params = [p for p in model.parameters() if p.requires_grad]
    initial = snapshot(model.state_dict())  # where training starts: the landscape's line begins here
    forward = torch.compile(model) if cfg.compile else model  # same parameters, fused kernels
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
    autocast = partial(torch.autocast, device.type, dtype=half) if half else nullcontext
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")  # else a no-op

    # optimizer, weight decay and schedule (torch.optim classes, straight from their _target_)
    optimizer, decoupled, l2 = build_optimizer(cfg, model)
    decayed = decay_groups(model, cfg.weight_decay_exclude)[0]
    scheduler, per_step = schedules.build(
        cfg.scheduler, optimizer, dataset.count_batches(n, batch_size, min_batch)
    )
    method = cfg.optimizer._target_
    if batch_size < n and method in FULL_BATCH:
        log.warning(
            "warning: %s is a full-batch method and batch_size=%s gives mini-batches: %s. "
            "Use batch_size=full.",
            method.rsplit(".", 1)[-1], cfg.batch_size, FULL_BATCH[method],
        )
    closure_based = needs_closure(optimizer)
    if closure_based and cfg.precision == "fp16":
        raise ConfigError("precision", "fp16", "fp32 or bf16 with a closure-based optimizer "
                          "(lbfgs, newton): gradient scaling cannot re-evaluate their closures")

    def objective(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(data loss, what is minimized): the task's loss, plus ½·l2·‖θ‖² when l2 > 0."""
        loss = data.loss(logits, y)
        return loss, (loss + 0.5 * l2 * _total_norm(decayed) ** 2 if l2 else loss)

    def closure(x: torch.Tensor, y: torch.Tensor, backward: bool = True) -> torch.Tensor:
        """The batch objective, re-evaluated by closure-based optimizers (LBFGS, Newton)."""
        total = objective(forward(x), y)[1]
        if backward:
            optimizer.zero_grad(set_to_none=True)
            total.backward()
        return total

    order = torch.Generator().manual_seed(cfg.seed)  # batch order: its own stream
    history: list[dict] = []  # a row per finished epoch (RunLog appends them)
    watch = cfg.early_stopping.monitor
    checkpoint = Checkpoint(run_dir / "checkpoints", OmegaConf.to_container(cfg), watch or "val_loss")
    stopper = EarlyStopping(**cfg.early_stopping) if watch else None
    step, epoch, seen, first_loss = 0, 0, 0, None

    def state() -> dict:
        return {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "epoch": epoch,
            "step": step,
            "loop": {
                "seen": seen,
                "first_loss": first_loss,
                "train_time": time.perf_counter() - loop_started,  # timings go on across a resume
                "wall_time": time.perf_counter() - started,
                "history": tuple(history),  # rows are never changed: snapshot shares them
                "checkpoint": checkpoint.state_dict(),
                "stopper": stopper.state_dict() if stopper else None,
            },
            "rng": {  # in forms torch.load(weights_only=True) reads: no pickled objects
                "python": random.getstate(),
                "numpy": numpy_rng_state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "order": order.get_state(),
            },
        }

    def restore() -> tuple[int, int, int, float | None, float, float]:
        """The mirror of `state`: load last.pt into every piece of the run."""
        file = run_dir / "checkpoints" / "last.pt"
        try:
            saved = load_checkpoint(file, device)
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            scaler.load_state_dict(saved["scaler"])
            loop, rng = saved["loop"], saved["rng"]
            history[:] = list(loop["history"])
            checkpoint.load_state_dict(loop["checkpoint"])
            best = (checkpoint.best_state or saved)["model"]  # best.pt must fit the model too
            mismatched = [k for k, v in model.state_dict().items() if k not in best or best[k].shape != v.shape]
            if mismatched:
                raise UsageError(f"{run_dir / 'checkpoints' / 'best.pt'} holds no {mismatched[0]} of this model's shape")
            if stopper:
                stopper.load_state_dict(loop["stopper"])
            random.setstate(rng["python"])
            set_numpy_rng_state(rng["numpy"])
            torch.set_rng_state(rng["torch"].cpu())
            if rng["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all([r.cpu() for r in rng["cuda"]])
            order.set_state(rng["order"].cpu())
        except UsageError as error:  # a file that does not load: the message names it
            raise UsageError(f"resume: {error}") from None
        except Exception as error:  # foreign, or for another model: the user's to fix
            # two lines of torch's text say which tensor does not fit
            raise UsageError(f"resume: cannot continue from {file}: {reason(error, lines=2)}") from None
        log.info("resumed %s after epoch %d (step %d)", run_dir, saved["epoch"], saved["step"])
        return saved["epoch"], saved["step"], loop["seen"], loop["first_loss"], loop["train_time"], loop["wall_time"]

    train_time = wall_time = 0.0  # seconds this run spent before: a resumed run's clocks go on
    if resume:
        epoch, step, seen, first_loss, train_time, wall_time = restore()
        initial = load_checkpoint(run_dir / "checkpoints" / "init.pt", device)
    else:
        atomic_write(run_dir / "checkpoints" / "init.pt", lambda f: torch.save(initial, f))
    run = RunLog(run_dir, cfg, history)  # opens the event file: only once the run can go on
    started -= wall_time
    loop_started = time.perf_counter() - train_time
    resume_point = snapshot(state())  # what last.pt holds: the end of the last finished epoch
    saved_at = time.monotonic()
    probe = StepProbe(params, cfg.diagnostics)
    status, diverged_step = "completed", None
    with StopOnSignal() as stop:
        for epoch in run.progress(range(epoch + 1, cfg.epochs + 1)):
            model.train()
            first_step = step + 1
            targets, losses, totals, outputs, lrs, times = [], [], [], [], [], []
            batches = dataset.epoch(data.train, batch_size, cfg.shuffle, order, device, min_batch,
                                    cfg.data.workers)
            for x, y in batches:
                with autocast():
                    logits = forward(x)
                    loss, total = objective(logits, y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(total).backward()
                scaler.unscale_(optimizer)  # true gradients for the probe (fp16 only)
                probe.before_step()
                lrs.append(optimizer.param_groups[0]["lr"])
                if decoupled:  # θ ← θ − Δθ − w·θ, the decay taken before Δθ as AdamW does
                    with torch.no_grad():
                        torch._foreach_mul_(decayed, 1 - decoupled)
                scaler.step(optimizer, *([partial(closure, x, y)] if closure_based else []))
                scaler.update()
                if per_step:
                    scheduler.step()
                probe.after_step()
                step += 1
                # keep tensors, not numbers: no host sync inside the loop
                targets.append(y)
                losses.append(loss.detach())
                totals.append(total.detach())
                outputs.append(logits.detach())
                times.append(time.time())
                if stop.signal:
                    break
            if stop.signal:  # this epoch's steps are dropped; last.pt resumes before them
                status = "interrupted"
                break

            # once per epoch: reduce on the device, then one transfer to the host
            sizes = torch.tensor([len(t) for t in targets], device=device, dtype=torch.float32)
            count = sum(len(t) for t in targets)
            seen += count
            losses = torch.stack(losses)
            columns = {"step/loss": losses.tolist(), "step/lr": lrs, **probe.epoch()}
            if l2:
                columns["step/l2_penalty"] = (torch.stack(totals) - losses).tolist()
            run.steps(first_step, columns, times)
            first_loss = columns["step/loss"][0] if first_loss is None else first_loss
            limit = cfg.diverge_threshold * first_loss
            bad = [i for i, v in enumerate(columns["step/loss"]) if not v <= limit]  # NaN fails too
            if bad:  # NaN, Inf or blown up: nothing more to learn from this run
                status, diverged_step = "diverged", first_step + bad[0]
                log.warning("diverged at step %d: loss %s (first loss %.4g, diverge_threshold=%g)",
                            diverged_step, columns["step/loss"][bad[0]], first_loss, cfg.diverge_threshold)
                break
            train_acc = data.score(torch.cat(outputs), torch.cat(targets))  # as they trained
            val_loss, val_acc = evaluate(forward, data, data.val, autocast)
            if not per_step:
                scheduler.step(val_loss) if isinstance(scheduler, ReduceLROnPlateau) else scheduler.step()
            row = {
                "epoch": epoch,
                "train_loss": (losses @ sizes).item() / count,
                "train_acc": train_acc.item(),
                "val_loss": val_loss,
                "val_acc": val_acc,
                "lr": lrs[-1],
                "step": step,
                "examples": seen,
                "elapsed_s": time.perf_counter() - loop_started,
            }
            units = distinct_units(model) if cfg.diagnostics else []
            extra = {f"init/distinct_units/layer{i}": u for i, u in enumerate(units, 1)}
            if cfg.curvature.every and epoch % cfg.curvature.every == 0:
                measured = curvature.measure(model, curvature.subset_loss(model, data, cfg.curvature.samples),
                                             cfg.curvature, lrs[-1], exact=False)
                extra.update({f"curvature/{k}": v for k, v in measured.items()})
            run.epoch(row, extra)
            checkpoint.on_epoch_end(epoch, row, state, stopper.on_epoch_end(epoch, row) if stopper else None)
            resume_point = snapshot(state())
            if time.monotonic() - saved_at > cfg.checkpoint_every_s:  # what a kill -9 can lose
                checkpoint.save(resume_point)
                saved_at = time.monotonic()
            if stopper and stopper.stop:
                log.info("early stopping at epoch %d: %s has not improved since epoch %d",
                         epoch, watch, stopper.best_epoch)
                break
    train_time = time.perf_counter() - loop_started
    nan = float("nan")
    # the final weights (the last finished epoch's: a diverged or interrupted epoch is dropped)
    # on the training set in eval mode, dropout off: their accuracy minus the final validation
    # accuracy is the generalization gap
    model.load_state_dict(resume_point["model"])
    final_train_acc = evaluate(forward, data, data.train, autocast)[1] if history else nan

    # test the best state (early stopping's verdict when it watches), or the final one
    checkpoint.save(resume_point)
    tested = resume_point if tested_checkpoint(cfg) == "last.pt" else checkpoint.best(resume_point)
    model.load_state_dict(tested["model"])
    test_loss, test_acc = evaluate(forward, data, data.test, autocast) if history else (nan, nan)
    last = history[-1] if history else {}
    measured = {}
    if cfg.curvature.final and history:  # on the weights that were tested
        measured = landscape(model, data, cfg, initial, last["lr"], run_dir, run.writer)
    metrics = {
        "status": status,
        "test_acc": test_acc,
        "test_loss": test_loss,
        "best_val_acc": max((r["val_acc"] for r in history), default=nan),
        "best_val_loss": min((r["val_loss"] for r in history), default=nan),
        "best_epoch": checkpoint.best_epoch,
        "stopped_epoch": stopper.stopped_epoch or None if stopper else None,
        "diverged_step": diverged_step,
        "interrupted_by": signal.Signals(stop.signal).name if stop.signal else None,
        "epochs_run": epoch - (status == "interrupted"),  # the interrupted epoch is dropped
        "steps": step,
        "final_train_loss": last.get("train_loss", nan),
        "final_train_acc": last.get("train_acc", nan),
        "final_val_loss": last.get("val_loss", nan),
        "final_val_acc": last.get("val_acc", nan),
        "generalization_gap": final_train_acc - last.get("val_acc", nan),
        "num_params": sum(p.numel() for p in params),
        "device": str(device),
        "wall_time_s": time.perf_counter() - started,
        "train_time_s": train_time,
        "epoch_time_s": train_time / epoch,
        "train_samples_per_s": seen / train_time,
        "config_hash": jobs.config_hash(cfg),
        **{k: v for k, v in measured.items() if isinstance(v, float)},
    }
    score = "R²" if data.task == "regression" else "acc"  # what `acc` means for this task
    run.finish(
        metrics,
        f"{status} · best val {score} {metrics['best_val_acc']:.4f} (epoch {metrics['best_epoch']}) · "
        f"test {score} {test_acc:.4f} · {metrics['epochs_run']} epochs in {metrics['wall_time_s']:.1f} s "
        f"({metrics['train_samples_per_s']:,.0f} samples/s)",
        sweep.hparams(cfg),
    )
    return metrics


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
    files = [run_dir / "checkpoints" / name for name in (tested_checkpoint(cfg), "init.pt")]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise UsageError(f"{run_dir} is not a finished run (missing {', '.join(missing)})")
    if cfg.get("surface") is not None:
        raise UsageError(f"{run_dir} is a surface run; its landscape is trajectory.png")
    device = resolve_device(cfg.device)
    data = dataset.load(cfg.data, device)
    model = instantiate(cfg.model, input_shape=data.input_shape, num_classes=data.num_outputs,
                        dropout=cfg.dropout, batchnorm=cfg.batchnorm).to(device)
    initial = load_checkpoint(files[1], device)
    try:
        model.load_state_dict(load_checkpoint(files[0], device)["model"])
    except (KeyError, RuntimeError) as error:  # loads, but holds no state of this model
        raise UsageError(f"cannot load {files[0]} into the run's model: {reason(error)}") from None
    rows = list(csv.DictReader((run_dir / "history.csv").open())) if (run_dir / "history.csv").exists() else []
    lr = float(rows[-1]["lr"]) if rows else cfg.optimizer.lr
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(run_dir)) as writer:  # the image joins the run's curves
        return landscape(model, data, cfg, initial, lr, run_dir, writer)


def build_optimizer(cfg: DictConfig, model: torch.nn.Module) -> tuple[torch.optim.Optimizer, float, float]:
    """The optimizer, with biases and norm layers exempt from decay as `weight_decay_exclude`
    says; and the decay optlab applies itself: (w for θ ← θ − Δθ − w·θ per step, the l2
    coefficient of ½·l2·‖θ‖² in the loss). `weight_decay_mode` moves `optimizer.weight_decay`
    out of the optimizer: `decoupled` into the former, `l2` into the latter (added to `l2`)."""
    decayed, exempt = decay_groups(model, cfg.weight_decay_exclude)
    w = cfg.optimizer.get("weight_decay", 0.0)
    if "weight_decay" in cfg.optimizer and exempt:
        params = [{"params": decayed}, {"params": exempt, "weight_decay": 0.0}]
        params = [group for group in params if group["params"]]
    else:
        params = decayed + exempt
    mode = cfg.weight_decay_mode
    extra = {"weight_decay": 0.0} if w and mode != "coupled" else {}
    optimizer = construct("optimizer", cfg.optimizer, params=params, _convert_="all", **extra)
    return optimizer, (w if mode == "decoupled" else 0.0), cfg.l2 + (w if mode == "l2" else 0.0)


def numpy_rng_state() -> dict:
    """NumPy's global RNG state as a tensor and numbers, which torch.load(weights_only=True) reads."""
    state = np.random.get_state(legacy=False)
    return {"key": torch.from_numpy(state["state"]["key"].astype(np.int64)), "pos": state["state"]["pos"],
            "has_gauss": state["has_gauss"], "gauss": state["gauss"]}


def set_numpy_rng_state(saved: dict) -> None:
    np.random.set_state({"bit_generator": "MT19937", "has_gauss": saved["has_gauss"], "gauss": saved["gauss"],
                         "state": {"key": saved["key"].cpu().numpy().astype(np.uint32), "pos": saved["pos"]}})


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
