"""Both engines implement the contract the loop is written against (optlab/training/engine.py)."""

import torch

from helpers import make_config
from optlab.training.data import load
from optlab.training.engine import Engine
from optlab.training.single import Single
from optlab.training.stacked import Stacked


def test_single_and_stacked_are_engines():
    cfgs = [make_config("model.hidden=[8]", f"seed={seed}") for seed in (0, 1)]
    data = load(cfgs[0].data, torch.device("cpu"))
    single = Single(cfgs[0], data, torch.device("cpu"), torch.Generator())
    stacked = Stacked(cfgs, data, torch.device("cpu"))
    assert isinstance(single, Engine) and isinstance(stacked, Engine)
    assert len(single.initial) == 1 and len(stacked.initial) == 2  # each member's weights at step 0
    assert [len(v) for v in (single.evaluate(), stacked.evaluate())] == [1, 2]  # (val_loss, val_acc) per member
