"""The suite's fixtures: logging put back after an in-process command, and one trained run
shared by the tests that read what a run writes. Helpers live in tests/helpers.py."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

# Tests run in one pytest-xdist worker per core, and many start `optlab` subprocesses: one torch
# thread per process keeps them from oversubscribing the cores (several threads each, spinning
# in OpenMP, made some tests 20× slower). Set before torch is imported; subprocesses inherit it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

from helpers import optlab  # noqa: E402 (after the thread setting)


@pytest.fixture(autouse=True)
def _restore_logging():
    """An in-process `optlab train` lets Hydra point the root logger at this test's captured
    streams, which close with the test: put the earlier handlers back afterwards."""
    handlers, level = logging.root.handlers[:], logging.root.level
    yield
    logging.root.handlers[:] = handlers
    logging.root.setLevel(level)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """One real `optlab train` run (2 epochs) shared by the tests that read what a run writes."""
    cwd = tmp_path_factory.mktemp("cli")
    run_dir = cwd / "run"
    result = optlab("train", "epochs=2", f"hydra.run.dir={run_dir}", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return run_dir


def pytest_collection_modifyitems(config, items):
    """`@pytest.mark.cuda` tests run where a CUDA device is; elsewhere they are skipped, saying so."""
    cuda = [item for item in items if item.get_closest_marker("cuda")]
    if cuda:
        import torch

        if not torch.cuda.is_available():
            for item in cuda:
                item.add_marker(pytest.mark.skip(reason="needs CUDA"))
