"""Models: built by Hydra from `conf/model/*.yaml`, sized by the data they are given.

Layers are named (fc1, bn1, act1, drop1, …, head), so a checkpoint's tensor names do not
depend on whether dropout or batch norm is on, and `init=pretrained` can match them.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from optlab.config.allowlist import construct
from optlab.config.schema import ACTIVATIONS
from optlab.errors import UsageError


def _features(input_shape: Sequence[int] | int) -> int:
    return input_shape if isinstance(input_shape, int) else math.prod(input_shape)


class Dropout(nn.Module):
    """Zero each element (`channels`: each channel of an image, as Dropout2d) with probability
    `p` in training and scale the rest by 1/(1 − p), as nn.Dropout does, with masks drawn from
    `generator`: the run's own stream (optlab/training/rng.py `masks`), so that a run's masks
    depend on its seed alone and a member of a stacked group draws the very masks its run alone
    would. Without a generator it draws from torch's global stream. A stacked model draws the
    masks itself and hands each layer its `mask` (optlab/training/stacking.py)."""

    def __init__(self, p: float, channels: bool = False):
        super().__init__()
        self.p, self.channels = p, channels
        self.generator: torch.Generator | None = None
        self.mask: torch.Tensor | None = None

    def extra_repr(self) -> str:
        return f"p={self.p}, channels={self.channels}"

    def mask_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        return (*x.shape[:2], *(1,) * (x.dim() - 2)) if self.channels else tuple(x.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        if self.mask is not None:
            return x * self.mask
        return x * draw_mask(self.mask_shape(x), self.p, self.generator, x.device, x.dtype)


def draw_mask(shape: Sequence[int], p: float, generator: torch.Generator | None, device, dtype) -> torch.Tensor:
    """A dropout mask: 0 with probability p, else 1/(1 − p)."""
    return (torch.rand(shape, generator=generator, device=device) >= p).to(dtype) / (1 - p)


def draw_masks_from(model: nn.Module, generator: torch.Generator) -> None:
    """Every dropout layer of `model` draws its masks from `generator`."""
    for module in model.modules():
        if isinstance(module, Dropout):
            module.generator = generator


def _hidden(layers: dict, prefix: str, index: int, affine: nn.Module, norm: nn.Module | None,
            activation: str, dropout: nn.Module | None) -> None:
    """affine → [norm] → activation → [dropout], named `<prefix><index>`, `bn<index>`, …"""
    layers[f"{prefix}{index}"] = affine
    if norm is not None:
        layers[f"bn{index}"] = norm
    layers[f"act{index}"] = getattr(nn, ACTIVATIONS[activation])()
    if dropout is not None:
        layers[f"drop{index}"] = dropout


class MLP(nn.Sequential):
    """Flatten → (Linear → [BatchNorm1d] → activation → [Dropout]) per hidden width → Linear.

    Batch norm normalizes each affine output before the activation (Ioffe & Szegedy, 2015);
    dropout zeroes each hidden unit with probability `dropout` in training only. With no
    hidden layers it is multinomial logistic regression (`model=linear`). Images are flattened.
    """

    def __init__(
        self,
        input_shape: Sequence[int] | int,
        num_classes: int,
        hidden: Sequence[int] = (),
        activation: str = "relu",
        dropout: float = 0.0,
        batchnorm: bool = False,
    ):
        layers: dict[str, nn.Module] = {"flatten": nn.Flatten()}
        width = _features(input_shape)
        for i, size in enumerate(hidden, start=1):
            _hidden(layers, "fc", i, nn.Linear(width, size), nn.BatchNorm1d(size) if batchnorm else None,
                    activation, Dropout(dropout) if dropout > 0 else None)
            width = size
        layers["head"] = nn.Linear(width, num_classes)
        super().__init__(OrderedDict(layers))


class CNN(nn.Sequential):
    """Convolution blocks, then an MLP head, for images (channels, height, width).

    Each block: Conv2d (`kernel_size`, padding keeps the size) → [BatchNorm2d] → activation →
    MaxPool2d(2) → [Dropout2d]; then Flatten → (Linear → [BatchNorm1d] → activation →
    [Dropout]) per `hidden` width → Linear. `batchnorm` and `dropout` are the top-level switches.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (16, 32),
        kernel_size: int = 3,
        hidden: Sequence[int] = (128,),
        activation: str = "relu",
        dropout: float = 0.0,
        batchnorm: bool = False,
    ):
        if isinstance(input_shape, int) or len(input_shape) != 3:
            raise UsageError(f"model=cnn needs images (channels, height, width); this data gives "
                             f"inputs of shape {input_shape}. Use model=mlp, or set data.shape")
        depth, height, width = input_shape
        layers: dict[str, nn.Module] = {}
        for i, size in enumerate(channels, start=1):
            _hidden(layers, "conv", i, nn.Conv2d(depth, size, kernel_size, padding=kernel_size // 2),
                    nn.BatchNorm2d(size) if batchnorm else None, activation, None)
            layers[f"pool{i}"] = nn.MaxPool2d(2)
            if dropout > 0:
                layers[f"drop{i}"] = Dropout(dropout, channels=True)
            depth, height, width = size, max(1, height // 2), max(1, width // 2)
        layers["flatten"] = nn.Flatten()
        features = depth * height * width
        for j, size in enumerate(hidden, start=len(channels) + 1):
            _hidden(layers, "fc", j, nn.Linear(features, size), nn.BatchNorm1d(size) if batchnorm else None,
                    activation, Dropout(dropout) if dropout > 0 else None)
            features = size
        layers["head"] = nn.Linear(features, num_classes)
        super().__init__(OrderedDict(layers))


def build(cfg, data) -> nn.Module:
    """The run's model (`cfg.model`), sized by its data, with the run's dropout and batch norm."""
    return construct("model", cfg.model, (), input_shape=data.input_shape, num_classes=data.num_outputs,
                     dropout=cfg.dropout, batchnorm=cfg.batchnorm)
