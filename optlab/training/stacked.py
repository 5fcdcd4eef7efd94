"""The `Stacked` engine: K members of a vectorized sweep trained as one model, each with its own
weights, optimizer state, schedule, dropout and batch order, at the cost of one batched pass.
"""

from __future__ import annotations

import time
from functools import partial

import torch
from omegaconf import DictConfig
from torch import nn

from optlab import models, schedules
from optlab.init import initialize
from optlab.optim import build_optimizer, decay_groups
from optlab.training import data as dataset
from optlab.training import minibatch, rng, threads
from optlab.training.batched import BatchedOptimizer
from optlab.training.callbacks import StepProbe, snapshot
from optlab.training.record import Epoch
from optlab.training.stacking import StackedModel


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
        self.masks, decoupled, l2 = [], [], []
        for member in cfgs:  # each as a single run builds it, under its own seed
            self.orders.append(rng.seed(member.seed))
            model = models.build(member, data).to(device)
            self.masks.append(rng.masks(member.seed, device))
            models.draw_masks_from(model, self.masks[-1])
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
        threads.for_run(cfg, self.members[0], data.train, self.batch_size, copies=self.k)
        self.net = StackedModel(self.members, [m.dropout for m in cfgs], self.masks, 1 + len(data.input_shape))
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
            logits = net(x)  # [K, B, C]: each layer once for every member (a batched matmul, a grouped convolution)
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

    # --- population-based training (optlab/training/population.py) ---------------------------

    def copy_member(self, src: int, dst: int) -> None:
        """Member dst goes on as member src: its weights, buffers, optimizer state and random
        streams (batch order, dropout masks) become src's, an index copy inside the stack."""
        if self.stale:
            self.load_members()
        self.net.copy_row(src, dst)
        self.optimizer.copy_row(src, dst)
        self.orders[dst].set_state(self.orders[src].get_state())
        self.masks[dst].set_state(self.masks[src].get_state())
        self.fresh = True  # the members' ordinary objects are behind the stack

    def set_hyperparameters(self, k: int, values: dict[str, float]) -> None:
        """Set member k's optimizer numbers in every param group (the batched step reads them)."""
        for group in self.optimizers[k].param_groups:
            group.update(values)

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
            "rng": rng.state(self.orders[k], self.masks[k]),
        }

    def load(self, k: int, saved: dict) -> None:
        self.members[k].load_state_dict(saved["model"])
        self.optimizers[k].load_state_dict(saved["optimizer"])
        self.schedulers[k].load_state_dict(saved["scheduler"])
        rng.load(saved["rng"], self.orders[k], self.masks[k])
        self.step, self.stale = saved["step"], True
