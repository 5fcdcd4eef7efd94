"""Models: built by Hydra from `conf/model/*.yaml`, sized by the data they are given."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from optlab.config import ACTIVATIONS


class MLP(nn.Sequential):
    """Flatten → (Linear → [BatchNorm1d] → activation → [Dropout]) per hidden width → Linear.

    Batch norm normalizes each affine output before the activation (Ioffe & Szegedy, 2015);
    dropout zeroes each hidden unit with probability `dropout` in training only. With no
    hidden layers it is multinomial logistic regression (`model=linear`).
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden: Sequence[int] = (),
        activation: str = "relu",
        dropout: float = 0.0,
        batchnorm: bool = False,
    ):
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for size in hidden:
            layers.append(nn.Linear(width, size))
            if batchnorm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(getattr(nn, ACTIVATIONS[activation])())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)
