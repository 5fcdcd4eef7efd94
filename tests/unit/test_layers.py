"""The house in layers: each layer imports only those below it (import-linter's contracts in
pyproject.toml, which count imports inside functions too), and no module or function grows
past what a reader takes in at once."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

PACKAGES = ("optlab", "hydra_plugins")
TABLES = {"GROUP_KEYS", "TABLE", "ALLOWED"}  # data, not logic: exempt from the size rule


def lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                           "lint_imports_command()"], cwd=root, capture_output=True, text=True)


def test_the_layers_hold():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


@pytest.mark.slow
def test_an_upward_import_breaks_the_contract(tmp_path):
    """The contract can fail: a copy of the package whose config layer imports the jobs layer
    (inside a function, where a lazy import would hide a circle) is refused."""
    for name in (*PACKAGES, "conf"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with (tmp_path / "optlab" / "config" / "checks.py").open("a") as f:
        f.write("\n\ndef upward():\n    from optlab.jobs import dispatch  # noqa: F401\n")
    result = lint(tmp_path)
    assert result.returncode != 0 and "optlab.config.checks -> optlab.jobs.dispatch" in result.stdout


def sources():
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", list(sources()), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_and_functions_stay_small(path):
    tree = ast.parse(path.read_text())
    tables = sum(node.end_lineno - node.lineno + 1 for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
                 and any(getattr(t, "id", None) in TABLES for t in getattr(node, "targets", [getattr(node, "target", None)])))
    assert len(path.read_text().splitlines()) - tables <= 400, f"{path}: over 400 lines"
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            assert node.end_lineno - node.lineno + 1 <= 60, f"{path}:{node.lineno} {node.name}: over 60 lines"
