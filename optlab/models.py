"""Models: built by Hydra from `conf/model/*.yaml`, sized by the data they are given."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from optlab.config import ACTIVATIONS


class MLP(nn.Sequential):
    """Flatten → (Linear → activation) per hidden width → Linear to class scores.

    With no hidden layers it is multinomial logistic regression (`model=linear`).
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden: Sequence[int] = (),
        activation: str = "relu",
    ):
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for size in hidden:
            layers += [nn.Linear(width, size), getattr(nn, ACTIVATIONS[activation])()]
            width = size
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)
