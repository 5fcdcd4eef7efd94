"""Models: built by Hydra from `conf/model/*.yaml`, sized by the data they are given.

Layers are named (fc1, bn1, act1, drop1, …, head), so a checkpoint's tensor names do not
depend on whether dropout or batch norm is on, and `init=pretrained` can match them.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from optlab.config.allowlist import construct
from optlab.config.schema import ACTIVATIONS
from optlab.errors import UsageError


def _features(input_shape: Sequence[int] | int) -> int:
    return input_shape if isinstance(input_shape, int) else math.prod(input_shape)


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
                    activation, nn.Dropout(dropout) if dropout > 0 else None)
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
                layers[f"drop{i}"] = nn.Dropout2d(dropout)
            depth, height, width = size, max(1, height // 2), max(1, width // 2)
        layers["flatten"] = nn.Flatten()
        features = depth * height * width
        for j, size in enumerate(hidden, start=len(channels) + 1):
            _hidden(layers, "fc", j, nn.Linear(features, size), nn.BatchNorm1d(size) if batchnorm else None,
                    activation, nn.Dropout(dropout) if dropout > 0 else None)
            features = size
        layers["head"] = nn.Linear(features, num_classes)
        super().__init__(OrderedDict(layers))


def build(cfg, data) -> nn.Module:
    """The run's model (`cfg.model`), sized by its data, with the run's dropout and batch norm."""
    return construct("model", cfg.model, (), input_shape=data.input_shape, num_classes=data.num_outputs,
                     dropout=cfg.dropout, batchnorm=cfg.batchnorm)
