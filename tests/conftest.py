"""Shared helpers: compose configs through Hydra's compose API, run the real CLI."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Tests run in one pytest-xdist worker per core, and many start `optlab` subprocesses: one torch
# thread per process keeps them from oversubscribing the cores (several threads each, spinning
# in OpenMP, made some tests 20× slower). Set before torch is imported; subprocesses inherit it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from optlab import config


def make_config(*overrides: str, return_hydra_config: bool = False):
    """The config `optlab train <overrides>` would run with."""
    config.register()
    GlobalHydra.instance().clear()
    with initialize_config_module("optlab.conf", version_base="1.3"):
        return compose("config", list(overrides), return_hydra_config=return_hydra_config)


def optlab(*args: str, cwd: Path, env: dict | None = None, timeout: float = 120):
    """Run the installed `optlab` command as a user would; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", "optlab", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def call(capfd, *args: str) -> tuple[int, str, str]:
    """`optlab <args>` in this process (a test can then make the disk fail, say): exit code,
    stdout, stderr."""
    from optlab.cli import main

    capfd.readouterr()
    try:
        code = main(list(args))
    except SystemExit as stop:
        code = stop.code
    out, err = capfd.readouterr()
    return code, out, err


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
