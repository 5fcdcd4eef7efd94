"""conf/ and the sweeper plugin ship inside the built wheel: a regular (non-editable) install
runs on its own."""

from __future__ import annotations

import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.slow
def test_wheel_install_runs_train_cfg_job_and_a_sweep(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(
        ROOT, source,
        ignore=shutil.ignore_patterns(".git", "outputs", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache"),
    )
    pip = [sys.executable, "-m", "pip"]
    run(*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(source), cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("optlab-*.whl"))

    # A venv of its own whose packages come first, with this environment's (the one pytest runs
    # in, wherever the user installed into) behind them: their folders on its path, but not
    # their .pth files, so an editable optlab here stays out of it.
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", str(venv), cwd=tmp_path)
    python = venv / "bin" / "python"
    own = run(str(python), "-c", "import site; print(site.getsitepackages()[0])", cwd=tmp_path).stdout.strip()
    Path(own, "behind.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    run(*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel), cwd=tmp_path)

    for package in ("optlab.conf", "hydra_plugins.optlab_sweeper"):  # the wheel's copies, not the source's
        where = run(str(python), "-c", f"import {package} as p; print(p.__file__)", cwd=tmp_path).stdout
        assert str(venv) in where, package
    optlab = str(venv / "bin" / "optlab")
    result = run(optlab, "train", "optimizer=adam", "--cfg", "job", cwd=tmp_path)
    assert "_target_: torch.optim.Adam" in result.stdout
    assert "surface: beale, quadratic, rosenbrock, saddle" in run(optlab, "train", "--help", cwd=tmp_path).stdout
    sweep = run(optlab, "train", "-m", "optimizer=sgd,adam", "epochs=1", "model.hidden=[8]",
                f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert "2 runs in 2 configurations" in sweep.stdout  # optlab's sweeper, from the wheel
