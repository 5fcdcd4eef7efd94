"""Optimizers no well-kept library has: QuickProp and exact (damped) Newton, written by hand.

Every other optimizer is a `torch.optim` class named by `_target_` in `conf/optimizer/`.
Both follow torch.optim's conventions: per-group hyperparameters, per-parameter `state`,
`step(closure)`. Newton needs the closure; see `needs_closure`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable

import torch
from torch.optim import Optimizer

from optlab.config.allowlist import construct
from optlab.errors import UsageError

# Methods of the full-batch world, and why mini-batches hurt them (optlab/training/single.py warns once).
FULL_BATCH = {
    "torch.optim.Rprop": "Rprop adapts each step size from the sign of successive gradients, "
    "and mini-batch noise flips those signs at random",
    "optlab.optim.Newton": "Newton's method solves with the Hessian of the loss it is given; a "
    "mini-batch's Hessian is a noisy estimate and each step costs a full Hessian",
}


NORM_LAYERS = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.LayerNorm, torch.nn.GroupNorm)

# optimizers whose step the rate does not set
UNSUITED = {
    "torch.optim.LBFGS": "takes its step from a line search",
    "optlab.optim.Newton": "takes its step from the Hessian",
    "torch.optim.Rprop": "takes its first step from lr and adapts every later one by sign",
}


def decay_groups(model: torch.nn.Module, exclude: Iterable[str]) -> tuple[list, list]:
    """(decayed, exempt) parameters: `exclude` may name `bias` (biases of affine layers) and
    `norm` (every parameter of a normalization layer)."""
    decayed, exempt = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            kind = "norm" if isinstance(module, NORM_LAYERS) else "bias" if name == "bias" else "weight"
            (exempt if kind in exclude else decayed).append(p)
    return decayed, exempt


def build_optimizer(cfg, model: torch.nn.Module) -> tuple[torch.optim.Optimizer, float, float]:
    """The optimizer, with biases and norm layers exempt from decay as `weight_decay_exclude`
    says; and the decay optlab applies itself: (w for θ ← θ − Δθ − w·θ per step, the l2
    coefficient of ½·l2·‖θ‖² in the loss). `weight_decay_mode` moves `optimizer.weight_decay`
    out of the optimizer: `decoupled` into the former, `l2` into the latter (added to `l2`)."""
    decayed, exempt = decay_groups(model, cfg.weight_decay_exclude)
    w = cfg.optimizer.get("weight_decay", 0.0)
    mode = cfg.weight_decay_mode
    if w and mode == "coupled" and exempt:  # one group is cheaper per step when no decay differs
        params = [{"params": decayed}, {"params": exempt, "weight_decay": 0.0}]
        params = [group for group in params if group["params"]]
    else:
        params = decayed + exempt
    extra = {"weight_decay": 0.0} if w and mode != "coupled" else {}
    optimizer = construct("optimizer", cfg.optimizer, params=params, **extra)
    return optimizer, (w if mode == "decoupled" else 0.0), cfg.l2 + (w if mode == "l2" else 0.0)


def needs_closure(optimizer: Optimizer) -> bool:
    """True for optimizers whose step() must re-evaluate the loss (LBFGS, Newton)."""
    closure = inspect.signature(optimizer.step).parameters.get("closure")
    return closure is not None and closure.default is inspect.Parameter.empty


def hessian(loss: torch.Tensor, params: list[torch.Tensor], chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """(gradient, Hessian) of `loss` in `params` as a flat vector and a P×P matrix: rows of
    Hessian-vector products against the identity, `chunk` at a time (double backprop, vmapped
    by `is_grads_batched`)."""
    grads = torch.autograd.grad(loss, params, create_graph=True)
    flat = torch.cat([g.reshape(-1) for g in grads])
    eye = torch.eye(len(flat), dtype=flat.dtype, device=flat.device)
    rows = []
    for block in eye.split(chunk):
        parts = torch.autograd.grad(flat, params, grad_outputs=block, is_grads_batched=True, retain_graph=True)
        rows.append(torch.cat([h.reshape(len(block), -1) for h in parts], dim=1))
    return flat.detach(), torch.cat(rows)


class QuickProp(Optimizer):
    r"""QuickProp (Fahlman, 1988): a per-weight secant (parabola) step, written by hand.

    With slope :math:`S_t = \partial E/\partial w + \text{decay}\cdot w`, previous step
    :math:`\Delta w_{t-1}` and previous slope :math:`S_{t-1}`, per weight:

    .. math::
        \Delta w_t = \begin{cases}
          -\varepsilon S_t & \Delta w_{t-1} = 0 \text{ (first step, restart)} \\
          \mu\,\Delta w_{t-1} + g_t & |S_t| > \tfrac{\mu}{1+\mu}|S_{t-1}|,\ \text{sign}(S_t)
                = \text{sign}(S_{t-1}) \text{ (step too large, infinite or uphill)} \\
          \Delta w_{t-1}\,\dfrac{S_t}{S_{t-1}-S_t} + g_t & \text{otherwise}
        \end{cases}

    where the gradient term :math:`g_t = -\varepsilon S_t` is added only while :math:`-S_t`
    still points the way of :math:`\Delta w_{t-1}` (the minimum is not yet crossed), else 0.
    This is the rule of Fahlman's reference implementation (quickprop1.c), with the cap's
    condition written as :math:`\Delta w_{t-1}\,(S_{\mu} - S_t) > 0`,
    :math:`S_{\mu} = \tfrac{\mu}{1+\mu}S_{t-1}`.

    Args:
        lr: ε, the gradient step size.
        mu: the maximum growth factor μ (Fahlman: 1.75).
        decay: the weight-decay term added to the slope (Fahlman: 1e-4).
    """

    def __init__(self, params: Iterable, lr: float = 0.01, mu: float = 1.75, decay: float = 0.0):
        super().__init__(params, {"lr": lr, "mu": mu, "decay": decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            eps, mu, decay = group["lr"], group["mu"], group["decay"]
            shrink = mu / (1 + mu)
            for p in group["params"]:
                if p.grad is None:
                    continue
                slope = p.grad + decay * p
                state = self.state[p]
                if not state:
                    state["prev_step"] = torch.zeros_like(p)
                    state["prev_slope"] = torch.zeros_like(p)
                d, prev = state["prev_step"], state["prev_slope"]
                step = quickprop_step(slope, d, prev, -eps, mu, shrink)
                p.add_(step)
                d.copy_(step)
                prev.copy_(slope)
        return loss


def quickprop_step(slope, d, prev, neg_lr, mu, shrink):
    """QuickProp's Δw_t (the rule in `QuickProp`'s docstring) from the slope S_t, the previous step
    Δw_{t-1} and slope S_{t-1}; `neg_lr` = −ε, `shrink` = μ/(1+μ). The numbers may be floats or
    tensors that broadcast (a vectorized group's per-member rows, optlab/training/update_rules.py)."""
    descent = neg_lr * slope
    gradient_term = torch.where(d * slope < 0, descent, 0.0)
    denominator = prev - slope
    secant = d * slope / torch.where(denominator == 0, 1.0, denominator)
    secant = torch.where(denominator == 0, 0.0, secant)
    capped = d * (shrink * prev - slope) > 0
    step = gradient_term + torch.where(capped, mu * d, secant)
    return torch.where(d == 0, descent, step)


class Newton(Optimizer):
    r"""Exact Newton's method with Levenberg–Marquardt damping, written by hand.

    .. math::
        \theta \leftarrow \theta - \eta\,(H + \lambda I)^{-1} \nabla f(\theta)

    H is the full Hessian of the loss over all parameters, built from vmapped
    Hessian-vector products (double backprop with `is_grads_batched`, torch.func's vmap).
    A step is tried with a Cholesky solve; a failed factorization (H + λI not positive
    definite) or a step that raises the loss is rejected and retried with λ ← 3λ; an accepted
    step sets λ ← λ/3, so the loss never rises. `damping=0` gives the undamped Newton step;
η (`lr`, default 1) shortens every step, and lets learning-rate schedules act on Newton.

    The Hessian holds P² numbers for P parameters: past `max_params` the constructor refuses,
    saying how much memory it would take (the recitation's "too expensive", made concrete).

    `step(closure)` needs `closure(backward=False)` to return the loss with its graph.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1.0,
        damping: float = 1e-3,
        max_params: int = 5000,
        max_tries: int = 30,
        chunk: int = 512,
    ):
        super().__init__(params, {"lr": lr, "damping": damping})
        self.params = [p for g in self.param_groups for p in g["params"]]
        size = sum(p.numel() for p in self.params)
        if size > max_params:
            gb = size**2 * self.params[0].element_size() / 1e9
            raise UsageError(
                f"newton: the model has {size:,} parameters, so its Hessian would hold "
                f"{size:,}² numbers ({gb:,.1f} GB) and each step would solve a {size:,}-dimensional "
                f"system; the limit is optimizer.max_params={max_params:,}. Use model=linear or "
                f"a smaller model.hidden (e.g. model.hidden=[32]), or raise optimizer.max_params"
            )
        self.max_tries, self.chunk = max_tries, chunk

    def hessian(self, loss: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return hessian(loss, self.params, self.chunk)

    def step(self, closure: Callable[..., torch.Tensor]):  # type: ignore[override]
        group = self.param_groups[0]
        with torch.enable_grad():
            loss = closure(backward=False)
            gradient, hessian = self.hessian(loss)
        loss = loss.detach()
        hessian = (hessian + hessian.T) / 2  # exact in theory; symmetric in floating point too
        start = [p.detach().clone() for p in self.params]
        damping = group["damping"]
        identity = torch.eye(len(gradient), dtype=hessian.dtype, device=hessian.device)
        with torch.no_grad():
            for _ in range(self.max_tries):
                factor, info = torch.linalg.cholesky_ex(hessian + damping * identity)
                if info == 0:
                    delta = group["lr"] * torch.cholesky_solve(gradient[:, None], factor)[:, 0]
                    self._set(start, delta)
                    trial = closure(backward=False)
                    if math.isfinite(trial.item()) and trial <= loss:
                        group["damping"] = damping / 3
                        return loss
                damping = 3 * damping if damping > 0 else 1e-6
            self._set(start, None)  # no acceptable step: stay put, keep the larger damping
            group["damping"] = damping
        return loss

    def _set(self, start: list[torch.Tensor], delta: torch.Tensor | None) -> None:
        offset = 0
        for p, p0 in zip(self.params, start):
            n = p.numel()
            p.copy_(p0 if delta is None else p0 - delta[offset : offset + n].view_as(p))
            offset += n
