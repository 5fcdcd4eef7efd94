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

from optlab.training.update_rules import (
    BUFFERS,
    FAMILY,
    RULES,
    SUPPORTED,
    hypers,
    state_keys,
)

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


class BatchedOptimizer:
    r"""The update rules of SGD, Adam/AdamW, RMSprop, Adagrad, Adamax, Adadelta, Rprop, RAdam,
    NAdam and QuickProp (optlab/training/update_rules.py) on [K, N] rows, matching torch.optim (single-tensor
    path) member by member (bitwise, on CPU in torch 2.13). Per element, with g = grad and
    p = params:

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
    NAdam:    see `nadam` in optlab/training/update_rules.py
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
        families = {FAMILY.get(type(m)) for m in members}
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
        per = [[hypers(self.family, g) for g in m.param_groups] for m in self.members]
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

    def exact(self, name: str) -> torch.Tensor:
        """A hyperparameter in float64, expanded: a rule that computes its factors as torch does
        in Python floats (NAdam) reads it so."""
        return self._expand(*self._c64[name])

    def per_step(self, fn, *names: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """A step-dependent factor fn(steps, *hyperparameters) in float64, cast (to the
        parameters' dtype, or `dtype`) and expanded."""
        compact = [self._c64[n][0] for n in names]
        uniform = all(self._c64[n][1] for n in names)
        t = self.steps + 1
        return self._expand(fn(t, *compact).to(dtype or self.flat.dtype), uniform)

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
        new = RULES[self.family](self, self.flat.detach(), grad, self.h, self.state,
                                               self.flat if m is None else None)
        keep = (lambda n, o: n) if m is None else (lambda n, o: torch.where(m, n, o))
        param = new.pop("param")
        if param is not self.flat:
            self.flat.copy_(keep(param, self.flat))
        for name, value in new.items():
            self.state[name] = keep(value, self.state[name])
        self.steps = self.steps + (1 if m is None else m)

    @torch.no_grad()
    def copy_row(self, src: int, dst: int) -> None:
        """Member dst's optimizer state becomes member src's (every buffer's row, the step count)."""
        for buffer in self.state.values():
            buffer[dst] = buffer[src]
        self.steps[dst] = self.steps[src]

    # -- checkpoints ------------------------------------------------------------------------------

    def _slots(self):
        """(member k, its optimizer, param, group, offset) for every parameter."""
        for k, (m, params) in enumerate(zip(self.members, self.member_params)):
            group_of = {id(p): g for g in m.param_groups for p in g["params"]}
            offset = 0
            for p, n in zip(params, self.numels):
                yield k, m, p, group_of[id(p)], offset
                offset += n

    def export(self) -> None:
        """Write the batched state into members[k].state in torch's own format (same keys, dtypes
        and shapes as a solo optimizer after the same steps), so that members[k].state_dict() is
        an ordinary optimizer checkpoint."""
        steps = self.steps.view(-1).tolist()
        for k, m, p, group, offset in self._slots():
            m.state.pop(p, None)
            keys = state_keys(self.family, group, steps[k] > 0)
            if not keys:
                continue
            state, n = {}, p.numel()
            for key in keys:
                if key in ("step", "mu_product"):  # a number per parameter (NAdam's product of its momenta)
                    fused = bool(group.get("fused"))
                    wide = torch.get_default_dtype() == torch.float64 and not fused
                    dtype = torch.float64 if wide else torch.float32  # as torch's _get_scalar_dtype
                    on_device = fused or group.get("capturable", False)
                    value = steps[k] if key == "step" else float(self.state[key][k, offset])
                    state[key] = torch.tensor(value, dtype=dtype, device=p.device if on_device else None)
                else:
                    row = self.state[key][k, offset : offset + n]
                    state[key] = row.view_as(p).to(device=p.device, dtype=p.dtype, copy=True)
            m.state[p] = state

    def load(self) -> None:
        """Read members[k].state (e.g. after members[k].load_state_dict(saved)) into the batched
        state; an empty state is a fresh optimizer (Adagrad: sums at initial_accumulator_value)."""
        K, N = self.flat.shape
        like = {"device": self.flat.device, "dtype": self.flat.dtype}
        found = {name: [] for name in BUFFERS[self.family]}  # (member, offset, values)
        steps = [0.0] * K
        for k, m, p, group, offset in self._slots():
            state = m.state.get(p, {})
            if "step" in state:
                steps[k] = float(state["step"])
            elif "momentum_buffer" in state or "prev_step" in state:  # SGD, QuickProp keep no count: a buffer
                # means it has stepped
                steps[k] = max(steps[k], 1.0)
            for name, pieces in found.items():
                value = state.get(name)
                if value is None and name == "sum":
                    value = torch.full_like(p, float(group["initial_accumulator_value"]))
                if value is None and name == "mu_product":
                    value = torch.ones_like(p)
                if value is not None:
                    pieces.append((k, offset, value.detach().reshape(-1).expand(p.numel())))
        # buffers no member holds yet start as zeros when a rule first asks for them
        self.state = _Cache(lambda name: torch.zeros(K, N, **like))
        for name, pieces in found.items():
            if pieces:
                buffer = self.state[name]
                for k, offset, value in pieces:
                    buffer[k, offset : offset + len(value)] = value
        self.steps = torch.tensor(steps, dtype=torch.float64, device="cpu").view(K, 1).to(self.flat.device)
