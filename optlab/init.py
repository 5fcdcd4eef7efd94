"""Weight initialization (recitation 2.1): torch.nn.init schemes, loading a pretrained run,
greedy layer-wise pretraining, and a measure of the symmetry that zero or equal weights keep.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from optlab.errors import UsageError
from optlab.store.files import load_checkpoint

log = logging.getLogger("optlab")

# scheme name → how it sets one weight matrix, with the scheme's own config keys
WEIGHTS: dict[str, Callable[[torch.Tensor, DictConfig], object]] = {
    "zeros": lambda w, c: nn.init.zeros_(w),
    "constant": lambda w, c: nn.init.constant_(w, c.value),
    "normal": lambda w, c: nn.init.normal_(w, 0.0, c.std),
    "uniform": lambda w, c: nn.init.uniform_(w, -c.a, c.a),
    "xavier_uniform": lambda w, c: nn.init.xavier_uniform_(w, c.get("gain", 1.0)),
    "xavier_normal": lambda w, c: nn.init.xavier_normal_(w, c.get("gain", 1.0)),
    "kaiming_uniform": lambda w, c: nn.init.kaiming_uniform_(w, nonlinearity=c.get("nonlinearity", "relu")),
    "kaiming_normal": lambda w, c: nn.init.kaiming_normal_(w, nonlinearity=c.get("nonlinearity", "relu")),
    "orthogonal": lambda w, c: nn.init.orthogonal_(w, c.get("gain", 1.0)),
}


def affine_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def initialize(model: nn.Module, cfg: DictConfig, train, batch_size: int) -> None:
    """Initialize `model` in place as `cfg` (the `init` group) says; `train` (a data.Split)
    feeds layer-wise pretraining."""
    scheme = cfg.get("base", "default") if cfg.scheme in ("pretrained", "layerwise") else cfg.scheme
    if scheme != "default":
        for layer in affine_layers(model):
            WEIGHTS[scheme](layer.weight, cfg)
            if layer.bias is not None:
                nn.init.constant_(layer.bias, cfg.get("bias", 0.0))
    if cfg.scheme == "pretrained":
        load_matching(model, cfg.path)
    elif cfg.scheme == "layerwise":
        if any(isinstance(m, nn.Conv2d) for m in model.modules()):
            raise UsageError("init=layerwise pretrains the hidden layers of an MLP; use model=mlp")
        inputs = train.get(torch.arange(len(train), device=train.y.device))[0]
        inputs = inputs.to(next(model.parameters()).device)
        pretrain_layerwise(model, inputs, cfg.epochs, cfg.lr, batch_size)


def load_matching(model: nn.Module, path: str | None) -> tuple[list[str], list[str]]:
    """Copy every tensor of the checkpoint whose name and shape match; return (loaded, kept)."""
    if not path:
        raise UsageError("init=pretrained needs init.path: a checkpoint file or a run folder")
    file = Path(path).expanduser()
    if file.is_dir():
        file = file / "checkpoints" / "best.pt"
    try:
        saved = load_checkpoint(file)  # weights only: a downloaded file cannot run code
    except UsageError as error:  # a missing, truncated, foreign or unsafe file: the user's to fix
        raise UsageError(f"init.path: {error}") from None
    saved = saved.get("model", saved)
    if not isinstance(saved, dict):
        raise UsageError(f"init.path: {file} holds no model state (expected a state dict)")
    own = model.state_dict()
    loaded = [k for k, v in own.items() if k in saved and getattr(saved[k], "shape", None) == v.shape]
    kept = [k for k in own if k not in loaded]
    if not loaded:  # a foreign file: nothing to start from, which is surely not what was meant
        theirs = ", ".join(f"{k} {list(getattr(v, 'shape', []))}" for k, v in list(saved.items())[:4])
        mine = ", ".join(f"{k} {list(v.shape)}" for k, v in list(own.items())[:4])
        raise UsageError(f"init.path: no tensor of {file} fits this model (it holds {theirs or 'nothing'}; "
                         f"the model has {mine}, ...)")
    model.load_state_dict({k: saved[k] for k in loaded}, strict=False)
    log.info("init: loaded %d tensors from %s: %s", len(loaded), file, ", ".join(loaded) or "none")
    log.info("init: kept the base initialization for %d: %s", len(kept), ", ".join(kept) or "none")
    return loaded, kept


def hidden_blocks(model: nn.Module) -> list[nn.Sequential]:
    """Each hidden layer of a sequential model: its affine map and what follows, up to the next."""
    modules = list(model) if isinstance(model, nn.Sequential) else []
    starts = [i for i, m in enumerate(modules) if isinstance(m, nn.Linear)][:-1]
    ends = starts[1:] + [len(modules) - 1]
    return [nn.Sequential(*modules[s:e]) for s, e in zip(starts, ends)]


def pretrain_layerwise(model: nn.Module, x: torch.Tensor, epochs: int, lr: float, batch_size: int) -> None:
    """Greedy layer-wise pretraining: each hidden layer learns to reconstruct its input.

    Layer k is trained (with a throwaway linear decoder, Adam, mean squared error) on the
    outputs of the already pretrained layers 1..k−1, then frozen in place for the next.
    """
    generator = torch.Generator().manual_seed(0)
    inputs = x.flatten(1)
    for k, block in enumerate(hidden_blocks(model), start=1):
        width = block[0].out_features
        decoder = nn.Linear(width, inputs.shape[1]).to(inputs.device)
        optimizer = torch.optim.Adam([*block.parameters(), *decoder.parameters()], lr=lr)
        block.train()
        for epoch in range(epochs):
            order = torch.randperm(len(inputs), generator=generator).to(inputs.device)
            for index in order.split(batch_size):
                loss = F.mse_loss(decoder(block(inputs[index])), inputs[index])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            if epoch in (0, epochs - 1):
                log.info("layerwise: layer %d epoch %d reconstruction MSE %.4f", k, epoch + 1, loss.item())
        with torch.no_grad():
            block.eval()
            inputs = block(inputs)


@torch.no_grad()
def distinct_units(model: nn.Module) -> list[int]:
    """Per hidden layer, how many units differ: units whose incoming weights and bias equal
    another unit's count once. Zero or equal initialization keeps this at 1; a random one
    gives the layer's width.

    "Equal" is within 1e-3 of the largest row's norm: the symmetry is exact in exact arithmetic,
    but BLAS kernels sum rows in different orders and leave differences of ~1e-4 relative, far
    below the O(1) gaps between random units. Rows are sorted by their projection on a fixed
    direction and each is compared with its neighbour: O(n log n) instead of all n² pairs, and
    exact unless a different unit's projection falls between two equal ones.
    """
    counts = []
    for layer in [m for m in model.modules() if isinstance(m, nn.Linear)][:-1]:  # hidden layers
        rows = torch.cat([layer.weight, layer.bias[:, None]], dim=1)
        ordered = rows[(rows @ _direction(rows.shape[1], rows.device)).argsort()]
        gaps = torch.linalg.vector_norm(ordered[1:] - ordered[:-1], dim=1)
        counts.append(gaps > 1e-3 * torch.linalg.vector_norm(rows, dim=1).max())
    return [1 + int(c.sum()) for c in counts]  # read once every kernel is queued


@functools.cache
def _direction(size: int, device: torch.device) -> torch.Tensor:
    """A fixed random direction (its own seed: the training streams are untouched), made once."""
    return torch.randn(size, generator=torch.Generator().manual_seed(0)).to(device)
