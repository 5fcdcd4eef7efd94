"""Batches: how many examples an optimizer step takes (`batch_size`, `full` = batch gradient
descent, 1 = SGD) and in which order the training set is drawn each epoch (`shuffle`)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from omegaconf import DictConfig

from optlab.training.data import Split


def batching(cfg: DictConfig, n: int) -> tuple[int, int]:
    """(examples per step, smallest last batch kept) for a run on `n` training examples:
    `batch_size=full` takes them all; batch norm cannot train on a batch of one."""
    return n if cfg.batch_size == "full" else min(cfg.batch_size, n), 2 if cfg.batchnorm else 1


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


def epoch(
    split: Split,
    batch_size: int,
    shuffle: bool,
    generator: torch.Generator,
    device: torch.device,
    min_size: int = 1,
    workers: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of (inputs, targets) on `device`, in the order `batches` draws.

    In memory (the split lives on `device`) each batch is one gather. Otherwise a DataLoader
    with `workers` processes gathers the same batches on the host and each is copied over.
    """
    order = batches(len(split), batch_size, shuffle, generator, split.y.device, min_size)
    if split.y.device == device:
        for index in order:
            yield split.get(index)
        return
    loader = torch.utils.data.DataLoader(
        order, batch_size=None, num_workers=workers, collate_fn=split.get,
        pin_memory=device.type == "cuda",
    )
    for x, y in loader:
        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)
