"""conf/ ships inside the built wheel: a regular (non-editable) install runs on its own."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_wheel_install_runs_train_cfg_job(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(
        ROOT, source,
        ignore=shutil.ignore_patterns(".git", "outputs", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache"),
    )
    pip = [sys.executable, "-m", "pip"]
    run(*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(source), cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("optlab-*.whl"))

    venv = tmp_path / "venv"  # sees the installed dependencies, but its own optlab comes first
    run(sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv), cwd=tmp_path)
    python = venv / "bin" / "python"
    run(*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel), cwd=tmp_path)

    where = run(str(python), "-c", "import optlab.conf as c; print(c.__file__)", cwd=tmp_path).stdout
    assert str(venv) in where  # the wheel's copy, not the source tree
    result = run(str(venv / "bin" / "optlab"), "train", "optimizer=adam", "--cfg", "job", cwd=tmp_path)
    assert "_target_: torch.optim.Adam" in result.stdout
    assert "surface: beale, quadratic, rosenbrock, saddle" in run(str(venv / "bin" / "optlab"), "train", "--help", cwd=tmp_path).stdout
