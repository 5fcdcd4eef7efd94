"""Which jobs a vectorized sweep stacks: every model and every elementwise optimizer; what
cannot stack says why in one debug line and runs alone."""

from __future__ import annotations

import logging

import pytest
from helpers import ROOT, make_config

from optlab.jobs.vectorize import cannot_stack, group_key

OPTIMIZERS = sorted(p.stem for p in (ROOT / "conf" / "optimizer").glob("*.yaml"))
COUPLED = {"lbfgs", "newton"}  # each step couples all weights (a line search, a Hessian solve)


@pytest.mark.parametrize("model", ["mlp", "linear", "cnn"])
@pytest.mark.parametrize("optimizer", sorted(set(OPTIMIZERS) - COUPLED))
def test_every_model_and_every_elementwise_optimizer_stacks(model, optimizer):
    cfg = make_config(f"model={model}", f"optimizer={optimizer}", "dropout=0.2", "batchnorm=true")
    assert cannot_stack(cfg) is None
    assert group_key(cfg) == group_key(make_config(f"model={model}", f"optimizer={optimizer}", "dropout=0.5",
                                                   "batchnorm=true", "seed=3"))


@pytest.mark.parametrize("overrides, why", [
    (["optimizer=lbfgs"], "LBFGS"),
    (["optimizer=newton", "model=linear"], "Newton"),
    (["surface=rosenbrock"], "a surface run"),
    (["precision=bf16"], "precision or compile set"),
    (["compile=true"], "precision or compile set"),
    (["data.in_memory=false"], "data.in_memory=false"),
    (["optimizer.lr=find"], "optimizer.lr=find"),
])
def test_what_cannot_stack_says_why_in_one_debug_line(overrides, why, caplog):
    cfg = make_config(*overrides)
    with caplog.at_level(logging.DEBUG, logger="optlab"):
        assert group_key(cfg) is None
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(lines) == 1 and lines[0].startswith("not stacked: ") and why in lines[0], lines
