"""Composition through Hydra's compose API, the schema's rules, and run names."""

from __future__ import annotations

import pytest
from helpers import ROOT, make_config
from hydra.utils import instantiate

from optlab.config.checks import validate
from optlab.config.schema import GROUPS
from optlab.errors import ConfigError
from optlab.naming import run_name

CONF = ROOT / "conf"


def test_defaults_compose_into_a_valid_config():
    cfg = make_config()
    validate(cfg)
    assert cfg.optimizer._target_ == "torch.optim.SGD" and cfg.model.hidden == [256, 256]
    assert (cfg.batch_size, cfg.epochs, cfg.seed, cfg.device, cfg.shuffle) == (64, 20, 0, "auto", True)


def test_every_option_of_every_group_composes_and_passes_its_rules():
    """validate() refuses a key without a rule, so this also proves every YAML key is checked."""
    for group in GROUPS:
        for option in sorted(p.stem for p in (CONF / group).glob("*.yaml")):
            validate(make_config(f"{group}={option}"))


def test_optimizer_and_scheduler_configs_point_straight_at_torch():
    import torch

    params = [torch.nn.Parameter(torch.zeros(2))]
    for option, cls in (("sgd", torch.optim.SGD), ("adam", torch.optim.Adam)):
        optimizer = instantiate(make_config(f"optimizer={option}").optimizer, params=params)
        assert type(optimizer) is cls
    from optlab.schedules import build

    scheduler, per_step = build(make_config().scheduler, optimizer, steps_per_epoch=10)
    assert isinstance(scheduler, torch.optim.lr_scheduler.ConstantLR) and not per_step
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == make_config("optimizer=adam").optimizer.lr


def test_overrides_reach_the_config():
    cfg = make_config("optimizer=adam", "optimizer.betas=[0.8,0.9]", "batch_size=full", "seed=3")
    assert cfg.optimizer.betas == [0.8, 0.9] and cfg.batch_size == "full" and cfg.seed == 3


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["batch_size=0"], "batch_size"),
        (["batch_size=2.5"], "batch_size"),
        (["epochs=0"], "epochs"),
        (["seed=-1"], "seed"),
        (["device=gpu"], "device"),
        (["optimizer.lr=0"], "optimizer.lr"),
        (["optimizer.momentum=1"], "optimizer.momentum"),
        (["optimizer.weight_decay=-0.1"], "optimizer.weight_decay"),
        (["optimizer=adam", "optimizer.eps=0"], "optimizer.eps"),
        (["model.hidden=[64,-1]"], "model.hidden"),
        (["data.split_seed=-2"], "data.split_seed"),
        (["data.test_fraction=1"], "data.test_fraction"),
        (["scheduler.factor=2"], "scheduler.factor"),
        (["+optimizer.foreach=true"], "optimizer.foreach"),
    ],
)
def test_rules_reject_out_of_range_values(overrides, key):
    with pytest.raises(ConfigError) as error:
        validate(make_config(*overrides))
    assert error.value.key == key


def test_error_message_names_key_value_and_allowed():
    error = ConfigError("optimizer.lr", -1, "a number > 0")
    assert str(error) == "invalid value for 'optimizer.lr': -1 (allowed: a number > 0)"


def test_run_names_are_flat_and_safe():
    assert run_name("2026-01-01_10-00-00", []) == "2026-01-01_10-00-00"
    assert run_name(3, ["optimizer=adam", "batch_size=64"]) == "3_batch_size=64,optimizer=adam"
    name = run_name("t", ["data.path=/tmp/x y", "model.hidden=[8,8]"])
    assert "/" not in name and " " not in name and "[" not in name
    long = run_name("t", ["a=" + "x" * 500])
    assert len(long) < 140 and long != run_name("t", ["a=" + "x" * 499])
    assert run_name("t", ["rerun=true", "summary.metric=test_acc"]) == "t"  # they change no result


def test_run_dir_comes_from_time_and_overrides():
    cfg = make_config("optimizer=adam", return_hydra_config=True)
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().set_config(cfg)
    assert cfg.hydra.run.dir.startswith("outputs/runs/")
    assert cfg.hydra.run.dir.endswith("_optimizer=adam")


@pytest.mark.slow
def test_every_experiment_preset_and_every_value_it_sweeps_composes_and_passes_its_rules():
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    for preset in sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")):
        cfg = make_config(f"experiment={preset}", return_hydra_config=True)
        assert str(cfg.hydra.mode) == "RunMode.MULTIRUN", preset
        assert cfg.hydra.sweep.dir.startswith(f"outputs/experiments/{preset}/"), preset
        sweep = dict(cfg.hydra.sweeper.params)
        assert sweep, preset
        for key, values in sweep.items():
            for value in str(values).split(","):
                cfg = make_config(f"experiment={preset}", f"{key}={value}", return_hydra_config=True)
                HydraConfig.instance().set_config(cfg)  # ${hydra:sweep.dir} in init.path
                with open_dict(cfg):
                    del cfg["hydra"]  # the job's config, as the run sees it
                validate(cfg)


@pytest.mark.parametrize("overrides", [[], ["optimizer=adam", "model.hidden=[32,16]", "scheduler=step"],
                                       ["hydra.job.name='a: b ü'", "+extra={a:{},b:[]}"]])
def test_a_jobs_hydra_files_are_the_text_hydra_writes(tmp_path, overrides):
    """optlab writes a job's .hydra/ itself (entry by entry, remembered across a sweep's jobs):
    byte for byte what Hydra's own run_job writes, twice in a row."""
    from hydra.core.utils import _save_config
    from omegaconf import OmegaConf

    from optlab.config.hydra_compat import save_job_files

    cfg = make_config(*overrides, return_hydra_config=True)
    for _ in range(2):
        save_job_files(cfg, tmp_path / "optlab")
    task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    for name, node in (("config", task), ("hydra", OmegaConf.masked_copy(cfg, "hydra")),
                       ("overrides", cfg.hydra.overrides.task)):
        _save_config(node, f"{name}.yaml", tmp_path / "hydra")
        assert (tmp_path / "optlab" / ".hydra" / f"{name}.yaml").read_bytes() == \
               (tmp_path / "hydra" / f"{name}.yaml").read_bytes()


@pytest.mark.parametrize("node", [{"a:b": {"c": 1, "d: e": [1, "2"]}, "x": {}, "y": []},
                                  {"hydra": {"k:1": {"z": "y: z", "w": "1e-3"}, "n": None}}, [], {},
                                  {"a": {"b" * 200: {"c": 1}, "d": [{"e": {"f": 2}}], 4: {"lr": 0.5}},
                                   "g": {"h": {"i": "x " * 60}}},
                                  {"t": {True: 1, 1: 1.0, "1": True}, "u": {1: {"v": 1}}, "w": {True: {"v": 1}}}])
def test_remembered_yaml_is_omegaconfs_text_for_awkward_keys_and_values(node):
    from omegaconf import OmegaConf

    from optlab.config.hydra_compat import yaml_text

    assert yaml_text(node) == yaml_text(node) == OmegaConf.to_yaml(node)


def test_construct_builds_what_instantiate_builds_and_refuses_instantiates_own_flags():
    """`construct` calls the allow-listed `_target_` itself: the object equals Hydra's
    `instantiate` of the same node, keyword arguments win over the node's values, and a node
    that would steer `instantiate` (`_partial_`, `_args_`, ...) is refused in one line."""
    import torch

    from optlab.config.allowlist import construct
    from optlab.errors import UsageError

    params = [torch.nn.Parameter(torch.zeros(3))]
    node = make_config("optimizer=adam", "optimizer.lr=0.01").optimizer
    ours = construct("optimizer", node, params=params, weight_decay=0.5)
    theirs = instantiate(node, params=params, weight_decay=0.5, _convert_="all")
    assert type(ours) is type(theirs) and ours.defaults == theirs.defaults and ours.defaults["weight_decay"] == 0.5
    for flag, value in (("_partial_", True), ("_args_", [1]), ("_recursive_", False), ("_convert_", "none")):
        with pytest.raises(UsageError, match=f"refused 'optimizer.{flag}'") as refused:
            construct("optimizer", {"_target_": "torch.optim.SGD", "lr": 0.1, flag: value}, params=params)
        assert "\n" not in str(refused.value)
    with pytest.raises(UsageError, match="^optimizer: Invalid learning rate"):  # torch's complaint, one line
        construct("optimizer", {"_target_": "torch.optim.SGD", "lr": -1.0}, params=params)
    # arguments the class does not take, or lacks; no class at all; a key that is not a name
    with pytest.raises(UsageError, match=r"^optimizer: torch.optim.Adam got an unexpected keyword argument "
                                         r"'momentum' \(its arguments: lr, betas, eps"):
        construct("optimizer", {"_target_": "torch.optim.Adam", "lr": 0.1, "momentum": 0.9}, params=params)
    with pytest.raises(UsageError, match="^scheduler: .*StepLR missing a required argument: 'step_size'"):
        construct("scheduler", {"_target_": "torch.optim.lr_scheduler.StepLR"}, optimizer=ours)
    for node in ({"lr": 0.1}, None, [1, 2]):
        with pytest.raises(UsageError, match="^invalid value for 'optimizer': .* whose _target_ is one of"):
            construct("optimizer", node, params=params)
    with pytest.raises(UsageError, match="refused 'optimizer.1'"):
        construct("optimizer", {"_target_": "torch.optim.SGD", 1: 2}, params=params)


def test_a_jobs_task_config_is_the_copy_hydra_makes_without_its_node():
    """The launcher's pickled copy equals Hydra's run_job copy (deep copy, `hydra` dropped): the
    same text, type and flags, and changing it leaves the job's config as it was."""
    import copy

    from omegaconf import OmegaConf, open_dict, read_write

    from hydra_plugins.optlab_vectorized_launcher._core import task_config

    cfg = make_config("optimizer=adam", "scheduler=onecycle", return_hydra_config=True)
    ours = task_config(cfg)
    hydra = cfg._get_node("hydra")
    theirs = copy.deepcopy(cfg, {id(hydra): hydra})
    with read_write(theirs), open_dict(theirs):
        del theirs["hydra"]
    assert OmegaConf.to_yaml(ours) == OmegaConf.to_yaml(theirs) and "hydra" not in ours
    assert OmegaConf.get_type(ours) is OmegaConf.get_type(theirs)
    assert OmegaConf.is_struct(ours) == OmegaConf.is_struct(theirs) and not OmegaConf.is_readonly(ours)
    ours.optimizer.lr = 0.5
    assert cfg.optimizer.lr != 0.5 and "hydra" in cfg
