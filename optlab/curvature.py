"""Curvature of the training loss: sharp and flat minima, ill-conditioning, the edge of stability.

Every measurement works on a fixed subset of the training set, with the model in eval mode
(dropout off, batch norm on its running statistics), random vectors from a generator of its
own (the training RNG stream is untouched), and the weights put back exactly afterwards:

- `lambda_max`: the top Hessian eigenvalue by power iteration on Hessian-vector products
  (double backprop), beside 2/lr, where gradient descent stops being stable;
- `trace`: Hutchinson's estimator E[vᵀHv] with Rademacher v;
- `sharpness`: Keskar et al. (2017) ε-sharpness, 100·(max f(x+y) − f(x))/(1 + f(x)) over
  |yᵢ| ≤ ε(|xᵢ|+1), found by projected sign ascent;
- `spectrum`: for models up to `exact_max_params`, every eigenvalue of the exact Hessian
  (condition number, fraction of negative eigenvalues);
- `slices`: the loss along a filter-normalized random direction (Li et al., 2018) and along
  the straight line from the initial to the final weights.

PyHessian computes the first two the same way; none of this is in a maintained library that
works on any torch model, so it is written here.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from optlab.optim import hessian

Loss = Callable[[], torch.Tensor]


class Measuring:
    """Context: eval mode and untouched weights for the duration of a measurement."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self) -> list[torch.Tensor]:
        self.training = self.model.training
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.saved = [p.detach().clone() for p in self.params]
        self.model.eval()
        return self.params

    def __exit__(self, *exc) -> None:
        with torch.no_grad():
            for p, saved in zip(self.params, self.saved):
                p.copy_(saved)
                p.grad = None
        self.model.train(self.training)


def _hvp(loss: Loss, params: list[torch.Tensor]) -> Callable[[list[torch.Tensor]], list[torch.Tensor]]:
    grads = torch.autograd.grad(loss(), params, create_graph=True)
    return lambda v: list(torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True))


def _dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))


def lambda_max(model: nn.Module, loss: Loss, iters: int = 50, tol: float = 1e-5, seed: int = 0) -> float:
    """The Hessian eigenvalue of largest magnitude, by power iteration on Hessian-vector products."""
    generator = torch.Generator().manual_seed(seed)
    with Measuring(model) as params:
        hvp = _hvp(loss, params)
        v = [torch.randn(p.shape, generator=generator).to(p) for p in params]
        value = 0.0
        for _ in range(iters):
            norm = _dot(v, v).sqrt()
            v = [x / norm for x in v]
            hv = hvp(v)
            new = _dot(v, hv).item()
            v = [h.detach() for h in hv]
            if abs(new - value) <= tol * max(abs(new), 1e-12):
                return new
            value = new
        return value


def trace(model: nn.Module, loss: Loss, probes: int = 20, seed: int = 0) -> float:
    """Hutchinson's estimate of tr(H): the mean of vᵀHv over Rademacher vectors v."""
    generator = torch.Generator().manual_seed(seed)
    with Measuring(model) as params:
        hvp = _hvp(loss, params)
        total = 0.0
        for _ in range(probes):
            v = [(torch.randint(0, 2, p.shape, generator=generator) * 2 - 1).to(p) for p in params]
            total += _dot(v, hvp(v)).item()
        return total / probes


def sharpness(model: nn.Module, loss: Loss, epsilon: float = 1e-3, steps: int = 10) -> float:
    """Keskar et al.'s ε-sharpness in percent: the largest relative loss increase in the box
    |yᵢ| ≤ ε(|xᵢ|+1) around the weights x, by projected sign-gradient ascent."""
    with Measuring(model) as params:
        with torch.no_grad():
            start = loss().item()
        radius = [epsilon * (p.detach().abs() + 1) for p in params]
        origin = [p.detach().clone() for p in params]
        best = start
        for _ in range(steps):
            grads = torch.autograd.grad(loss(), params)
            with torch.no_grad():
                for p, g, x, r in zip(params, grads, origin, radius):
                    p.add_(g.sign() * r / 2)
                    p.copy_(torch.maximum(torch.minimum(p, x + r), x - r))
                best = max(best, loss().item())
        return 100 * (best - start) / (1 + start)


def spectrum(model: nn.Module, loss: Loss) -> torch.Tensor:
    """Every eigenvalue of the exact Hessian, ascending (P² memory: small models only)."""
    with Measuring(model) as params:
        h = hessian(loss(), params)[1]
        return torch.linalg.eigvalsh((h + h.T) / 2).detach()


def filter_normalized(params: list[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
    """A random direction whose every filter (row of a weight matrix, a unit's weights) has the
    norm of the same filter of the weights; biases and normalization parameters get 0."""
    direction = []
    for p in params:
        if p.dim() <= 1:
            direction.append(torch.zeros_like(p))
            continue
        d = torch.randn(p.shape, generator=generator).to(p)
        rows, weights = d.flatten(1), p.detach().flatten(1)
        d = (rows * (weights.norm(dim=1, keepdim=True) / (rows.norm(dim=1, keepdim=True) + 1e-12))).view_as(p)
        direction.append(d)
    return direction


def slices(model: nn.Module, loss: Loss, initial: list[torch.Tensor], points: int = 41,
           seed: int = 0) -> dict[str, list[float]]:
    """The loss at θ + α·d for a filter-normalized random d (α ∈ [−1, 1]), and along the line
    θ₀ + α·(θ − θ₀) from the initial to the final weights (α ∈ [−0.25, 1.25])."""
    generator = torch.Generator().manual_seed(seed)
    alphas = torch.linspace(-1, 1, points).tolist()
    line = torch.linspace(-0.25, 1.25, points).tolist()
    with Measuring(model) as params, torch.no_grad():
        final = [p.detach().clone() for p in params]
        direction = filter_normalized(params, generator)

        def at(weights) -> float:
            for p, w in zip(params, weights):
                p.copy_(w)
            value = loss().item()
            return value if math.isfinite(value) else float("nan")

        random_slice = [at([f + a * d for f, d in zip(final, direction)]) for a in alphas]
        interpolation = [at([i + a * (f - i) for i, f in zip(initial, final)]) for a in line]
    return {"alpha": alphas, "random_direction": random_slice, "line_alpha": line, "interpolation": interpolation}


def measure(model: nn.Module, loss: Loss, cfg, lr: float, initial: list[torch.Tensor] | None = None,
            exact: bool = True) -> dict:
    """Every measurement `cfg` (the `curvature` node) asks for, as a flat dict of numbers."""
    top = lambda_max(model, loss, iters=cfg.iters)
    out = {
        "lambda_max": top,
        "stability_threshold": 2 / lr,  # gradient descent diverges where lambda_max > 2/lr
        "trace": trace(model, loss, probes=cfg.probes),
        "sharpness": sharpness(model, loss, epsilon=cfg.epsilon),
    }
    size = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if exact and size <= cfg.exact_max_params:
        values = spectrum(model, loss)
        positive = values[values > 0]
        out.update(
            eigenvalues=values.tolist(),
            condition_number=(values.max() / positive.min()).item() if len(positive) else float("nan"),
            negative_fraction=(values < 0).float().mean().item(),
        )
    return out


def subset_loss(model: nn.Module, data, samples: int) -> Loss:
    """The training loss on the first `samples` training examples (a fixed subset)."""
    index = torch.arange(min(samples, len(data.train)), device=data.train.y.device)
    x, y = data.train.get(index)
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    return lambda: data.loss(model(x), y)


def plot(result: dict, path, title: str):
    """landscape.png: the two loss slices, and the eigenvalue histogram when there is one."""
    from optlab.store.plots import pyplot, save_figure

    plt = pyplot()
    panels = 3 if "eigenvalues" in result else 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4), layout="constrained")
    axes[0].plot(result["alpha"], result["random_direction"], "o-", ms=3)
    axes[0].set(xlabel="α (filter-normalized random direction)", ylabel="training loss",
                title="loss along a random direction")
    axes[1].plot(result["line_alpha"], result["interpolation"], "o-", ms=3)
    axes[1].axvline(0, color="grey", lw=0.6)
    axes[1].axvline(1, color="grey", lw=0.6)
    axes[1].set(xlabel="α (0: initial weights, 1: final)", ylabel="training loss", title="initial → final")
    if panels == 3:
        axes[2].hist(result["eigenvalues"], bins=60, log=True)
        axes[2].set(xlabel="Hessian eigenvalue", ylabel="count",
                    title=f"spectrum: κ = {result['condition_number']:.3g}, "
                          f"{100 * result['negative_fraction']:.1f}% negative")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    save_figure(fig, path)
    return path
