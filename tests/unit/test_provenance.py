"""Every benchmark's first line says where its figures come from (scripts/provenance.py)."""

import re
import runpy

import torch

from helpers import ROOT


def test_the_stamp_names_machine_torch_commit_and_date():
    stamp = runpy.run_path(str(ROOT / "scripts" / "provenance.py"))["stamp"]()
    assert stamp.startswith("machine: ") and f"torch {torch.__version__}" in stamp
    assert re.search(r"commit [0-9a-f]{7,}", stamp) and re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC$", stamp)
