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
    """Load `cfg.source`, split it stratified by `cfg.split_seed`, standardize by train stats.

    `cfg.order` is the order of the training set as stored: `random` (the split's) or `sorted`
    (by class); with `shuffle=false` the batches follow it every epoch.
    """
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
    if cfg.order == "sorted":  # the training set by class: what shuffling protects against
        train = train[np.argsort(y[train], kind="stable")]
    mean, std = x[train].mean(axis=0), x[train].std(axis=0)
    x = (x - mean) / np.where(std > 0, std, 1)  # constant pixels (digits' borders) stay 0

    def split(index: np.ndarray) -> Split:
        return Split(
            torch.from_numpy(x[index]).to(device), torch.from_numpy(y[index]).long().to(device)
        )

    return Data(split(train), split(val), split(test), x.shape[1], len(classes))


def count_batches(n: int, batch_size: int, min_size: int = 1) -> int:
    """How many batches `batches` gives an epoch."""
    full, rest = divmod(n, batch_size)
    return full + (rest >= min_size and rest > 0)


def batches(
    n: int,
    batch_size: int,
    shuffle: bool,
    generator: torch.Generator,
    device: torch.device,
    min_size: int = 1,
) -> tuple[torch.Tensor, ...]:
    """One epoch's batches as index tensors: a fresh permutation from `generator` when shuffling.

    A last batch smaller than `min_size` is dropped (batch norm cannot train on one example).
    """
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    chunks = order.to(device).split(batch_size)
    return chunks if len(chunks[-1]) >= min_size else chunks[:-1]
