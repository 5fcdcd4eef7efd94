"""K same-architecture models ("members") trained as one stacked computation: each torch.optim
update rule applied once to a [K, N] tensor, row k = member k's parameters, so one batched step
costs a handful of whole-tensor kernels instead of K optimizers' worth of per-parameter ones.

Each member keeps an ordinary torch optimizer over its own model's parameters. It is never
stepped: it holds that member's hyperparameters (its schedulers change them), and it is the
checkpoint format (`export` writes the batched state into it, `load` reads it back).

Hyperparameters become per-member tensors: [K, 1] when all of a member's param groups agree,
else [K, N] (typically weight decay, exempt for biases), expanded from [K, G] per-group values
with one precomputed [1, N] (or [K, N]) mask per group. Flags that torch branches on per
group (SGD momentum = 0 vs > 0, nesterov, RMSprop centered, Adam vs AdamW) are per-member
tensors too, so such members share one BatchedOptimizer; only `maximize` and `amsgrad` are
refused. Step counts are per member ([K, 1], on the device): a member frozen by `active` keeps
its own count, as a solo optimizer that stopped stepping would.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

import torch

SUPPORTED = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop, torch.optim.Adagrad,
             torch.optim.Adamax, torch.optim.Adadelta, torch.optim.Rprop, torch.optim.RAdam)


# rule family of each class (AdamW is Adam with decoupled_weight_decay=True), and its [K, N] buffers
_FAMILY = {torch.optim.SGD: "sgd", torch.optim.Adam: "adam", torch.optim.AdamW: "adam",
           torch.optim.RMSprop: "rmsprop", torch.optim.Adagrad: "adagrad", torch.optim.Adamax: "adamax",
           torch.optim.Adadelta: "adadelta", torch.optim.Rprop: "rprop",
           torch.optim.RAdam: "radam"}


_BUFFERS = {"sgd": ("momentum_buffer",), "adam": ("exp_avg", "exp_avg_sq"),
            "rmsprop": ("square_avg", "momentum_buffer", "grad_avg"), "adagrad": ("sum",),
            "adamax": ("exp_avg", "exp_inf"), "adadelta": ("square_avg", "acc_delta"), "rprop": ("prev", "step_size"),
            "radam": ("exp_avg", "exp_avg_sq")}


# flags that would need another buffer or another shape of rule
_REFUSED = ("maximize", "amsgrad")


class _Cache(dict):
    """A dict that fills a missing entry with make(key): lazily built tensors."""

    def __init__(self, make, items=()):
        super().__init__(items)
        self.make = make

    def __missing__(self, key):
        value = self[key] = self.make(key)
        return value


def _refusal(cls: type, settings: Mapping) -> str | None:
    if cls not in SUPPORTED:
        where = "torch.optim" if cls.__module__.startswith("torch.optim") else cls.__module__
        return f"{where}.{cls.__qualname__} has no batched rule"
    for flag in _REFUSED:
        if settings.get(flag, False):
            return f"{flag}=true"
    return None


def unsupported(optimizer_cfg: Mapping) -> str | None:
    """Why an optimizer config (`_target_` plus hyperparameters) cannot be batched, or None."""
    target = str(optimizer_cfg.get("_target_", ""))
    module, _, name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except Exception:  # noqa: BLE001 - whatever a user's module raises, it is not one of these
        return f"{target or 'a config without _target_'} has no batched rule"
    return _refusal(cls, optimizer_cfg)


def _hypers(family: str, group: Mapping) -> dict[str, float]:
    """One param group's hyperparameters in the form the rule uses (Python floats, so derived
    values like 1 - beta are rounded exactly as torch rounds them)."""
    lr, wd = float(group["lr"]), float(group.get("weight_decay", 0.0))  # Rprop has none
    if family == "sgd":
        mom = float(group["momentum"])
        return {"neg_lr": -lr, "wd": wd, "mom": mom, "one_minus_damp": 1 - float(group["dampening"]),
                "nesterov": float(bool(group["nesterov"])), "has_mom": float(mom != 0)}
    if family in ("adam", "radam"):
        b1, b2 = (float(b) for b in group["betas"])
        decoupled = bool(group.get("decoupled_weight_decay", False))
        return {"lr": lr, "beta1": b1, "beta2": b2, "one_minus_beta1": 1 - b1, "one_minus_beta2": 1 - b2,
                "eps": float(group["eps"]), "wd": 0.0 if decoupled else wd,
                "decay": 1 - lr * wd if decoupled else 1.0}
    if family == "rmsprop":
        alpha = float(group["alpha"])
        return {"neg_lr": -lr, "wd": wd, "alpha": alpha, "one_minus_alpha": 1 - alpha,
                "eps": float(group["eps"]),
                "mom": float(group["momentum"]), "has_mom": float(group["momentum"] > 0),
                "centered": float(bool(group["centered"]))}
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


def _rho(t: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """RAdam's length of the approximated simple moving average after t steps."""
    return (2 / (1 - b2) - 1) - 2 * t * (b2**t) / (1 - b2**t)


def _rectification(t: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    rho_inf, rho_t = 2 / (1 - b2) - 1, _rho(t, b2)
    return ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5


class BatchedOptimizer:
    r"""The update rules of SGD, Adam/AdamW, RMSprop, Adagrad, Adamax, Adadelta, Rprop and RAdam on [K, N] rows, matching
    torch.optim (single-tensor path) member by member (bitwise, on CPU in torch 2.13). Per element, with
    g = grad and p = params:

    SGD:      g ← g + wd·p;  b ← g (first step) else mom·b + (1−dampening)·g;
              d ← g + mom·b (nesterov) else b, or g when mom = 0;  p ← p − lr·d
    Adam(W):  AdamW: p ← p·(1 − lr·wd); Adam: g ← g + wd·p;
              m ← lerp(m, g, 1−β₁);  v ← β₂v + (1−β₂)g²;  p ← p − lr/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε)
    RMSprop:  g ← g + wd·p;  v ← αv + (1−α)g²;
              centered: ḡ ← lerp(ḡ, g, 1−α), a ← √(v − ḡ²) + ε, else a ← √v + ε;
              mom > 0: b ← mom·b + g/a, p ← p − lr·b; else p ← p − lr·g/a
    Adagrad:  g ← g + wd·p;  s ← s + g² (s₀ = initial_accumulator_value);
              p ← p − lr/(1 + (t−1)·lr_decay) · g/(√s + ε)
    Adamax:   g ← g + wd·p;  m ← lerp(m, g, 1−β₁);  u ← max(β₂u, |g| + ε);  p ← p − lr/(1−β₁ᵗ) · m/u
    Rprop:    s ← sign(g·g_prev);  Δ ← clamp(Δ·(η₊ if s > 0, η₋ if s < 0, else 1), Δmin, Δmax) (Δ₀ = lr);
              g ← 0 where s < 0;  p ← p − sign(g)·Δ;  g_prev ← g
    RAdam:    as Adam's moments (and its two decays); ρ∞ = 2/(1−β₂) − 1, ρₜ = ρ∞ − 2tβ₂ᵗ/(1−β₂ᵗ);
              p ← p − lr·m/(1−β₁ᵗ) · (r·√(1−β₂ᵗ)/(√v + ε) if ρₜ > 5 else 1), r the rectification
    Adadelta: g ← g + wd·p;  v ← ρv + (1−ρ)g²;  d ← √(a + ε)/√(v + ε) · g;  a ← ρa + (1−ρ)d²;  p ← p − lr·d

    The step-dependent factors (bias corrections, Adagrad's decayed lr) are computed in float64
    on the device from the per-member step counts, as torch computes them in Python floats.
    """

    def __init__(self, flat: torch.Tensor, members: list[torch.optim.Optimizer],
                 member_params: list[list[torch.nn.Parameter]]):
        K, N = flat.shape
        if not (len(members) == len(member_params) == K):
            raise ValueError(f"flat has {K} rows but there are {len(members)} optimizers "
                             f"and {len(member_params)} parameter lists")
        families = {_FAMILY.get(type(m)) for m in members}
        for m in members:
            why = next(filter(None, (_refusal(type(m), g) for g in [{}, *m.param_groups])), None)
            if why:
                raise ValueError(f"cannot batch this optimizer: {why}")
        if len(families) != 1:
            raise ValueError(f"members mix update rules ({sorted(families)}); batch each rule separately")
        self.flat, self.members, self.member_params = flat, members, member_params
        self.family = families.pop()
        self.numels = [p.numel() for p in member_params[0]]
        if sum(self.numels) != N:
            raise ValueError(f"member 0's parameters hold {sum(self.numels)} numbers but flat rows hold {N}")
        # group of every element, per member; one mask per group g ≥ 1 ([1, N] when members agree)
        gids = []
        for k, (m, params) in enumerate(zip(members, member_params)):
            if [p.numel() for p in params] != self.numels:
                raise ValueError(f"member {k}'s parameters differ in shape from member 0's")
            of = {id(p): g for g, group in enumerate(m.param_groups) for p in group["params"]}
            if any(id(p) not in of for p in params) or len(of) != len(params):
                raise ValueError(f"member {k}'s optimizer must hold exactly that member's parameters")
            gids.append([of[id(p)] for p in params])
        self.groups = max(len(m.param_groups) for m in members)
        same = all(g == gids[0] for g in gids)
        gid = torch.tensor(gids[:1] if same else gids, device="cpu")
        gid = gid.repeat_interleave(torch.tensor(self.numels, device="cpu"), dim=1)
        self._masks = [(g, (gid == g).to(flat.device)) for g in range(1, self.groups)]
        self._key = None  # the hyperparameters the device tensors were built from
        self.load()

    # -- hyperparameters --------------------------------------------------------------------------

    def _refresh(self) -> None:
        """Read every member's hyperparameters; rebuild the device tensors only if one changed
        (schedulers change lr, momentum, betas), without a host sync."""
        per = [[_hypers(self.family, g) for g in m.param_groups] for m in self.members]
        names = list(per[0][0])
        # [name][member][group], short groups padded with the member's group 0
        values = [[[gr[n] for gr in groups] + [groups[0][n]] * (self.groups - len(groups)) for groups in per]
                  for n in names]
        key = tuple(v for name in values for row in name for v in row)
        if key == self._key:
            return
        self._key = key
        host = torch.tensor(values, dtype=torch.float64, device="cpu")  # [H, K, G]
        if self.flat.is_cuda:
            host = host.pin_memory()
        dev = host.to(self.flat.device, non_blocking=True)
        self._c64, self.any = {}, {}
        for i, name in enumerate(names):
            self._c64[name] = (dev[i], all(len(set(row)) == 1 for row in values[i]))
            # Python flags that skip kernels no member needs: a value that isn't neutral
            neutral = 1.0 if name == "decay" else 0.0
            self.any[name] = any(v != neutral for row in values[i] for v in row)
        if "has_mom" in names:  # some member without momentum
            self.any["no_has_mom"] = not all(v for row in values[names.index("has_mom")] for v in row)
        self.h = _Cache(self._hyper)  # [K, 1] or [K, N] per hyperparameter, built when first used

    def _hyper(self, name: str) -> torch.Tensor:
        value = self._expand(self._c64[name][0].to(self.flat.dtype), self._c64[name][1])
        return value != 0 if name in ("nesterov", "has_mom", "centered") else value

    def _expand(self, compact: torch.Tensor, uniform: bool) -> torch.Tensor:
        """[K, G] per-group values → [K, 1] (uniform across groups) or [K, N]."""
        if uniform:
            return compact[:, :1]
        out = compact[:, :1].expand(self.flat.shape)
        for g, mask in self._masks:
            out = torch.where(mask, compact[:, g : g + 1], out)
        return out

    def _per_step(self, fn, *names: str) -> torch.Tensor:
        """A step-dependent factor fn(steps, *hyperparameters) in float64, cast and expanded."""
        compact = [self._c64[n][0] for n in names]
        uniform = all(self._c64[n][1] for n in names)
        t = self.steps + 1
        return self._expand(fn(t, *compact).to(self.flat.dtype), uniform)

    # -- the step ---------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, active: torch.Tensor | None = None) -> None:
        """One update of every member from flat.grad. Members where the bool tensor active[k] is
        False are left exactly unchanged (their rows of flat and of every state buffer)."""
        grad = self.flat.grad
        if grad is None:
            return
        self._refresh()
        m = None if active is None else active.to(self.flat.device, non_blocking=True).view(-1, 1)
        # with every member stepping, the parameter update is written straight into flat
        new = getattr(self, "_" + self.family)(self.flat.detach(), grad, self.h, self.state,
                                               self.flat if m is None else None)
        keep = (lambda n, o: n) if m is None else (lambda n, o: torch.where(m, n, o))
        param = new.pop("param")
        if param is not self.flat:
            self.flat.copy_(keep(param, self.flat))
        for name, value in new.items():
            self.state[name] = keep(value, self.state[name])
        self.steps = self.steps + (1 if m is None else m)

    def _sgd(self, p, g, h, s, into=None):
        if self.any["wd"]:
            g = g.addcmul(p, h["wd"])
        out = {}
        if self.any["has_mom"]:
            first = self.steps == 0  # torch starts the buffer as a copy of g
            buf = torch.where(first, g, (s["momentum_buffer"] * h["mom"]).addcmul_(g, h["one_minus_damp"]))
            out["momentum_buffer"] = buf
            d = torch.where(h["nesterov"], g.addcmul(buf, h["mom"]), buf) if self.any["nesterov"] else buf
            if self.any["no_has_mom"]:
                d = torch.where(h["has_mom"], d, g)  # momentum 0: torch uses g itself
        else:
            d = g
        out["param"] = torch.addcmul(p, d, h["neg_lr"], out=into)
        return out

    def _adam(self, p, g, h, s, into=None):
        if self.any["decay"]:
            p = p * h["decay"]  # AdamW's decoupled decay (1.0 for Adam members)
        if self.any["wd"]:
            g = g.addcmul(p, h["wd"])  # Adam's L2 decay (0 for AdamW members)
        exp_avg = s["exp_avg"].lerp(g, h["one_minus_beta1"])
        exp_avg_sq = s["exp_avg_sq"] * h["beta2"]
        exp_avg_sq.addcmul_(g * h["one_minus_beta2"], g)
        neg_step = self._per_step(lambda t, lr, b1: -(lr / (1 - b1**t)), "lr", "beta1")
        bc2_sqrt = self._per_step(lambda t, b2: (1 - b2**t).sqrt(), "beta2")
        denom = (exp_avg_sq.sqrt() / bc2_sqrt).add_(h["eps"])
        return {"param": torch.addcdiv(p, exp_avg * neg_step, denom, out=into), "exp_avg": exp_avg,
                "exp_avg_sq": exp_avg_sq}

    def _rmsprop(self, p, g, h, s, into=None):
        if self.any["wd"]:
            g = g.addcmul(p, h["wd"])
        out = {"square_avg": s["square_avg"] * h["alpha"]}
        out["square_avg"].addcmul_(g * h["one_minus_alpha"], g)
        if self.any["centered"]:
            out["grad_avg"] = s["grad_avg"].lerp(g, h["one_minus_alpha"])
            centre = torch.where(h["centered"], out["grad_avg"], 0.0)
            avg = out["square_avg"].addcmul(centre, centre, value=-1).sqrt_()
        else:
            avg = out["square_avg"].sqrt()
        avg.add_(h["eps"])
        plain = p.addcdiv(g * h["neg_lr"], avg) if self.any["no_has_mom"] else None
        if self.any["has_mom"]:
            out["momentum_buffer"] = (s["momentum_buffer"] * h["mom"]).addcdiv_(g, avg)
            out["param"] = p.addcmul(out["momentum_buffer"], h["neg_lr"])
            if plain is not None:  # momentum-0 members
                out["param"] = torch.where(h["has_mom"], out["param"], plain)
        else:
            out["param"] = plain
        return out

    def _adagrad(self, p, g, h, s, into=None):
        if self.any["wd"]:
            g = g.addcmul(p, h["wd"])
        total = s["sum"].addcmul(g, g)
        neg_clr = self._per_step(lambda t, lr, decay: -(lr / (1 + (t - 1) * decay)), "lr", "lr_decay")
        return {"param": torch.addcdiv(p, g * neg_clr, total.sqrt().add_(h["eps"]), out=into), "sum": total}

    def _adamax(self, p, g, h, s, into=None):
        if self.any["wd"]:
            g = g.addcmul(p, h["wd"])
        exp_avg = s["exp_avg"].lerp(g, h["one_minus_beta1"])
        exp_inf = torch.maximum(s["exp_inf"] * h["beta2"], g.abs().add_(h["eps"]))
        neg_clr = self._per_step(lambda t, lr, b1: -(lr / (1 - b1**t)), "lr", "beta1")
        return {"param": torch.addcdiv(p, exp_avg * neg_clr, exp_inf, out=into), "exp_avg": exp_avg,
                "exp_inf": exp_inf}

    def _rprop(self, p, g, h, s, into=None):
        step_size = torch.where(self.steps == 0, h["lr"], s["step_size"])  # torch starts Δ at the lr of step 1
        sign = g.mul(s["prev"]).sign()
        factor = torch.where(sign > 0, h["eta_plus"], torch.where(sign < 0, h["eta_minus"], 1.0))
        step_size = (step_size * factor).clamp_(min=h["step_min"], max=h["step_max"])
        g = torch.where(factor == h["eta_minus"], 0.0, g)  # a sign change: no step, and no sign to compare next
        return {"param": torch.addcmul(p, g.sign(), step_size, value=-1, out=into), "prev": g,
                "step_size": step_size}

    def _radam(self, p, g, h, s, into=None):
        if self.any["decay"]:
            p = p * h["decay"]  # decoupled_weight_decay=true
        if self.any["wd"]:
            g = g.addcmul(p, h["wd"])
        exp_avg = s["exp_avg"].lerp(g, h["one_minus_beta1"])
        exp_avg_sq = s["exp_avg_sq"] * h["beta2"]
        exp_avg_sq.addcmul_(g * h["one_minus_beta2"], g)
        corrected = exp_avg / self._per_step(lambda t, b1: 1 - b1**t, "beta1") * h["lr"]
        rectified = self._per_step(lambda t, b2: _rho(t, b2) > 5, "beta2") != 0  # the variance is tractable
        rect = self._per_step(_rectification, "beta2")  # NaN where not rectified: never selected
        adaptive = exp_avg_sq.sqrt().add_(h["eps"]).reciprocal() * self._per_step(lambda t, b2: (1 - b2**t) ** 0.5,
                                                                                 "beta2")
        update = torch.where(rectified, corrected * adaptive * rect, corrected)
        return {"param": torch.sub(p, update, out=into), "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}

    def _adadelta(self, p, g, h, s, into=None):
        if self.any["wd"]:
            g = g.addcmul(p, h["wd"])
        square_avg = (s["square_avg"] * h["rho"]).addcmul_(g * h["one_minus_rho"], g)
        delta = s["acc_delta"].add(h["eps"]).sqrt_().div_(square_avg.add(h["eps"]).sqrt_()).mul_(g)
        acc_delta = (s["acc_delta"] * h["rho"]).addcmul_(delta * h["one_minus_rho"], delta)
        return {"param": torch.addcmul(p, delta, h["neg_lr"], out=into), "square_avg": square_avg,
                "acc_delta": acc_delta}

    # -- checkpoints ------------------------------------------------------------------------------

    def _slots(self):
        """(member k, its optimizer, param, group, offset) for every parameter."""
        for k, (m, params) in enumerate(zip(self.members, self.member_params)):
            group_of = {id(p): g for g in m.param_groups for p in g["params"]}
            offset = 0
            for p, n in zip(params, self.numels):
                yield k, m, p, group_of[id(p)], offset
                offset += n

    def _keys(self, group: Mapping, started: bool) -> list[str]:
        """The state keys a solo torch optimizer of this rule holds for one parameter."""
        if self.family == "sgd":
            return ["momentum_buffer"] if started and group["momentum"] != 0 else []
        if self.family == "adagrad":
            return ["step", "sum"]
        if not started:
            return []
        if self.family in ("adam", "radam"):
            return ["step", "exp_avg", "exp_avg_sq"]
        if self.family == "adamax":
            return ["step", "exp_avg", "exp_inf"]
        if self.family == "adadelta":
            return ["step", "square_avg", "acc_delta"]
        if self.family == "rprop":
            return ["step", "prev", "step_size"]
        return (["step", "square_avg"] + ["momentum_buffer"] * (group["momentum"] > 0)
                + ["grad_avg"] * bool(group["centered"]))

    def export(self) -> None:
        """Write the batched state into members[k].state in torch's own format (same keys, dtypes
        and shapes as a solo optimizer after the same steps), so that members[k].state_dict() is
        an ordinary optimizer checkpoint."""
        steps = self.steps.view(-1).tolist()
        for k, m, p, group, offset in self._slots():
            m.state.pop(p, None)
            keys = self._keys(group, steps[k] > 0)
            if not keys:
                continue
            state, n = {}, p.numel()
            for key in keys:
                if key == "step":
                    fused = bool(group.get("fused"))
                    wide = torch.get_default_dtype() == torch.float64 and not fused
                    dtype = torch.float64 if wide else torch.float32  # as torch's _get_scalar_dtype
                    on_device = fused or group.get("capturable", False)
                    state[key] = torch.tensor(steps[k], dtype=dtype, device=p.device if on_device else None)
                else:
                    row = self.state[key][k, offset : offset + n]
                    state[key] = row.view_as(p).to(device=p.device, dtype=p.dtype, copy=True)
            m.state[p] = state

    def load(self) -> None:
        """Read members[k].state (e.g. after members[k].load_state_dict(saved)) into the batched
        state; an empty state is a fresh optimizer (Adagrad: sums at initial_accumulator_value)."""
        K, N = self.flat.shape
        like = {"device": self.flat.device, "dtype": self.flat.dtype}
        found = {name: [] for name in _BUFFERS[self.family]}  # (member, offset, values)
        steps = [0.0] * K
        for k, m, p, group, offset in self._slots():
            state = m.state.get(p, {})
            if "step" in state:
                steps[k] = float(state["step"])
            elif "momentum_buffer" in state:  # SGD keeps no count; a buffer means it has stepped
                steps[k] = max(steps[k], 1.0)
            for name, pieces in found.items():
                value = state.get(name)
                if value is None and name == "sum":
                    value = torch.full_like(p, float(group["initial_accumulator_value"]))
                if value is not None:
                    pieces.append((k, offset, value.detach().reshape(-1)))
        # buffers no member holds yet start as zeros when a rule first asks for them
        self.state = _Cache(lambda name: torch.zeros(K, N, **like))
        for name, pieces in found.items():
            if pieces:
                buffer = self.state[name]
                for k, offset, value in pieces:
                    buffer[k, offset : offset + len(value)] = value
        self.steps = torch.tensor(steps, dtype=torch.float64, device="cpu").view(K, 1).to(self.flat.device)
