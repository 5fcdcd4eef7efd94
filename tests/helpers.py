"""Helpers the tests share: compose a config as `optlab train` would, run the real CLI in a
subprocess or in this process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from optlab.config.resolvers import register

ROOT = Path(__file__).resolve().parents[1]  # the repository
DATA = ROOT / "tests" / "data"  # files the tests read: held hashes, runs written by earlier optlab


def make_config(*overrides: str, return_hydra_config: bool = False):
    """The config `optlab train <overrides>` would run with."""
    register()
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
    from optlab.cli.main import main

    capfd.readouterr()
    try:
        code = main(list(args))
    except SystemExit as stop:
        code = stop.code
    out, err = capfd.readouterr()
    return code, out, err
