"""The data path: a stratified split, training-only statistics, seeded batch orders."""

from __future__ import annotations

import numpy as np
import torch

from conftest import make_config
from optlab.data import batches, load
from optlab.models import MLP

CPU = torch.device("cpu")


def test_digits_split_60_20_20_stratified_and_disjoint():
    data = load(make_config().data, CPU)
    assert (len(data.train), len(data.val), len(data.test)) == (1077, 360, 360)
    assert (data.input_shape, data.num_outputs, data.task) == ((1, 8, 8), 10, "classification")
    for split in (data.val, data.test):
        counts = torch.bincount(split.y, minlength=10)
        assert counts.min() >= 35 and counts.max() <= 37  # ~36 of each digit
    rows = {tuple(r.tolist()) for s in (data.train, data.val, data.test) for r in s.x.flatten(1)}
    assert len(rows) >= 1790  # no image in two splits (digits has a few exact duplicates)


def test_standardized_with_training_statistics_only():
    data = load(make_config().data, CPU)
    x = data.train.x.flatten(1)
    mean, std = x.mean(0), x.std(0, unbiased=False)
    varying = std > 0
    torch.testing.assert_close(mean, torch.zeros(64), atol=1e-5, rtol=0)
    torch.testing.assert_close(std[varying], torch.ones(int(varying.sum())), atol=1e-4, rtol=0)
    assert abs(data.test.x.mean()) > 1e-4  # the test split was not standardized by its own stats


def test_split_depends_on_split_seed_not_training_seed():
    a = load(make_config("seed=1").data, CPU)
    b = load(make_config("seed=2").data, CPU)
    c = load(make_config("data.split_seed=1").data, CPU)
    assert torch.equal(a.test.x, b.test.x)
    assert not torch.equal(a.test.x, c.test.x)


def test_batches_cover_every_example_once_in_a_seeded_order():
    one = batches(10, 4, True, torch.Generator().manual_seed(0), CPU)
    two = batches(10, 4, True, torch.Generator().manual_seed(0), CPU)
    assert [len(b) for b in one] == [4, 4, 2]
    assert sorted(torch.cat(one).tolist()) == list(range(10))
    assert all(torch.equal(x, y) for x, y in zip(one, two))
    assert torch.cat(batches(10, 4, False, torch.Generator(), CPU)).tolist() == list(range(10))


def test_mlp_and_linear_shapes():
    mlp = MLP(64, 10, hidden=[32, 16], activation="tanh")
    assert [type(m).__name__ for m in mlp] == ["Flatten", "Linear", "Tanh", "Linear", "Tanh", "Linear"]
    assert mlp(torch.zeros(5, 8, 8)).shape == (5, 10)  # images are flattened
    linear = MLP(64, 10)
    assert [type(m).__name__ for m in linear] == ["Flatten", "Linear"]
    assert np.prod(linear[1].weight.shape) == 640
