"""Comparing runs: what a sweep shows when it ends.

`SweepCallback` is a Hydra callback (conf/config.yaml, hydra.callbacks): when a multirun ends
it overlays the paths of every surface run in the sweep on one contour plot per surface,
each labelled by the overrides that set it apart.
"""

from __future__ import annotations

import csv
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf


class SweepCallback(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        overlay_trajectories(Path(config.hydra.sweep.dir))


def overlay_trajectories(sweep_dir: Path) -> list[Path]:
    """Write trajectories.png (one per distinct surface) into `sweep_dir`; return the files."""
    runs = sorted(p.parent for p in sweep_dir.glob("*/trajectory.csv"))
    if not runs:
        return []
    import numpy as np
    from hydra.utils import instantiate

    from optlab.surfaces import plot_paths, save_figure

    overrides = {run: OmegaConf.load(run / ".hydra" / "overrides.yaml") for run in runs}
    shared = set.intersection(*(set(o) for o in overrides.values()))
    groups: dict[str, list[Path]] = {}
    for run in runs:
        surface = OmegaConf.load(run / ".hydra" / "config.yaml").surface
        groups.setdefault(OmegaConf.to_yaml(surface), []).append(run)

    written = []
    for i, (surface_yaml, members) in enumerate(groups.items()):
        surface = instantiate(OmegaConf.create(surface_yaml), _convert_="all")
        paths = {}
        for run in members:
            label = ",".join(o for o in overrides[run] if o not in shared) or run.name
            with open(run / "trajectory.csv") as f:
                paths[label] = np.array([[float(r["x"]), float(r["y"])] for r in csv.DictReader(f)])
        name = type(surface).__name__.lower()
        target = sweep_dir / ("trajectories.png" if len(groups) == 1 else f"trajectories_{i}_{name}.png")
        save_figure(plot_paths(surface, paths, f"{name}: {len(paths)} runs"), target)
        written.append(target)
    return written
