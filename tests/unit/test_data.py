"""The data path: a stratified split, training-only statistics, seeded batch orders."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import make_config

from optlab.datasets import digits
from optlab.models import MLP
from optlab.training.data import _split, load
from optlab.training.minibatch import batches

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


def test_load_is_memoized_per_data_config_and_device():
    a = load(make_config("seed=1").data, CPU)
    assert load(make_config("seed=2", "epochs=3").data, CPU) is a  # same data config: the same Data
    assert load(make_config("data.split_seed=1").data, CPU) is not a


def test_memoized_load_sees_a_rewritten_file(tmp_path):
    path = tmp_path / "mine.npz"
    np.savez(path, X=np.arange(40.0).reshape(20, 2), y=np.arange(20) % 2)
    cfg = make_config("data=npz", f"data.path={path}").data
    assert len(load(cfg, CPU).train) == 12
    np.savez(path, X=np.arange(80.0).reshape(40, 2), y=np.arange(40) % 2)
    assert len(load(cfg, CPU).train) == 24


def test_shipped_digits_are_scikit_learns_exactly():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    source = digits()
    assert source.x.dtype == x.dtype and source.y.dtype == y.dtype
    assert np.array_equal(source.x, x) and np.array_equal(source.y, y)


def _labels(n: int, weights: list[float], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).choice(len(weights), n, p=np.array(weights) / sum(weights))


SPLITS = [  # labels (None: regression, unstratified), fraction
    (np.arange(1797) % 10, 0.2), (np.arange(1797) % 10, 0.25), (np.arange(1000) % 2, 0.2),
    (np.arange(1000) % 3, 0.13), (_labels(300, [5, 3, 1, 1], 0), 0.3), (_labels(157, [1, 1, 1], 1), 0.5),
    (np.repeat([0, 1, 2, 3], [7, 7, 7, 7]), 0.3),  # ties in every remainder: broken at random
    (np.repeat([0, 1, 2], [2, 5, 11]), 1 / 3), (None, 0.2), (None, 0.37),
    (np.r_[np.zeros(20, int), 1], 0.25),  # a class of one: unstratified
]


@pytest.mark.parametrize("labels, fraction", SPLITS)
def test_split_is_scikit_learns_train_test_split_index_for_index(labels, fraction):
    from sklearn.model_selection import train_test_split

    n = 200 if labels is None else len(labels)
    y = np.random.default_rng(0).normal(size=n) if labels is None else labels
    for seed in (0, 1, 42, 12345):
        for index in (np.arange(n), np.sort(np.random.default_rng(seed).permutation(n)[: n * 3 // 4])):
            stratify = None if labels is None or np.bincount(y[index]).min() < 2 else y[index]
            expected = train_test_split(index, test_size=fraction, stratify=stratify, random_state=seed)
            got = _split(index, y, fraction, seed, labels is None)
            assert all(np.array_equal(g, e) and g.dtype == e.dtype for g, e in zip(got, expected))


def test_digits_load_without_scikit_learn():
    code = (
        "import sys, torch\n"
        "from hydra import compose, initialize_config_module\n"
        "from optlab.config.resolvers import register\n"
        "from optlab.training.data import load\n"
        "register()\n"
        "with initialize_config_module('optlab.conf', version_base='1.3'):\n"
        "    cfg = compose('config', [])\n"
        "data = load(cfg.data, torch.device('cpu'))\n"
        "assert len(data.train) == 1077, len(data.train)\n"
        "assert 'sklearn' not in sys.modules, 'imported scikit-learn'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
