"""The `Stacked` engine: K members of a vectorized sweep trained as one model, each with its own
weights, optimizer state, schedule, dropout and batch order, at the cost of one batched pass.
"""

from __future__ import annotations

import time
from functools import partial

import torch
from omegaconf import DictConfig
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from optlab import models, schedules
from optlab.init import initialize
from optlab.optim import build_optimizer, decay_groups
from optlab.training import data as dataset
from optlab.training import minibatch, rng
from optlab.training.batched import BatchedOptimizer
from optlab.training.callbacks import StepProbe, snapshot
from optlab.training.record import Epoch


class Linear(torch.autograd.Function):
    """x·wᵀ + b for K members at once: [K, B, in] (or one [B, in] for all) → [K, B, out], in
    the orientation nn.Linear computes it. Written by hand for its backward: ∂w = gyᵀ·x comes
    out contiguous [K, out, in], as torch's linear computes it, where autograd's baddbmm gives
    the transpose of xᵀ·gy, whose copy into `flat.grad` is a slow transposing one."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        if x.dim() == 2:
            return torch.matmul(x, w.transpose(1, 2)) + b[:, None]
        return torch.baddbmm(b[:, None], x, w.transpose(1, 2))

    @staticmethod
    def backward(ctx, gy: torch.Tensor):
        x, w = ctx.saved_tensors
        gx = torch.matmul(gy, w) if ctx.needs_input_grad[0] else None
        return gx, torch.matmul(gy.transpose(1, 2), x), gy.sum(1)


class StackedMLP(nn.Module):
    """K MLPs of one shape as one module. Member k's parameters are row k of one tensor `flat`
    [K, N] (in `parameters()` order), so that the optimizer state, the update and the per-step
    norms are [K, N] too and each costs a few whole-tensor kernels. Each layer's parameters
    are leaves that view `flat` ([K, *shape]), whose gradients `backward` copies into
    `flat.grad` (a view sliced from a leaf `flat` inside the graph would cost a [K, N]
    zero-fill per parameter in backward). Each linear layer is one batched matmul; batch norm
    keeps statistics per member; dropout has a rate per member.

    Inputs are [K, B, ...] (each member its own batch) or [B, ...] (one batch for all)."""

    def __init__(self, members: list[nn.Sequential], dropouts: list[float], input_dims: int):
        super().__init__()
        k, self.input_dims = len(members), input_dims  # input_dims: one example's, plus the batch's
        self.flat = torch.stack([parameters_to_vector(m.parameters()) for m in members]).detach()
        self.flat.grad = torch.zeros_like(self.flat)
        self.weights, self.grad_views, offset = {}, [], 0
        for name, p in members[0].named_parameters():
            self.weights[name] = nn.Parameter(self.flat[:, offset:offset + p.numel()].view(k, *p.shape))
            self.grad_views.append(self.flat.grad[:, offset:offset + p.numel()].view(k, *p.shape))
            offset += p.numel()
        drop = max(dropouts) > 0
        self.layers: list[tuple[str, str, nn.Module | None]] = []
        for name, layer in members[0].named_children():
            if isinstance(layer, nn.Linear):
                self.layers.append(("linear", name, None))
            elif isinstance(layer, nn.BatchNorm1d):
                self.layers.append(("norm", name, layer))
                for buffer in ("running_mean", "running_var", "num_batches_tracked"):
                    stacked = torch.stack([getattr(m, name).get_buffer(buffer) for m in members])
                    self.register_buffer(f"{name}_{buffer}", stacked.clone())
            elif name.startswith("act"):
                self.layers.append(("act", name, layer))
                if drop:
                    self.layers.append(("drop", name, None))
        self.p = torch.tensor(dropouts, dtype=self.flat.dtype, device=self.flat.device).view(k, 1, 1)

    def backward(self, loss: torch.Tensor) -> None:
        """flat.grad ← ∂loss/∂θ: each layer's gradient copied once into its slice (autograd's
        own accumulation would first copy the transposed weight gradients to fresh tensors)."""
        for view, grad in zip(self.grad_views, torch.autograd.grad(loss, list(self.weights.values()))):
            view.copy_(grad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shared = x.dim() == self.input_dims  # one batch for every member
        x = x.flatten(1) if shared else x.flatten(2)
        for kind, name, layer in self.layers:
            if kind == "linear":  # every member at once
                x = Linear.apply(x, self.weights[f"{name}.weight"], self.weights[f"{name}.bias"])
            elif kind == "norm":
                x = self.batch_norm(x, name, layer)
            elif kind == "act":
                x = layer(x)
            elif self.training:  # dropout at each member's rate
                x = x * (torch.rand_like(x) >= self.p) / (1 - self.p)
        return x

    def batch_norm(self, x: torch.Tensor, name: str, layer: nn.BatchNorm1d) -> torch.Tensor:
        """BatchNorm1d per member: statistics over each member's own batch (dim 1)."""
        mean, var = getattr(self, f"{name}_running_mean"), getattr(self, f"{name}_running_var")
        if self.training:
            n = x.shape[1]
            batch_mean, batch_var = x.mean(1), x.var(1, unbiased=False)
            with torch.no_grad():  # as torch updates them: momentum, the unbiased variance
                mean.lerp_(batch_mean, layer.momentum)
                var.lerp_(batch_var * n / (n - 1), layer.momentum)
                getattr(self, f"{name}_num_batches_tracked").add_(1)
            mean, var = batch_mean, batch_var
        scale = self.weights[f"{name}.weight"] * torch.rsqrt(var + layer.eps)
        return (x - mean[:, None]) * scale[:, None] + self.weights[f"{name}.bias"][:, None]

    def load_member(self, k: int, model: nn.Module) -> None:
        with torch.no_grad():
            self.flat[k] = parameters_to_vector(model.parameters())
            for name, buffer in model.named_buffers():
                getattr(self, name.replace(".", "_"))[k] = buffer

    def store_member(self, k: int, model: nn.Module) -> None:
        with torch.no_grad():
            vector_to_parameters(self.flat[k], model.parameters())
            for name, buffer in model.named_buffers():
                buffer.copy_(getattr(self, name.replace(".", "_"))[k])


class Stacked:
    """The engine of a vectorized group (see optlab/training/loop.py): K ordinary runs' models,
    optimizers and schedules, and the one stacked model and batched optimizer that train them.

    The ordinary objects are the members' truth between epochs: they are built as a single run
    builds them, hold each member's hyperparameters (schedules change them), and are what a
    member's checkpoint and metrics are made from."""

    def __init__(self, cfgs: list[DictConfig], data: dataset.Data, device: torch.device):
        cfg = cfgs[0]
        self.cfgs, self.data, self.device, self.k = cfgs, data, device, len(cfgs)
        n = len(data.train)
        self.batch_size, self.min_batch = minibatch.batching(cfg, n)
        steps = minibatch.count_batches(n, self.batch_size, self.min_batch)
        self.members, self.optimizers, self.schedulers, self.per_step, self.orders, self.initial = [], [], [], [], [], []
        decoupled, l2 = [], []
        for member in cfgs:  # each as a single run builds it, under its own seed
            self.orders.append(rng.seed(member.seed))
            model = models.build(member, data).to(device)
            initialize(model, member.init, data.train, self.batch_size)
            self.initial.append(snapshot(model.state_dict()))
            optimizer, w, coefficient = build_optimizer(member, model)
            scheduler, per_step = schedules.build(member.scheduler, optimizer, steps)
            optimizer._opt_called = True  # stepped by the batched optimizer: torch's schedules need not warn
            self.members.append(model)
            self.optimizers.append(optimizer)
            self.schedulers.append(scheduler)
            self.per_step.append(per_step)
            decoupled.append(w)
            l2.append(coefficient)
        self.net = StackedMLP(self.members, [m.dropout for m in cfgs], 1 + len(data.input_shape))
        self.optimizer = BatchedOptimizer(self.net.flat, self.optimizers, [list(m.parameters()) for m in self.members])
        decayed = {id(p) for p in decay_groups(self.members[0], cfg.weight_decay_exclude)[0]}
        names = [(name, id(p) in decayed) for name, p in self.members[0].named_parameters()]
        self.decayed = [self.net.weights[name] for name, decays in names if decays]  # what l2 and decay act on
        mask = torch.cat([torch.full((self.net.weights[name][0].numel(),), float(decays)) for name, decays in names])
        self.decoupled = torch.tensor(decoupled, device=device)[:, None] * mask.to(device) if any(decoupled) else None
        self.l2 = torch.tensor(l2, device=device) if any(l2) else None
        self.active = torch.ones(self.k, dtype=torch.bool, device=device)
        self.frozen = False  # some member's run has ended
        self.shared_order = len({m.seed for m in cfgs}) == 1 or not cfg.shuffle  # one batch serves all
        self.probe = StepProbe([self.net.flat], cfg.diagnostics_every if cfg.diagnostics else 0, self.k)
        self.step, self.fresh, self.stale = 0, False, False  # fresh: members behind the stack; stale: the stack behind members

    # --- the epoch ---------------------------------------------------------------------------

    def batches(self):
        """Each member's batches in its own seed's order, as one [K, B] index per step (one [B]
        index when every member draws the same order)."""
        draw = partial(minibatch.batches, len(self.data.train), self.batch_size, self.cfgs[0].shuffle,
                       device=self.device, min_size=self.min_batch)
        if self.shared_order:
            yield from draw(self.orders[0])
            for order in self.orders[1:] if self.cfgs[0].shuffle else ():  # each stream where its run's would be
                order.set_state(self.orders[0].get_state())
            return
        yield from (torch.stack(step) for step in zip(*(draw(order) for order in self.orders)))

    def inputs(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.data.train.get(index.flatten())
        return (x, y) if index.dim() == 1 else (x.view(*index.shape, *x.shape[1:]), y.view(*index.shape, *y.shape[1:]))

    def losses(self, output: torch.Tensor, y: torch.Tensor, shared: bool) -> torch.Tensor:
        """Each member's loss, [K] (`shared`: one set of targets for all)."""
        return self.data.losses(output, y.expand(self.k, *y.shape) if shared else y)

    def scores(self, output: torch.Tensor, y: torch.Tensor, shared: bool) -> list[float]:
        return torch.vmap(self.data.score, in_dims=(0, None if shared else 0))(output, y).tolist()

    def train_epoch(self, stop) -> list[Epoch] | None:
        if self.stale:
            self.load_members()
        net, flat, k = self.net, self.net.flat, self.k
        net.train()
        first_step = self.step + 1
        losses, totals, outputs, targets, sizes, lrs, times = [], [], [], [], [], [], []
        for index in self.batches():
            x, y = self.inputs(index)
            logits = net(x)  # [K, B, C]: one batched matmul per layer for every member
            loss = self.losses(logits, y, self.shared_order)
            total = loss + 0.5 * self.l2 * sum(w.square().flatten(1).sum(1) for w in self.decayed) \
                if self.l2 is not None else loss
            net.backward(total.sum())  # members share no weight: row k of the gradient is member k's
            self.probe.before_step(self.step + 1)
            lrs.append([o.param_groups[0]["lr"] for o in self.optimizers])
            if self.decoupled is not None:  # θ ← θ − Δθ − w·θ, decoupled decay first (a frozen member stays)
                flat.mul_(1 - self.decoupled * self.active[:, None])
            self.optimizer.step(self.active if self.frozen else None)
            for scheduler, per_step in zip(self.schedulers, self.per_step):
                if per_step:
                    scheduler.step()
            self.probe.after_step()
            self.step += 1
            losses.append(loss.detach())
            totals.append(total.detach())
            outputs.append(logits.detach())
            targets.append(y)
            sizes.append(index.shape[-1])
            times.append(time.time())
            if stop.signal:
                return None
        self.fresh = True

        # once per epoch: reduce on the device, then one transfer to the host
        count = sum(sizes)
        sizes = torch.tensor(sizes, device=self.device, dtype=torch.float32)
        losses = torch.stack(losses)  # [steps, K]
        columns = {"step/loss": losses.T.tolist(), "step/lr": list(map(list, zip(*lrs)))}
        columns.update({tag: [[v and v[i] for v in values] for i in range(k)]  # per member, None kept
                        for tag, values in self.probe.epoch().items()})
        if self.l2 is not None:  # for the members that have one, as a single run logs it
            columns["step/l2_penalty"] = [v if l2 else None for v, l2 in
                                          zip((torch.stack(totals) - losses).T.tolist(), self.l2.tolist())]
        shared = self.shared_order
        acc = self.scores(torch.cat(outputs, dim=1), torch.cat(targets, dim=0 if shared else 1), shared)
        train_loss = ((sizes @ losses) / count).tolist()
        return [Epoch(first_step, {tag: v[i] for tag, v in columns.items() if v[i] is not None}, times,
                      train_loss[i], acc[i], count) for i in range(k)]

    @torch.inference_mode()
    def evaluate(self) -> list[tuple[float, float]]:
        """Validation loss and score per member, every member on the same chunks."""
        self.net.eval()
        split, loss_sum, outputs = self.data.val, 0, []
        for x, y in split.chunks(max(1, 8192 // self.k)):
            out = self.net(x.to(self.device))
            loss_sum = loss_sum + self.losses(out, y.to(self.device), shared=True) * len(y)
            outputs.append(out.float())
        scores = self.scores(torch.cat(outputs, dim=1), split.y.to(self.device), shared=True)
        return list(zip((loss_sum / len(split)).tolist(), scores))

    def schedule(self, val_losses: list[float]) -> None:
        for scheduler, per_step, loss in zip(self.schedulers, self.per_step, val_losses):
            if not per_step:
                schedules.step(scheduler, loss)

    def freeze(self, k: int) -> None:
        """Member k's run has ended: its weights and optimizer state stay as they are."""
        self.active[k], self.frozen = False, True

    # --- members as ordinary runs ------------------------------------------------------------

    def store_members(self) -> None:
        """Write the stacked numbers into each member's ordinary model and optimizer."""
        if self.fresh:
            for k, model in enumerate(self.members):
                self.net.store_member(k, model)
            self.optimizer.export()
            self.fresh = False

    def load_members(self) -> None:
        """The mirror of `store_members`, once members were loaded from their checkpoints."""
        for k, model in enumerate(self.members):
            self.net.load_member(k, model)
        self.optimizer.load()
        self.stale = False

    def member(self, k: int) -> nn.Module:
        self.store_members()
        return self.members[k]

    def numbers(self, k: int) -> dict:
        self.store_members()
        return {
            "model": self.members[k].state_dict(),
            "optimizer": self.optimizers[k].state_dict(),
            "scheduler": self.schedulers[k].state_dict(),
            "scaler": torch.amp.GradScaler(self.device.type, enabled=False).state_dict(),
            "rng": rng.state(self.orders[k]),
        }

    def load(self, k: int, saved: dict) -> None:
        self.members[k].load_state_dict(saved["model"])
        self.optimizers[k].load_state_dict(saved["optimizer"])
        self.schedulers[k].load_state_dict(saved["scheduler"])
        rng.load(saved["rng"], self.orders[k])
        self.step, self.stale = saved["step"], True
