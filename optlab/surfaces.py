"""2-D test functions: the geometry that motivates each optimizer, made visible.

`optlab train surface=quadratic optimizer=momentum` runs the optimizer on a surface instead of
a network. A surface is an `nn.Module` whose only parameter is the point (x, y), in float64 so
that convergence can be followed far down; the run logs the path to TensorBoard and draws it
on the contour plot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from optlab.store.plots import pyplot


class Surface(nn.Module):
    """f(x, y) with its optimum (or stationary point) and a box to draw it in."""

    optimum: tuple[float, float]
    view: tuple[tuple[float, float], tuple[float, float]]
    log_contours = True  # contour levels on a log scale (f spans decades)

    def __init__(self, start: Sequence[float]):
        super().__init__()
        self.point = nn.Parameter(torch.tensor(list(start), dtype=torch.float64))

    def forward(self) -> torch.Tensor:
        return self.f(self.point[0], self.point[1])

    def f(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class Quadratic(Surface):
    """½·pᵀAp, A = R·diag(κ, 1)·Rᵀ rotated by `angle` degrees: condition number κ."""

    optimum = (0.0, 0.0)
    view = ((-5.0, 5.0), (-5.0, 5.0))

    def __init__(self, kappa: float = 10.0, angle: float = 30.0, start: Sequence[float] = (-4, 3)):
        super().__init__(start)
        self.kappa = kappa
        c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        rotation = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
        self.register_buffer("A", rotation @ torch.diag(torch.tensor([kappa, 1.0])).double() @ rotation.T)

    def f(self, x, y):
        a = self.A
        return 0.5 * (a[0, 0] * x * x + 2 * a[0, 1] * x * y + a[1, 1] * y * y)

    def rates(self) -> dict[str, float]:
        """The analytic linear rates of convergence (λ₁ = κ, λₙ = 1), and how to reach them.

        Gradient descent at its best fixed step 2/(λ₁+λₙ) contracts the error by (κ−1)/(κ+1)
        per step; heavy-ball momentum at α = (2/(√λ₁+√λₙ))², β = ((√κ−1)/(√κ+1))² by
        (√κ−1)/(√κ+1) (Polyak 1964; Goh, "Why Momentum Really Works", 2017).
        """
        k, r = self.kappa, math.sqrt(self.kappa)
        return {
            "rate_gd_optimal": (k - 1) / (k + 1),
            "lr_gd_optimal": 2 / (k + 1),
            "rate_momentum_optimal": (r - 1) / (r + 1),
            "lr_momentum_optimal": (2 / (r + 1)) ** 2,
            "momentum_optimal": ((r - 1) / (r + 1)) ** 2,
        }


class Rosenbrock(Surface):
    """(1 − x)² + 100·(y − x²)²: a curved valley; minimum at (1, 1)."""

    optimum = (1.0, 1.0)
    view = ((-2.0, 2.0), (-1.0, 3.0))

    def f(self, x, y):
        return (1 - x) ** 2 + 100 * (y - x * x) ** 2


class Beale(Surface):
    """Beale's function: plateaus and ridges; minimum at (3, 0.5)."""

    optimum = (3.0, 0.5)
    view = ((-4.5, 4.5), (-4.5, 4.5))

    def f(self, x, y):
        return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


class Saddle(Surface):
    """x² − y²: a saddle point at (0, 0), unbounded below along y."""

    optimum = (0.0, 0.0)
    view = ((-1.5, 1.5), (-1.5, 1.5))
    log_contours = False

    def f(self, x, y):
        return x * x - y * y


def linear_rate(distances: Sequence[float]) -> float | None:
    """The measured per-step contraction of the distance to the optimum.

    A least-squares line through log(distance) over the second half of the steps that stay
    above float64's floor (1e-12 of the start); 0.0 when a step or two reached the optimum,
    None when there are too few steps to tell.
    """
    d = np.asarray(distances, dtype=float)
    floor = np.flatnonzero(~(np.isfinite(d) & (d > d[0] * 1e-12)))
    end = floor[0] if len(floor) else len(d)
    if end < 3:
        return 0.0 if end < len(d) else None
    t = np.arange(end // 2, end)
    slope = np.polyfit(t, np.log(d[t]), 1)[0]
    return float(math.exp(slope))


def plot_paths(surface: Surface, paths: dict[str, np.ndarray], title: str):
    """Contours of the surface with each path drawn over them (a matplotlib Figure)."""
    plt = pyplot()
    (x0, x1), (y0, y1) = surface.view
    x, y = torch.meshgrid(
        torch.linspace(x0, x1, 300, dtype=torch.float64),
        torch.linspace(y0, y1, 300, dtype=torch.float64),
        indexing="xy",
    )
    with torch.no_grad():
        z = surface.f(x, y).numpy()
    if surface.log_contours:
        z = np.log10(z - z.min() + 1e-3)
    fig, ax = plt.subplots(figsize=(6.4, 5.6), layout="constrained")
    ax.contourf(x.numpy(), y.numpy(), z, levels=30, cmap="Greys", alpha=0.5)
    ax.contour(x.numpy(), y.numpy(), z, levels=30, cmap="Greys", linewidths=0.4)
    for label, path in paths.items():
        ax.plot(path[:, 0], path[:, 1], ".-", lw=1.2, ms=3, label=label)
    ax.plot(*surface.optimum, "r*", ms=14, label="optimum")
    ax.set(xlim=(x0, x1), ylim=(y0, y1), xlabel="x", ylabel="y", title=title)
    ax.legend(loc="best", fontsize=8)
    return fig
