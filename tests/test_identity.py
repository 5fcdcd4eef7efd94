"""A run's identity survives every refactor: `config_hash` of every option of every group (and of
each experiment preset's base config) is held to the values that runs already on disk record, so
finished runs are still skipped and interrupted ones still resumed (optlab/jobs.py `plan`)."""

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig

from optlab import config
from optlab.jobs import config_hash

HASHES = json.loads((Path(__file__).parent / "data" / "config_hashes.json").read_text())


def _hash(overrides: list[str]) -> str:
    config.register()
    with initialize_config_module("optlab.conf", version_base="1.3"):
        cfg = compose("config", [*overrides, "hydra.sweep.dir=outputs/held"], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)  # `${hydra:...}` resolves as in a job (a fixed sweep folder)
        return config_hash(cfg)


def test_every_option_is_held():
    """No option exists that the table does not hold, and none it holds has gone."""
    listed = {f"{g}={o}" for g in config.option_groups() if g != "search" for o in config.options(g)}
    assert listed == set(HASHES) - {"default"}


@pytest.mark.parametrize("option", sorted(HASHES))
def test_config_hash_unchanged(option):
    assert _hash([] if option == "default" else [option]) == HASHES[option]
