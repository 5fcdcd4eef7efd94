"""K models of one architecture as one module, for every model optlab builds: torch.func's
`functional_call` of one skeleton under `torch.vmap`, so that each layer stacks by torch's own
batching rule (a linear layer becomes one batched matmul, a convolution one grouped convolution)
and a model added later stacks with no code of its own.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from optlab.models import Dropout, draw_mask


class StackedModel(nn.Module):
    """K members as one module. Member k's parameters are row k of one tensor `flat` [K, N] (in
    `parameters()` order), so that the optimizer state, the update and the per-step norms are
    [K, N] too and each costs a few whole-tensor kernels. Each parameter is a leaf that views
    `flat` ([K, *shape]); `backward` copies its gradient into `flat.grad` (a view sliced from a
    leaf `flat` inside the graph would cost a [K, N] zero-fill per parameter in backward).

    Buffers are stacked too ([K, ...]): batch norm updates each member's running statistics in
    place under vmap. Dropout draws each member's masks outside vmap from the member's own
    generator at the member's own rate (vmap's randomness would draw from one global stream), the
    numbers its run alone draws, and hands them to the layers.

    Inputs are [K, B, ...] (each member its own batch) or [B, ...] (one batch for all)."""

    def __init__(self, members: Sequence[nn.Module], rates: Sequence[float],
                 generators: Sequence[torch.Generator], input_dims: int):
        super().__init__()
        k, self.input_dims = len(members), input_dims  # input_dims: one example's, plus the batch's
        self.flat = torch.stack([parameters_to_vector(m.parameters()) for m in members]).detach()
        self.flat.grad = torch.zeros_like(self.flat)
        self.weights, self.grad_views, offset = {}, [], 0
        for name, p in members[0].named_parameters():
            self.weights[name] = nn.Parameter(self.flat[:, offset:offset + p.numel()].view(k, *p.shape))
            self.grad_views.append(self.flat.grad[:, offset:offset + p.numel()].view(k, *p.shape))
            offset += p.numel()
        self.stacked_buffers = {name: torch.stack([m.get_buffer(name) for m in members]).clone()
                                for name, _ in members[0].named_buffers()}
        # the architecture, without numbers (meta tensors); dropout layers where any member has them
        widest = max(range(k), key=lambda i: rates[i])
        self.skeleton = (copy.deepcopy(members[widest]).to("meta"),)  # a tuple: not a submodule
        self.drops = [m for m in self.skeleton[0].modules() if isinstance(m, Dropout)]
        self.rates, self.generators, self.shapes = list(rates), list(generators), {}

    def train(self, mode: bool = True) -> StackedModel:
        self.skeleton[0].train(mode)
        return super().train(mode)

    def backward(self, loss: torch.Tensor) -> None:
        """flat.grad ← ∂loss/∂θ: each layer's gradient copied once into its slice."""
        for view, grad in zip(self.grad_views, torch.autograd.grad(loss, list(self.weights.values()))):
            view.copy_(grad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shared = x.dim() == self.input_dims  # one batch for every member
        masks = self.masks(tuple(x.shape[0 if shared else 1:])) if self.training and self.drops else []
        return torch.vmap(self.member_forward, in_dims=(0, 0, 0, None if shared else 0))(
            self.weights, self.stacked_buffers, masks, x)

    def member_forward(self, weights: dict, buffers: dict, masks: list, x: torch.Tensor) -> torch.Tensor:
        """One member's forward (under vmap: every member's)."""
        for layer, mask in zip(self.drops, masks):
            layer.mask = mask
        try:
            return functional_call(self.skeleton[0], (weights, buffers), (x,))
        finally:
            for layer in self.drops:
                layer.mask = None

    def masks(self, shape: tuple[int, ...]) -> list[torch.Tensor]:
        """Each dropout layer's masks for a member's input of `shape`, [K, ...] per layer: member k's
        drawn from its generator, layer after layer, as its run alone draws them (a member without
        dropout draws nothing: its mask is ones)."""
        if shape not in self.shapes:  # the layers' input shapes: one pass over meta tensors
            seen = []
            hooks = [layer.register_forward_pre_hook(lambda layer, args: seen.append(layer.mask_shape(args[0])))
                     for layer in self.drops]
            self.skeleton[0](torch.empty(shape, device="meta"))
            for hook in hooks:
                hook.remove()
            self.shapes[shape] = seen
        device, dtype = self.flat.device, self.flat.dtype
        drawn = [[draw_mask(s, p, g, device, dtype) if p > 0 else torch.ones(s, device=device, dtype=dtype)
                  for s in self.shapes[shape]] for p, g in zip(self.rates, self.generators)]
        return [torch.stack(layer) for layer in zip(*drawn)]

    @torch.no_grad()
    def copy_row(self, src: int, dst: int) -> None:
        """Member dst's weights and buffers become member src's."""
        self.flat[dst] = self.flat[src]
        for buffer in self.stacked_buffers.values():
            buffer[dst] = buffer[src]

    def load_member(self, k: int, model: nn.Module) -> None:
        with torch.no_grad():
            self.flat[k] = parameters_to_vector(model.parameters())
            for name, buffer in model.named_buffers():
                self.stacked_buffers[name][k] = buffer

    def store_member(self, k: int, model: nn.Module) -> None:
        with torch.no_grad():
            vector_to_parameters(self.flat[k], model.parameters())
            for name, buffer in model.named_buffers():
                buffer.copy_(self.stacked_buffers[name][k])
