"""Data: loaded once, split, standardized, and kept on the training device as tensors.

Batches are index tensors into those tensors (one seeded permutation per epoch), so a step
costs one gather instead of a DataLoader's per-sample Python work.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from sklearn.model_selection import train_test_split


@dataclass
class Split:
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Data:
    train: Split
    val: Split
    test: Split
    num_features: int
    num_classes: int


def load(cfg: DictConfig, device: torch.device) -> Data:
    """Load `cfg.source`, split it stratified by `cfg.split_seed`, standardize by train stats."""
    x, y = instantiate(cfg.source)
    x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    classes, y = np.unique(y, return_inverse=True)
    rest, test = train_test_split(
        np.arange(len(y)), test_size=cfg.test_fraction, stratify=y, random_state=cfg.split_seed
    )
    train, val = train_test_split(
        rest,
        test_size=cfg.val_fraction / (1 - cfg.test_fraction),
        stratify=y[rest],
        random_state=cfg.split_seed,
    )
    mean, std = x[train].mean(axis=0), x[train].std(axis=0)
    x = (x - mean) / np.where(std > 0, std, 1)  # constant pixels (digits' borders) stay 0

    def split(index: np.ndarray) -> Split:
        return Split(
            torch.from_numpy(x[index]).to(device), torch.from_numpy(y[index]).long().to(device)
        )

    return Data(split(train), split(val), split(test), x.shape[1], len(classes))


def batches(
    n: int, batch_size: int, shuffle: bool, generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, ...]:
    """One epoch's batches as index tensors: a fresh permutation from `generator` when shuffling."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    return order.to(device).split(batch_size)
