"""A run's identity survives every refactor: `config_hash` of every option of every group (and of
each experiment preset's base config) is held to the values that runs already on disk record, so
finished runs are still skipped and interrupted ones still resumed (optlab/store/folder.py `plan`)."""

import json
from pathlib import Path

import pytest
from helpers import DATA, call
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig

from optlab.config.identity import config_hash
from optlab.config.resolvers import register
from optlab.config.schema import option_groups, options

HASHES = json.loads((DATA / "config_hashes.json").read_text())


def _hash(overrides: list[str]) -> str:
    register()
    with initialize_config_module("optlab.conf", version_base="1.3"):
        cfg = compose("config", [*overrides, "hydra.sweep.dir=outputs/held"], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)  # `${hydra:...}` resolves as in a job (a fixed sweep folder)
        return config_hash(cfg)


def test_every_option_is_held():
    """No option exists that the table does not hold, and none it holds has gone."""
    listed = {f"{g}={o}" for g in option_groups() if g != "search" for o in options(g)}
    assert listed == set(HASHES) - {"default"}


@pytest.mark.parametrize("option", sorted(HASHES))
def test_config_hash_unchanged(option):
    assert _hash([] if option == "default" else [option]) == HASHES[option]


BEFORE = DATA / "before_layers"  # written by optlab before its package took layers


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_run_written_before_is_skipped_resumed_compared_and_measured(tmp_path, capfd):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(BEFORE / "run", run)
    before = files_of(run)
    code, out, _ = call(capfd, "train", "epochs=2", "model.hidden=[8]", f"hydra.run.dir={run}")
    assert code == 0 and "skipped" in out and files_of(run) == before  # finished with this config: untouched
    code, out, _ = call(capfd, "compare", str(run))
    assert code == 0 and "1 completed" in out
    code, out, _ = call(capfd, "landscape", str(run))
    assert code == 0 and "λ_max" in out
    record = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({**record, "status": "interrupted"}))  # its last.pt goes on
    code, out, err = call(capfd, "train", f"resume={run}")
    assert code == 0, err
    assert json.loads((run / "metrics.json").read_text())["status"] == "completed"


def test_a_sweep_written_before_is_skipped_job_by_job(tmp_path, capfd):
    import shutil

    sweep = tmp_path / "sweep"
    shutil.copytree(BEFORE / "sweep", sweep)
    runs = sorted(p.parent for p in sweep.rglob("metrics.json"))
    before = {run: (run / "metrics.json").read_bytes() for run in runs}
    code, out, err = call(capfd, "train", "-m", "seed=0,1", "epochs=1", "model.hidden=[8]", f"hydra.sweep.dir={sweep}")
    assert code == 0, err
    assert out.count("skipped") == 2 and {run: (run / "metrics.json").read_bytes() for run in runs} == before
    assert (sweep / "summary.md").exists()  # the summary reads them as it read them before
