"""Data: loaded once, split, standardized, and kept on the training device as tensors.

Batches are index tensors into those tensors (one seeded permutation per epoch), so a step
costs one gather instead of a DataLoader's per-sample Python work. Frame-level data keeps one
zero-padded matrix of frames and gathers each example's context window at batch time, so no
windowed copy is ever made. Data too large for the device stays on the host
(`data.in_memory=false`) and reaches the device batch by batch through a DataLoader.

`load` is memoized within a process: the runs of a sweep that share a data config (and device)
share one prepared `Data`, read, split and standardized once. Training only reads its tensors.
The split is scikit-learn's `train_test_split`, reproduced index for index without importing
scikit-learn (tests/unit/test_data.py checks it against scikit-learn).
"""

from __future__ import annotations

import functools
import json
import math
import os
import pickle
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from optlab.config.allowlist import construct
from optlab.datasets import Source, at
from optlab.errors import UsageError


@dataclass
class Split:
    """Examples and targets. For frames, `x` is the padded frame matrix and `centers[i]` the row
    of example i's frame; its input is rows centers[i]−k … centers[i]+k, flattened."""

    x: torch.Tensor
    y: torch.Tensor
    centers: torch.Tensor | None = None
    context: int = 0

    def __len__(self) -> int:
        return len(self.y)

    def chunks(self, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every example in order, `size` at a time (views where no window must be gathered)."""
        if self.centers is None:
            yield from zip(self.x.split(size), self.y.split(size))
        else:
            for index in torch.arange(len(self), device=self.y.device).split(size):
                yield self.get(index)

    def get(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The inputs and targets of the examples at `index`."""
        if self.centers is None:
            return self.x[index], self.y[index]
        offsets = torch.arange(-self.context, self.context + 1, device=self.x.device)
        rows = self.centers[index].to(self.x.device)[:, None] + offsets
        return self.x[rows].flatten(1), self.y[index]


@dataclass
class Data:
    train: Split
    val: Split
    test: Split
    input_shape: tuple[int, ...]  # one example's input (images: channels, height, width)
    num_outputs: int  # classes, or regression targets
    task: str  # "classification" or "regression"

    def loss(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy for classes, mean squared error for regression targets."""
        if self.task == "regression":
            return F.mse_loss(output.float(), y)
        return F.cross_entropy(output.float(), y)

    def losses(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """`loss` of each of K stacked models at once: outputs and targets [K, B, ...] → [K]."""
        if self.task == "regression":
            return (output.float() - y).square().flatten(1).mean(1)
        return F.cross_entropy(output.float().transpose(1, 2), y, reduction="none").mean(1)

    def score(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Accuracy for classes; R² (1 − SSE/SST) for regression, reported as `acc`."""
        if self.task == "regression":
            return 1 - ((output - y) ** 2).sum() / ((y - y.mean(0)) ** 2).sum()
        return (output.argmax(dim=1) == y).float().mean()


def load(cfg: DictConfig, device: torch.device) -> Data:
    """`prepare(cfg, device)`, memoized within the process on the resolved data config, the
    device and, for the user's own `path`, that file's size and modification time: the runs of
    a sweep get the same `Data` (whose tensors nobody writes into)."""
    key = _key(cfg, device)
    return prepare(cfg, device) if key is None else _prepared(key, device)


@functools.lru_cache(maxsize=4)  # prepared datasets kept (a sweep over data options reuses each)
def _prepared(key: str, device: torch.device) -> Data:
    """`prepare` of the resolved data config that `key` begins with."""
    return prepare(OmegaConf.create(json.loads(key)[0]), device)


def _key(cfg: DictConfig, device: torch.device) -> str | None:
    """The cache key of `load`, or None for a config that does not resolve (`prepare` says why)."""
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
        path = cfg.source.get("path")
    except Exception:  # noqa: BLE001 - an interpolation that fails: prepare raises the user's error
        return None
    try:
        stat = os.stat(os.path.expanduser(path)) if path else None
    except (OSError, TypeError, ValueError):
        stat = None
    changed = (stat.st_size, stat.st_mtime_ns) if stat else None
    return json.dumps([resolved, str(device), changed], sort_keys=True, default=str)


def _read(cfg: DictConfig):
    """The data source's examples, checked: (source, X, y, class names or None, how to name a
    bad cell). Labels become class indices; a regression's targets stay numbers."""
    path = cfg.source.get("path")  # the user's own file, if any: messages name it
    source = construct(f"data: cannot read {path or 'the data'}", cfg.source, READ_ERRORS, at="data.source")
    if isinstance(source, tuple):  # scikit-learn's (X, y)
        source = Source(*source)
    regression = source.task == "regression"
    where = source.where or (lambda name, index: f"{path}: {at(name, index)}" if path else at(name, index))
    x = numbers(source.x, "X", where)
    x = x[:, None] if x.ndim == 1 else x  # one feature per example
    if len(x) == 0 or x[0].size == 0:
        raise UsageError(f"data: no {'examples' if len(x) == 0 else 'features'} in X (shape {list(x.shape)})")
    if not regression and np.ndim(source.y) != 1:
        raise UsageError(f"data: y must hold one class label per example, shape (N,), not {list(np.shape(source.y))}")
    if regression:
        y, classes = numbers(source.y, "y", where).reshape(len(x), -1), None
    else:
        classes, y = np.unique(labels(source.y, "y", where), return_inverse=True)
    if len(x) != len(y):
        raise UsageError(f"data: {len(x)} examples (X) but {len(y)} labels (y){f' in {path}' * bool(path)}: "
                         "one label per example")
    return source, x, y, classes, where


def prepare(cfg: DictConfig, device: torch.device) -> Data:
    """Load `cfg.source`, split it stratified by `cfg.split_seed` (an official test set stays
    the test split), standardize with training statistics, window frames, move to `device`.

    `cfg.order` is the order of the training set as stored: `random` (the split's) or `sorted`
    (by class); with `shuffle=false` the batches follow it every epoch.
    """
    source, x, y, classes, where = _read(cfg)
    regression = source.task == "regression"
    # examples: the rows of x, or for frames the frames (each the centre of its window)
    everything = np.arange(len(y))
    if source.test is not None:
        x_test = numbers(source.test[0], "X_test", where)
        y_test = (np.searchsorted(classes, labels(source.test[1], "y_test", where)) if classes is not None
                  else numbers(source.test[1], "y_test", where))
        rest, test = everything, len(y) + np.arange(len(x_test))
        x, y = np.concatenate([x, x_test]), np.concatenate([y, y_test])
    else:
        rest, test = _split(everything, y, cfg.test_fraction, cfg.split_seed, regression)
    held_out = cfg.val_fraction if source.test is not None else cfg.val_fraction / (1 - cfg.test_fraction)
    train, val = _split(rest, y, held_out, cfg.split_seed, regression)  # val_fraction of all, or of train
    if cfg.order == "sorted" and not regression:  # the training set by class: what shuffling protects against
        train = train[np.argsort(y[train], kind="stable")]

    if cfg.get("standardize", True):  # per input feature, with training statistics only
        features = x.reshape(len(x), -1)
        mean, std = features[train].mean(axis=0), features[train].std(axis=0)
        x = ((features - mean) / np.where(std > 0, std, 1)).reshape(x.shape)  # constant inputs stay 0
    shape = tuple(cfg.shape) if cfg.get("shape") else x.shape[1:]
    if np.prod(shape) != np.prod(x.shape[1:]):
        raise UsageError(f"data.shape: {list(shape)} holds {np.prod(shape)} values, but each example "
                         f"of this data has {np.prod(x.shape[1:])} (shape {list(x.shape[1:])})")
    x = x.reshape(len(x), *shape)
    store = device if cfg.get("in_memory", True) else torch.device("cpu")
    y_all = torch.from_numpy(np.asarray(y, dtype=np.float32 if regression else np.int64)).to(store)

    if source.lengths is not None:  # frames: one zero-padded matrix, windows gathered per batch
        k = cfg.context
        padded, centers = pad_utterances(x, source.lengths, k)
        frames = torch.from_numpy(padded).to(store)
        centers = torch.from_numpy(centers).to(store)

        def split(index: np.ndarray) -> Split:
            at = torch.from_numpy(index).to(store)
            return Split(frames, y_all[at], centers[at], k)

        shape = ((2 * k + 1) * x.shape[1],)
    else:
        x_all = torch.from_numpy(np.ascontiguousarray(x)).to(store)

        def split(index: np.ndarray) -> Split:
            at = torch.from_numpy(index).to(store)
            return Split(x_all[at], y_all[at])

    outputs = y.shape[1] if regression else len(classes)
    return Data(split(train), split(val), split(test), shape, outputs, source.task)


# what reading a data file that is not what it should be raises: the user's to fix
READ_ERRORS = (OSError, ValueError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile)


def numbers(values, name: str, where) -> np.ndarray:
    """`values` (X, or regression targets) as float32, or a one-line UsageError naming the first
    that is no finite real number: NaN, an infinity, beyond float32's range, or complex with an
    imaginary part (a complex array whose imaginary parts are all 0 gives its real parts)."""
    try:
        raw = np.asarray(values)
        text = raw.dtype.kind in "US"  # a CSV's cells: the first that is no number is named below
        with np.errstate(over="ignore"):  # beyond float32's range: refused below
            x = None if text else (raw.real if np.iscomplexobj(raw) else raw).astype(np.float32)
    except (TypeError, ValueError) as error:
        raise UsageError(f"data: the {'examples' if name.startswith('X') else 'targets'} ({name}) "
                         f"are not all numbers ({error})") from None
    if text:
        refuse(~np.vectorize(_is_number, otypes=[bool])(raw), raw, name, where, "every value must be a number")
        with np.errstate(over="ignore"):
            x = raw.astype(np.float32)
    if np.iscomplexobj(raw):
        refuse(raw.imag != 0, raw, name, where)
    refuse(~np.isfinite(x), raw, name, where)
    return x


def labels(values, name: str, where) -> np.ndarray:
    """Class labels as given, or a one-line UsageError naming the first missing one: a NaN or an
    infinity, or in text (a CSV column) an empty field, `nan` or `inf`."""
    y = np.asarray(values)
    if y.dtype.kind in "fc":
        refuse(~np.isfinite(y), y, name, where)
    elif y.dtype.kind in "US":
        refuse(np.vectorize(_missing, otypes=[bool])(y), y, name, where, "every example needs its class label")
    return y


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _missing(label: str) -> bool:
    try:
        return not math.isfinite(float(label))
    except ValueError:
        return not label.strip()


def refuse(bad: np.ndarray, values: np.ndarray, name: str, where,
           need: str = "every value must be a finite real number in float32's range") -> None:
    """A one-line UsageError naming the first value of `values` that `bad` marks, if any."""
    if not bad.any():
        return
    index = tuple(int(i) for i in np.unravel_index(np.argmax(bad), bad.shape))  # the first, row by row
    value = values[index]
    shown = repr(str(value)) if isinstance(value, str) else f"{value:g}"
    raise UsageError(f"data: {where(name, index)} is {shown}: {need} (fix or remove that row)")


def _split(index: np.ndarray, y: np.ndarray, fraction: float, seed: int, regression: bool):
    """Stratified by class (at random where a class has a single example), each part holding
    at least one example per class; data too small for that is the user's to fix."""
    labels = None if regression else y[index]
    held_out = math.ceil(fraction * len(index))
    if labels is not None:
        classes, counts = np.unique(labels, return_counts=True)
        if min(held_out, len(index) - held_out) < len(classes):
            raise UsageError(
                f"data: {len(index)} examples of {len(classes)} classes are too few to split off a "
                f"fraction of {fraction:.3g} with every class on both sides (give more examples, or "
                f"change data.val_fraction / data.test_fraction)")
        if counts.min() < 2:
            labels = None
    if not 0 < held_out < len(index):  # a part would be empty
        raise UsageError(f"data: {len(index)} examples are too few to split off a fraction of "
                         f"{fraction:.3g} and keep some to train on")
    return shuffle_split(index, held_out, labels, seed)


def shuffle_split(index: np.ndarray, n_test: int, labels: np.ndarray | None,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`sklearn.model_selection.train_test_split(index, test_size=fraction, stratify=labels,
    random_state=seed)` with n_test = ceil(fraction·len(index)), index for index, without
    importing scikit-learn (~1 s): the same draws from the same legacy `RandomState` stream
    (whose output NumPy keeps fixed), in the same order, as scikit-learn 1.9's `ShuffleSplit`
    and `StratifiedShuffleSplit`; tests/unit/test_data.py compares it with the installed
    scikit-learn. Stratified, every class needs >= 2 examples and each part >= one example per
    class (`_split` checks that first)."""
    rng = np.random.RandomState(seed)
    n_train = len(index) - n_test
    if labels is None:  # ShuffleSplit
        permutation = rng.permutation(len(index))
        return index[permutation[n_test:]], index[permutation[:n_test]]
    # StratifiedShuffleSplit: each class's share of either part, ties broken at random
    classes, y_indices, class_counts = np.unique(labels, return_inverse=True, return_counts=True)
    class_indices = np.split(np.argsort(y_indices, kind="stable"), np.cumsum(class_counts)[:-1])
    n_i = _approximate_mode(class_counts, n_train, rng)
    t_i = _approximate_mode(class_counts - n_i, n_test, rng)
    train, test = [], []
    for i in range(len(classes)):
        permutation = rng.permutation(class_counts[i])
        mine = class_indices[i].take(permutation, mode="clip")
        train.extend(mine[: n_i[i]])
        test.extend(mine[n_i[i] : n_i[i] + t_i[i]])
    return index[rng.permutation(train)], index[rng.permutation(test)]


def _approximate_mode(class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState) -> np.ndarray:
    """scikit-learn's `sklearn.utils.extmath._approximate_mode`: how many of `n_draws` each class
    gets, in proportion to `class_counts`, floored, then one more to the largest remainders
    (ties broken by `rng`) until they add up."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need_to_add)
            inds = rng.choice(inds, size=add_now, replace=False)
            floored[inds] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)


def pad_utterances(frames: np.ndarray, lengths: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Utterances laid end to end with k zero frames before each and after the last, and the
    row of every original frame in that matrix: a window of ±k rows around a frame then holds
    frames of its own utterance or zeros, never its neighbour's."""
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    offset = k * (np.arange(len(lengths)) + 1)  # k zeros before each utterance
    centers = np.concatenate([start + off + np.arange(n) for start, off, n in zip(starts, offset, lengths)])
    padded = np.zeros((len(frames) + k * (len(lengths) + 1), frames.shape[1]), dtype=frames.dtype)
    padded[centers] = frames
    return padded, centers.astype(np.int64)
