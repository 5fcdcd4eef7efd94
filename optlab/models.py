"""Models: built by Hydra from `conf/model/*.yaml`, sized by the data they are given."""

from __future__ import annotations

from collections import OrderedDict
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
        # named layers (fc1, bn1, act1, drop1, …, head): a checkpoint's tensor names do not
        # depend on whether dropout or batch norm is on, so init=pretrained can match them
        layers: dict[str, nn.Module] = {"flatten": nn.Flatten()}
        width = in_features
        for i, size in enumerate(hidden, start=1):
            layers[f"fc{i}"] = nn.Linear(width, size)
            if batchnorm:
                layers[f"bn{i}"] = nn.BatchNorm1d(size)
            layers[f"act{i}"] = getattr(nn, ACTIVATIONS[activation])()
            if dropout > 0:
                layers[f"drop{i}"] = nn.Dropout(dropout)
            width = size
        layers["head"] = nn.Linear(width, num_classes)
        super().__init__(OrderedDict(layers))
