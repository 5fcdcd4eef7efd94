"""A surface run (`surface=quadratic`, ...): an optimizer's path on a 2-D test function, its
curves, trajectory.csv and trajectory.png, and the rate it converged at.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from optlab import schedules
from optlab.config.allowlist import construct
from optlab.config.identity import config_hash
from optlab.optim import needs_closure
from optlab.store.files import write_csv
from optlab.store.logs import RunLog, choices, hparams, progress
from optlab.store.plots import save_figure
from optlab.surfaces import Quadratic, Surface, linear_rate, plot_paths
from optlab.training.record import diverged_at, lesson


def _descend(cfg: DictConfig, surface: Surface, optimizer, scheduler, log: RunLog):
    """`cfg.steps` optimizer steps from the surface's start, or until the loss diverges: the
    points visited, the gradient norm, rate and time of each step, and how it ended."""
    closure_based = needs_closure(optimizer)

    def closure(backward: bool = True) -> torch.Tensor:
        loss = surface()
        if backward:
            optimizer.zero_grad()
            loss.backward()
        return loss

    points, grad_norms, lrs, times = [surface.point.detach().clone()], [], [], []
    status, diverged_step, first_loss = "completed", None, closure(backward=False).item()
    for step in progress(range(1, cfg.steps + 1), unit="step"):
        closure()
        grad_norms.append(surface.point.grad.norm().item())
        lrs.append(optimizer.param_groups[0]["lr"])
        try:
            optimizer.step(closure if closure_based else None)
        except (IndexError, ZeroDivisionError):  # L-BFGS's line search on a surface that falls forever
            status, diverged_step = "diverged", step
            break
        loss = surface().item()
        schedules.step(scheduler, loss)
        points.append(surface.point.detach().clone())
        times.append(time.time())
        if diverged_at(step, [loss], first_loss, cfg.diverge_threshold, log.logger) is not None:
            status, diverged_step = "diverged", step
            break

    return points, grad_norms, lrs, times, status, diverged_step


def _record(surface: Surface, points, grad_norms, lrs, times, log: RunLog, run_dir: Path):
    """The path's curves in TensorBoard and trajectory.csv: (path, loss and distance at each point)."""
    path = torch.stack(points)
    with torch.no_grad():
        losses = surface.f(path[:, 0], path[:, 1]).tolist()
    distances = (path - torch.tensor(surface.optimum, dtype=path.dtype)).norm(dim=1).tolist()
    moves = (path[1:] - path[:-1]).norm(dim=1) / path[:-1].norm(dim=1)
    log.steps(
        1,
        {
            "step/loss": losses[1:],
            "step/distance": distances[1:],
            "step/x": path[1:, 0].tolist(),
            "step/y": path[1:, 1].tolist(),
            "step/grad_norm": grad_norms,
            "step/lr": lrs,
            "step/update_ratio": moves.tolist(),
        },
        times,
    )
    write_csv(
        run_dir / "trajectory.csv",
        [
            {"step": i, "x": p[0], "y": p[1], "loss": f, "distance": d}
            for i, (p, f, d) in enumerate(zip(path.tolist(), losses, distances))
        ],
    )
    return path, losses, distances


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Run `cfg.optimizer` for `cfg.steps` steps on `cfg.surface`; write path, plot and metrics."""
    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    surface: Surface = construct("surface", cfg.surface, ())
    optimizer = construct("optimizer", cfg.optimizer, params=list(surface.parameters()))
    # a step is an epoch here: a schedule planned over `${epochs}` spans the run's steps
    schedule = OmegaConf.merge(cfg, {"epochs": cfg.steps}).scheduler
    scheduler = schedules.build(schedule, optimizer, steps_per_epoch=1)[0]
    log = RunLog(run_dir, OmegaConf.to_container(cfg, enum_to_str=True))
    points, grad_norms, lrs, times, status, diverged_step = _descend(cfg, surface, optimizer, scheduler, log)
    path, losses, distances = _record(surface, points, grad_norms, lrs, times, log, run_dir)
    name = type(surface).__name__.lower()
    fig = plot_paths(surface, {choices(cfg)["optimizer"]: path.numpy()}, name)
    log.writer.add_figure("trajectory", fig, close=False)
    save_figure(fig, run_dir / "trajectory.png")

    metrics = {
        "status": status,
        "surface": name,
        "steps": len(path) - 1,
        "diverged_step": diverged_step,
        "start_loss": losses[0],
        "final_loss": losses[-1],
        "start_distance": distances[0],
        "final_distance": distances[-1],
        "rate_measured": linear_rate(distances) if status == "completed" else None,
        **(surface.rates() if isinstance(surface, Quadratic) else {}),
        "wall_time_s": time.perf_counter() - started,
        "config_hash": config_hash(cfg),
    }
    metrics["hint"] = lesson(cfg, metrics)
    rate = metrics["rate_measured"]
    log.finish(
        metrics,
        f"{status} · {name}: {metrics['steps']} steps, loss {losses[0]:.4g} → {losses[-1]:.4g}, distance "
        f"to optimum {distances[-1]:.3g}, measured rate {'n/a' if rate is None else f'{rate:.4f}'}",
        hparams(cfg),
    )
    return metrics
