"""Population-based training (Jaderberg et al. 2017) of a stacked group: every `interval` epochs
each member of the bottom `quantile` goes on as a member of the top quantile (exploit: an index
copy of its weights, optimizer state and random streams inside the stacked model, see
`Stacked.copy_member`) with that member's hyperparameters explored (`explore`, which the search
gives). The libraries that run PBT (Ray Tune, hypersweeper) copy checkpoint files between
processes; inside one stacked model nothing leaves memory, so this is written here.

A member's lineage (the members it went on from, epoch by epoch) is one run's trajectory: the
same seed's batches and masks, its hyperparameters changed at epoch ends. `scheduler=piecewise`
(optlab/schedules.py) replays it as a single run.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from optlab.training.callbacks import Callback, snapshot


class Member(Callback):
    """A member's part of the population, as columns of its history: the optimizer numbers it
    trained each epoch with (`optimizer.<name>`, read from its optimizer, which `Population.begin`
    binds) and the trial it went on from at the start of the epoch (`copied_from`, empty when none)."""

    def __init__(self, number: int, names: Sequence[str]):
        self.number, self.names, self.source, self.optimizer = number, list(names), None, None

    def columns(self, run, epoch: int) -> dict[str, float | None]:
        numbers = self.optimizer.param_groups[0]
        row = {f"optimizer.{name}": numbers[name] for name in self.names}
        row["copied_from"], self.source = self.source, None  # said once: in the row of the epoch it began
        return row

    def state_dict(self) -> dict:
        return {"source": self.source}

    def load_state_dict(self, state: dict) -> None:
        self.source = state["source"]


class Population:
    """The exploit-and-explore step of a stacked group after its members' epochs (the loop,
    optlab/training/loop.py, calls `after_epoch`). Members are ranked by `column` of their
    latest row (`minimize`: lower is better); the decisions are drawn from a generator seeded
    by (`seed`, epoch), so a resumed population decides as it would have."""

    def __init__(self, members: Sequence[Member], column: str, minimize: bool, interval: int, quantile: float,
                 explore: Callable[[dict[str, float], random.Random], dict[str, float]], seed: int, epochs: int):
        self.members, self.column, self.minimize = list(members), column, minimize
        self.interval, self.quantile, self.explore, self.seed, self.epochs = interval, quantile, explore, seed, epochs

    def begin(self, engine) -> None:
        """Each member's record reads its numbers from its own optimizer in `engine`."""
        for member, optimizer in zip(self.members, engine.optimizers):
            member.optimizer = optimizer

    def after_epoch(self, engine, runs: list, epoch: int) -> None:
        if epoch % self.interval or epoch >= self.epochs:
            return
        alive = [k for k, run in enumerate(runs) if run.active]
        ranked = sorted(alive, key=lambda k: runs[k].history[-1][self.column], reverse=not self.minimize)
        n = int(len(ranked) * self.quantile)
        rng = random.Random(f"pbt:{self.seed}:{epoch}")
        for dst in ranked[len(ranked) - n:]:
            src = rng.choice(ranked[:n])
            values = self.explore(dict(engine.optimizers[src].param_groups[0]), rng)
            engine.copy_member(src, dst)
            engine.set_hyperparameters(dst, values)
            self.members[dst].source = self.members[src].number
            runs[dst].logger.info(
                "epoch %d: goes on as trial %d (%s %.4g against its %.4g), with %s", epoch, self.members[src].number,
                self.column, runs[src].history[-1][self.column], runs[dst].history[-1][self.column],
                " ".join(f"optimizer.{k}={v:.4g}" for k, v in values.items()))
            runs[dst].resume_point = snapshot(runs[dst].state())  # what last.pt keeps: the member it now is
