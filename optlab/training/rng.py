"""Random number streams: seeding a run, and saving and restoring every stream it draws from.

A run draws from Python's, NumPy's and torch's global generators (weight init) and from two
generators of its own, for the batch order and for dropout masks, so that both depend on `seed`
alone: a member of a stacked group draws from its own two as its run alone would.
States are kept as tensors and numbers, forms that torch.load(weights_only=True) reads.
"""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch


def seed(value: int) -> torch.Generator:
    """Seed the global streams; returns the batch-order stream, seeded the same."""
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)
    return torch.Generator().manual_seed(value)


def masks(value: int, device: torch.device) -> torch.Generator:
    """The dropout-mask stream of the run seeded `value`, on its device: seeded apart from the
    batch order's (NumPy's SeedSequence of [value, 1]), so that the two draw unrelated numbers."""
    entropy = int(np.random.SeedSequence([value, 1]).generate_state(1, np.uint64)[0] >> 1)
    return torch.Generator(device).manual_seed(entropy)


def state(order: torch.Generator, masks: torch.Generator) -> dict:
    return {
        "python": random.getstate(),
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "order": order.get_state(),
        "masks": masks.get_state(),
    }


def load(saved: dict, order: torch.Generator, masks: torch.Generator) -> None:
    """The mirror of `state`."""
    random.setstate(saved["python"])
    _set_numpy_state(saved["numpy"])
    torch.set_rng_state(saved["torch"].cpu())
    if saved["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([r.cpu() for r in saved["cuda"]])
    order.set_state(saved["order"].cpu())
    if "masks" in saved:  # checkpoints written before runs had a mask stream
        masks.set_state(saved["masks"].cpu())


@contextlib.contextmanager
def untouched():
    """Whatever is drawn inside, the global streams come out as they went in (the learning-rate
    range test before a run trains: the run starts from its own untouched streams)."""
    spare = torch.Generator()
    saved = state(spare, spare)
    try:
        yield
    finally:
        load(saved, spare, spare)


def _numpy_state() -> dict:
    """NumPy's global RNG state as a tensor and numbers."""
    saved = np.random.get_state(legacy=False)
    return {"key": torch.from_numpy(saved["state"]["key"].astype(np.int64)), "pos": saved["state"]["pos"],
            "has_gauss": saved["has_gauss"], "gauss": saved["gauss"]}


def _set_numpy_state(saved: dict) -> None:
    np.random.set_state({"bit_generator": "MT19937", "has_gauss": saved["has_gauss"], "gauss": saved["gauss"],
                         "state": {"key": saved["key"].cpu().numpy().astype(np.uint32), "pos": saved["pos"]}})
