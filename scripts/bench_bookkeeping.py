"""What a run's bookkeeping costs, piece by piece: optlab's way beside the plain way, in one run.

Each row times one piece a member of a vectorized group (and every run) pays, on the default
config composed with its Hydra node, and prints both ways in ms a call and their ratio:

- build     the model, the optimizer and the schedule with `construct` (the allow-listed class
            called with the checked values) / with Hydra's `instantiate(node, _convert_="all")`
- task      a job's own config, Hydra's node left out, through pickle (the launcher's
            `task_config`) / `copy.deepcopy` (as Hydra's `run_job` copies it)
- hydra     the text of `.hydra/hydra.yaml` of a job not met before (its number, folder and
            overrides its own), each value's text remembered across jobs (`yaml_text`) /
            PyYAML's dump with OmegaConf's dumper, as `OmegaConf.to_yaml` writes it
- yaml      reading a job's `.hydra/config.yaml` with libyaml's parser / PyYAML's Python one
            (`read_yaml` takes the first for text without `*`)
- events    50 records into a run's event file and closing it, the file kept open
            (`event_writer`) / tensorboard's own writer (it opens the file for each record)

    python scripts/bench_bookkeeping.py [--repeat 200]
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

from provenance import stamp


def per_call(work, repeat: int) -> float:
    """ms a call: the best of 3 rounds of `repeat` calls."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(repeat):
            work()
        best = min(best, (time.perf_counter() - started) / repeat)
    return best * 1e3


def composed():
    """The default config, with its Hydra node, as a sweep's job has it."""
    from hydra import compose, initialize_config_module

    from optlab.config.resolvers import register

    register()
    with initialize_config_module("optlab.conf", version_base="1.3"):
        return compose("config", ["optimizer=momentum"], return_hydra_config=True)


def build(cfg, repeat: int) -> tuple[float, float]:
    import torch
    from hydra.utils import instantiate

    from optlab import models, schedules
    from optlab.config.allowlist import construct
    from optlab.training.data import load

    data = load(cfg.data, torch.device("cpu"))
    model = models.build(cfg, data)
    params = list(model.parameters())
    sizes = dict(input_shape=data.input_shape, num_classes=data.num_outputs, dropout=0.0, batchnorm=False)
    schedule = {k: v for k, v in cfg.scheduler.items() if k != "interval"}
    optimizer = construct("optimizer", cfg.optimizer, params=params)

    def ours():
        construct("model", cfg.model, (), **sizes)
        construct("optimizer", cfg.optimizer, params=params)
        schedules.build(cfg.scheduler, optimizer, 10)

    def theirs():
        instantiate(cfg.model, **sizes)
        instantiate(cfg.optimizer, params=params, _convert_="all")
        instantiate(schedule, optimizer=optimizer, _convert_="all")

    return per_call(ours, repeat), per_call(theirs, repeat)


def task(cfg, repeat: int) -> tuple[float, float]:
    from omegaconf import open_dict, read_write

    from hydra_plugins.optlab_vectorized_launcher._core import task_config

    def deep_copy():
        hydra = cfg._get_node("hydra")
        copied = copy.deepcopy(cfg, {id(hydra): hydra})
        with read_write(copied), open_dict(copied):
            del copied["hydra"]

    return per_call(lambda: task_config(cfg), repeat), per_call(deep_copy, repeat)


def hydra_text(cfg, repeat: int) -> tuple[float, float]:
    """Every call a job not seen before, as in a sweep (64 of them share the text remembered)."""
    import yaml
    from omegaconf import OmegaConf
    from omegaconf._utils import get_omega_conf_dumper

    from optlab.config.hydra_compat import yaml_text

    template = OmegaConf.to_container(cfg.hydra, enum_to_str=True)
    jobs = []
    for i in range(6 * repeat):
        node = copy.deepcopy(template)
        node["job"]["num"], node["runtime"]["output_dir"] = i, f"/sweep/lr={i}/seed=0"
        node["overrides"]["task"] = [f"optimizer.lr={i}", "seed=0"]
        jobs.append({"hydra": node})
    mine, plain = iter(jobs[: 3 * repeat]), iter(jobs[3 * repeat:])
    dump = dict(default_flow_style=False, allow_unicode=True, sort_keys=False, Dumper=get_omega_conf_dumper())
    return per_call(lambda: yaml_text(next(mine)), repeat), per_call(lambda: yaml.dump(next(plain), **dump), repeat)


def yaml_read(cfg, repeat: int) -> tuple[float, float]:
    import yaml
    from omegaconf import OmegaConf

    from optlab.store.files import _yaml_loader

    text = OmegaConf.to_yaml({k: cfg[k] for k in cfg if k != "hydra"})
    return tuple(per_call(lambda fast=fast: yaml.load(text, Loader=_yaml_loader(fast)), repeat) for fast in (True, False))


def events(repeat: int) -> tuple[float, float]:
    from tensorboard.compat.proto.summary_pb2 import Summary
    from torch.utils.tensorboard import SummaryWriter

    from optlab.store.logs import event_writer

    folder = Path(tempfile.mkdtemp(prefix="bench_bookkeeping_"))
    count = iter(range(10**9))

    def fifty(make):
        writer = make(folder / str(next(count)))
        for step in range(50):
            writer.file_writer.add_summary(Summary(value=[Summary.Value(tag="loss", simple_value=1.0)]), step)
        writer.close()

    rounds = max(1, repeat // 20)
    return (per_call(lambda: fifty(event_writer), rounds),
            per_call(lambda: fifty(lambda d: SummaryWriter(log_dir=str(d), max_queue=1000, flush_secs=5)), rounds))


def main() -> None:
    print(stamp())  # the machine, torch version, commit and date these figures come from
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200, help="calls a round (three rounds, the best kept)")
    args = parser.parse_args()
    sys.setrecursionlimit(10000)
    cfg = composed()
    rows = {
        "build": ("construct", "instantiate", build(cfg, args.repeat)),
        "task": ("pickle", "deepcopy", task(cfg, args.repeat)),
        "hydra": ("yaml_text", "yaml.dump", hydra_text(cfg, args.repeat)),
        "yaml": ("libyaml", "PyYAML", yaml_read(cfg, args.repeat)),
        "events": ("event_writer", "SummaryWriter", events(args.repeat)),
    }
    print(f"{'piece':<8} {'optlab':>22} {'plain':>28} {'ratio':>7}")
    for name, (ours, theirs, (a, b)) in rows.items():
        print(f"{name:<8} {ours:>12} {a:7.3f} ms {theirs:>18} {b:7.3f} ms {a / b:6.2f}×")


if __name__ == "__main__":
    main()
