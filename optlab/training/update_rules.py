"""The batched update rules, one per torch.optim class that stacks: each is torch's
single-tensor arithmetic on [K, N] rows (row k = member k), with every hyperparameter a per-member
tensor, so that a member equals its solo optimizer to the bit on CPU (tests/unit/test_batched.py
holds each rule to torch's, step by step). `BatchedOptimizer` (optlab/training/batched.py)
drives them; here is what differs per rule: its hyperparameters, its buffers, its arithmetic and
the state keys torch's own optimizer holds.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from optlab.optim import QuickProp, quickprop_step

SUPPORTED = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop, torch.optim.Adagrad,
             torch.optim.Adamax, torch.optim.Adadelta, torch.optim.Rprop, torch.optim.RAdam,
             torch.optim.NAdam, QuickProp)


# rule family of each class (AdamW is Adam with decoupled_weight_decay=True), and its [K, N] buffers
FAMILY = {torch.optim.SGD: "sgd", torch.optim.Adam: "adam", torch.optim.AdamW: "adam",
           torch.optim.RMSprop: "rmsprop", torch.optim.Adagrad: "adagrad", torch.optim.Adamax: "adamax",
           torch.optim.Adadelta: "adadelta", torch.optim.Rprop: "rprop",
           torch.optim.RAdam: "radam", torch.optim.NAdam: "nadam",
          QuickProp: "quickprop"}


BUFFERS = {"sgd": ("momentum_buffer",), "adam": ("exp_avg", "exp_avg_sq"),
            "rmsprop": ("square_avg", "momentum_buffer", "grad_avg"), "adagrad": ("sum",),
            "adamax": ("exp_avg", "exp_inf"), "adadelta": ("square_avg", "acc_delta"), "rprop": ("prev", "step_size"),
            "radam": ("exp_avg", "exp_avg_sq"), "nadam": ("exp_avg", "exp_avg_sq", "mu_product"),
            "quickprop": ("prev_step", "prev_slope")}


def hypers(family: str, group: Mapping) -> dict[str, float]:
    """One param group's hyperparameters in the form the rule uses (Python floats, so derived
    values like 1 - beta are rounded exactly as torch rounds them)."""
    lr, wd = float(group["lr"]), float(group.get("weight_decay", 0.0))  # Rprop has none
    if family == "sgd":
        mom = float(group["momentum"])
        return {"neg_lr": -lr, "wd": wd, "mom": mom, "one_minus_damp": 1 - float(group["dampening"]),
                "nesterov": float(bool(group["nesterov"])), "has_mom": float(mom != 0)}
    if family in ("adam", "radam", "nadam"):
        b1, b2 = (float(b) for b in group["betas"])
        decoupled = bool(group.get("decoupled_weight_decay", False))
        return {"lr": lr, "beta1": b1, "beta2": b2, "one_minus_beta1": 1 - b1, "one_minus_beta2": 1 - b2,
                "eps": float(group["eps"]), "wd": 0.0 if decoupled else wd,
                "decay": 1 - lr * wd if decoupled else 1.0,
                "momentum_decay": float(group.get("momentum_decay", 0.0))}
    if family == "rmsprop":
        alpha = float(group["alpha"])
        return {"neg_lr": -lr, "wd": wd, "alpha": alpha, "one_minus_alpha": 1 - alpha,
                "eps": float(group["eps"]),
                "mom": float(group["momentum"]), "has_mom": float(group["momentum"] > 0),
                "centered": float(bool(group["centered"]))}
    if family == "quickprop":
        mu = float(group["mu"])
        return {"neg_lr": -lr, "mu": mu, "shrink": mu / (1 + mu), "decay": float(group["decay"])}
    if family == "rprop":
        (eta_minus, eta_plus), (step_min, step_max) = (map(float, group[k]) for k in ("etas", "step_sizes"))
        return {"lr": lr, "eta_minus": eta_minus, "eta_plus": eta_plus, "step_min": step_min, "step_max": step_max}
    if family == "adadelta":
        rho = float(group["rho"])
        return {"neg_lr": -lr, "rho": rho, "one_minus_rho": 1 - rho, "eps": float(group["eps"]), "wd": wd}
    if family == "adamax":
        b1, b2 = (float(b) for b in group["betas"])
        return {"lr": lr, "beta1": b1, "beta2": b2, "one_minus_beta1": 1 - b1, "eps": float(group["eps"]), "wd": wd}
    return {"lr": lr, "lr_decay": float(group["lr_decay"]), "wd": wd, "eps": float(group["eps"])}


def rho(t: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """RAdam's length of the approximated simple moving average after t steps."""
    return (2 / (1 - b2) - 1) - 2 * t * (b2**t) / (1 - b2**t)


def rectification(t: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    rho_inf, rho_t = 2 / (1 - b2) - 1, rho(t, b2)
    return ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5


def state_keys(family: str, group: Mapping, started: bool) -> list[str]:
    """The state keys a solo torch optimizer of this rule holds for one parameter."""
    if family == "sgd":
        return ["momentum_buffer"] if started and group["momentum"] != 0 else []
    if family == "adagrad":
        return ["step", "sum"]
    if not started:
        return []
    if family in ("adam", "radam"):
        return ["step", "exp_avg", "exp_avg_sq"]
    if family == "nadam":
        return ["step", "mu_product", "exp_avg", "exp_avg_sq"]
    if family == "quickprop":
        return ["prev_step", "prev_slope"]
    if family == "adamax":
        return ["step", "exp_avg", "exp_inf"]
    if family == "adadelta":
        return ["step", "square_avg", "acc_delta"]
    if family == "rprop":
        return ["step", "prev", "step_size"]
    return (["step", "square_avg"] + ["momentum_buffer"] * (group["momentum"] > 0)
            + ["grad_avg"] * bool(group["centered"]))


def _decayed(opt, p, g, h):
    """Weight decay as torch applies it before a rule's own arithmetic: decoupled, p·(1 − lr·wd)
    (AdamW, `decoupled_weight_decay`; 1 for the other members), then L2, g + wd·p (0 for
    decoupled members)."""
    if opt.any.get("decay", False):
        p = p * h["decay"]
    if opt.any["wd"]:
        g = g.addcmul(p, h["wd"])
    return p, g


def _moments(g, h, s):
    """Adam's running averages of g and g² (Adam, RAdam, NAdam)."""
    exp_avg = s["exp_avg"].lerp(g, h["one_minus_beta1"])
    exp_avg_sq = s["exp_avg_sq"] * h["beta2"]
    exp_avg_sq.addcmul_(g * h["one_minus_beta2"], g)
    return exp_avg, exp_avg_sq


def _neg_step(opt):
    """−lr/(1 − β₁ᵗ): the bias-corrected step of Adam and Adamax."""
    return opt.per_step(lambda t, lr, b1: -(lr / (1 - b1**t)), "lr", "beta1")


def sgd(opt, p, g, h, s, into=None):
    p, g = _decayed(opt, p, g, h)
    out = {}
    if opt.any["has_mom"]:
        first = opt.steps == 0  # torch starts the buffer as a copy of g
        buf = torch.where(first, g, (s["momentum_buffer"] * h["mom"]).addcmul_(g, h["one_minus_damp"]))
        out["momentum_buffer"] = buf
        d = torch.where(h["nesterov"], g.addcmul(buf, h["mom"]), buf) if opt.any["nesterov"] else buf
        if opt.any["no_has_mom"]:
            d = torch.where(h["has_mom"], d, g)  # momentum 0: torch uses g itself
    else:
        d = g
    out["param"] = torch.addcmul(p, d, h["neg_lr"], out=into)
    return out


def adam(opt, p, g, h, s, into=None):
    p, g = _decayed(opt, p, g, h)
    exp_avg, exp_avg_sq = _moments(g, h, s)
    neg_step = _neg_step(opt)
    bc2_sqrt = opt.per_step(lambda t, b2: (1 - b2**t).sqrt(), "beta2")
    denom = (exp_avg_sq.sqrt() / bc2_sqrt).add_(h["eps"])
    return {"param": torch.addcdiv(p, exp_avg * neg_step, denom, out=into), "exp_avg": exp_avg,
            "exp_avg_sq": exp_avg_sq}


def rmsprop(opt, p, g, h, s, into=None):
    p, g = _decayed(opt, p, g, h)
    out = {"square_avg": s["square_avg"] * h["alpha"]}
    out["square_avg"].addcmul_(g * h["one_minus_alpha"], g)
    if opt.any["centered"]:
        out["grad_avg"] = s["grad_avg"].lerp(g, h["one_minus_alpha"])
        centre = torch.where(h["centered"], out["grad_avg"], 0.0)
        avg = out["square_avg"].addcmul(centre, centre, value=-1).sqrt_()
    else:
        avg = out["square_avg"].sqrt()
    avg.add_(h["eps"])
    plain = p.addcdiv(g * h["neg_lr"], avg) if opt.any["no_has_mom"] else None
    if opt.any["has_mom"]:
        out["momentum_buffer"] = (s["momentum_buffer"] * h["mom"]).addcdiv_(g, avg)
        out["param"] = p.addcmul(out["momentum_buffer"], h["neg_lr"])
        if plain is not None:  # momentum-0 members
            out["param"] = torch.where(h["has_mom"], out["param"], plain)
    else:
        out["param"] = plain
    return out


def adagrad(opt, p, g, h, s, into=None):
    p, g = _decayed(opt, p, g, h)
    total = s["sum"].addcmul(g, g)
    neg_clr = opt.per_step(lambda t, lr, decay: -(lr / (1 + (t - 1) * decay)), "lr", "lr_decay")
    return {"param": torch.addcdiv(p, g * neg_clr, total.sqrt().add_(h["eps"]), out=into), "sum": total}


def adamax(opt, p, g, h, s, into=None):
    p, g = _decayed(opt, p, g, h)
    exp_avg = s["exp_avg"].lerp(g, h["one_minus_beta1"])
    exp_inf = torch.maximum(s["exp_inf"] * h["beta2"], g.abs().add_(h["eps"]))
    return {"param": torch.addcdiv(p, exp_avg * _neg_step(opt), exp_inf, out=into), "exp_avg": exp_avg,
            "exp_inf": exp_inf}


def rprop(opt, p, g, h, s, into=None):
    step_size = torch.where(opt.steps == 0, h["lr"], s["step_size"])  # torch starts Δ at the lr of step 1
    sign = g.mul(s["prev"]).sign()
    factor = torch.where(sign > 0, h["eta_plus"], torch.where(sign < 0, h["eta_minus"], 1.0))
    step_size = (step_size * factor).clamp_(min=h["step_min"], max=h["step_max"])
    g = torch.where(factor == h["eta_minus"], 0.0, g)  # a sign change: no step, and no sign to compare next
    return {"param": torch.addcmul(p, g.sign(), step_size, value=-1, out=into), "prev": g,
            "step_size": step_size}


def radam(opt, p, g, h, s, into=None):
    p, g = _decayed(opt, p, g, h)
    exp_avg, exp_avg_sq = _moments(g, h, s)
    corrected = exp_avg / opt.per_step(lambda t, b1: 1 - b1**t, "beta1") * h["lr"]
    rectified = opt.per_step(lambda t, b2: rho(t, b2) > 5, "beta2") != 0  # the variance is tractable
    rect = opt.per_step(rectification, "beta2")  # NaN where not rectified: never selected
    adaptive = exp_avg_sq.sqrt().add_(h["eps"]).reciprocal() * opt.per_step(lambda t, b2: (1 - b2**t) ** 0.5,
                                                                             "beta2")
    update = torch.where(rectified, corrected * adaptive * rect, corrected)
    return {"param": torch.sub(p, update, out=into), "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}


def adadelta(opt, p, g, h, s, into=None):
    p, g = _decayed(opt, p, g, h)
    square_avg = (s["square_avg"] * h["rho"]).addcmul_(g * h["one_minus_rho"], g)
    delta = s["acc_delta"].add(h["eps"]).sqrt_().div_(square_avg.add(h["eps"]).sqrt_()).mul_(g)
    acc_delta = (s["acc_delta"] * h["rho"]).addcmul_(delta * h["one_minus_rho"], delta)
    return {"param": torch.addcmul(p, delta, h["neg_lr"], out=into), "square_avg": square_avg,
            "acc_delta": acc_delta}


def nadam(opt, p, g, h, s, into=None):
    """NAdam (Dozat 2016): Adam's moments with Nesterov momentum scheduled by μₜ = β₁(1 − ½·0.96^(t·ψ)):
    p ← p − lr(1−μₜ)/(1−Πμ)·g/d − lr·μₜ₊₁/(1−Πμ·μₜ₊₁)·m/d, d = √(v/(1−β₂ᵗ)) + ε. Πμ is kept in
    float32, as torch keeps it; the factors are computed in float64 from it, as torch's Python floats."""
    p, g = _decayed(opt, p, g, h)
    f64 = torch.float64
    mu = opt.per_step(lambda t, b1, psi: b1 * (1.0 - 0.5 * (0.96 ** (t * psi))), "beta1", "momentum_decay", dtype=f64)
    mu_next = opt.per_step(lambda t, b1, psi: b1 * (1.0 - 0.5 * (0.96 ** ((t + 1) * psi))), "beta1", "momentum_decay",
                           dtype=f64)
    lr = opt.exact("lr")
    mu_product = s["mu_product"] * mu.to(s["mu_product"].dtype)
    exp_avg, exp_avg_sq = _moments(g, h, s)
    denom = (exp_avg_sq / opt.per_step(lambda t, b2: 1 - b2**t, "beta2")).sqrt_().add_(h["eps"])
    product = mu_product.to(f64)
    on_grad = (-lr * (1.0 - mu) / (1.0 - product)).to(p.dtype)
    on_avg = ((-lr * mu_next) / (1.0 - product * mu_next)).to(p.dtype)
    p = torch.addcdiv(p, g * on_grad, denom)
    return {"param": torch.addcdiv(p, exp_avg * on_avg, denom, out=into), "exp_avg": exp_avg,
            "exp_avg_sq": exp_avg_sq, "mu_product": mu_product}


def quickprop(opt, p, g, h, s, into=None):
    """optlab's QuickProp (optlab/optim.py), the same arithmetic on [K, N] rows."""
    slope = g + h["decay"] * p
    step = quickprop_step(slope, s["prev_step"], s["prev_slope"], h["neg_lr"], h["mu"], h["shrink"])
    return {"param": torch.add(p, step, out=into), "prev_step": step, "prev_slope": slope}


RULES = {"sgd": sgd, "adam": adam, "rmsprop": rmsprop, "adagrad": adagrad, "adamax": adamax, "rprop": rprop,
         "radam": radam, "adadelta": adadelta, "nadam": nadam,
         "quickprop": quickprop}
