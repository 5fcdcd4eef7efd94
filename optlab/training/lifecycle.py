"""A run's start and finish, for both engines: resume each run from its last.pt or record its
init.pt; at the end, test its weights, measure them as asked, and write its record.
"""

from __future__ import annotations

import logging
import signal
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from omegaconf import DictConfig

from optlab import curvature, noise
from optlab.config.identity import config_hash
from optlab.errors import UsageError, reason
from optlab.metrics import lower_is_better
from optlab.naming import relative
from optlab.store.files import atomic_write, load_checkpoint, write_json
from optlab.store.logs import hparams
from optlab.training import data as dataset
from optlab.training.callbacks import tested_checkpoint
from optlab.training.engine import Engine
from optlab.training.record import Run, lesson
from optlab.training.single import evaluate

log = logging.getLogger("optlab")


def start(engine: Engine, runs: list[Run], resume: bool) -> None:
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
        run.logger.info("resumed %s after epoch %d (step %d)", relative(run.dir), saved["epoch"], saved["step"])


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
        "config_hash": config_hash(run.asked),
        **run.to_target(),
        **{k: v for k, v in measured.items() if isinstance(v, float)},
    }
    metrics["hint"] = lesson(cfg, metrics, data.num_outputs if data.task == "classification" else None, run.first_loss)
    monitor = run.checkpoint.monitor
    best = tested_checkpoint(cfg) == "best.pt" and run.checkpoint.best_state is not None
    chosen_by = f"{'lowest' if lower_is_better(monitor) else 'highest'} {monitor}" if best else None
    run.log.finish(metrics, closing_line(metrics, history, tested["epoch"], chosen_by, data.task), hparams(cfg))
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
    def count(n: int) -> str:
        return f"{n} epoch{'s' * (n != 1)}"

    epochs = count(ran) if len(history) >= ran else f"{count(len(history))} and part of epoch {ran}"
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
        import numpy as np
        from PIL import Image

        writer.add_image("landscape", np.asarray(Image.open(path).convert("RGB")), dataformats="HWC")
    log.info("curvature: λ_max %.4g (2/lr %.4g), trace %.4g, sharpness %.3g%%; %s",
             result["lambda_max"], 2 / lr, result["trace"], result["sharpness"], path.name)
    return result
