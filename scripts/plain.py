"""The plain PyTorch side of the benchmarks: what a person would write by hand for the work
optlab does, with no logs and no records. Digits split 60/20/20 and standardized as optlab
splits them, an MLP of ReLU layers, minibatches in a seeded order."""

from __future__ import annotations

import torch
from torch import nn


def digits(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The training and validation splits of scikit-learn's digits: x, y, x_val, y_val."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_rest, _, y_rest, _ = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    x_train, x_val, y_train, y_val = train_test_split(x_rest, y_rest, test_size=0.25, stratify=y_rest, random_state=0)
    mean, std = x_train.mean(0), x_train.std(0)
    std[std == 0] = 1
    x, x_val = (torch.tensor((a - mean) / std, dtype=torch.float32, device=device) for a in (x_train, x_val))
    y, y_val = (torch.tensor(a, device=device) for a in (y_train, y_val))
    return x, y, x_val, y_val


def mlp(inputs: int, hidden: list[int], outputs: int, device: torch.device) -> nn.Module:
    widths = [inputs, *hidden]
    layers = [m for a, b in zip(widths, widths[1:]) for m in (nn.Linear(a, b), nn.ReLU())]
    return nn.Sequential(*layers, nn.Linear(widths[-1], outputs)).to(device)


def epoch(model: nn.Module, optimizer, x, y, batch_size: int, order: torch.Generator) -> None:
    """One pass over (x, y) in minibatches of a seeded random order."""
    model.train()
    for index in torch.randperm(len(y), generator=order).to(x.device).split(batch_size):
        loss = nn.functional.cross_entropy(model(x[index]), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@torch.no_grad()
def validate(model: nn.Module, x_val, y_val) -> tuple[float, float]:
    """Validation loss and accuracy."""
    model.eval()
    out = model(x_val)
    return nn.functional.cross_entropy(out, y_val).item(), (out.argmax(1) == y_val).float().mean().item()
