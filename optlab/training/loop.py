"""The training loop, written once: a single run and a vectorized group of K runs alike.

An `Engine` (optlab/training/engine.py) holds the numbers and does the arithmetic: `Single`
(one model and its torch optimizer) or `Stacked` (K models as one). Each run's `Run` keeps its
record: history, logs, best state, early stopping, divergence, its callbacks.
"""

from __future__ import annotations

from optlab.store.logs import progress
from optlab.training.callbacks import StopOnSignal
from optlab.training.engine import Engine
from optlab.training.record import Run


def fit(engine: Engine, runs: list[Run], data, epochs: int, population=None) -> int | None:
    """Train every run to `epochs`, or until it ends (early stopping, divergence). Returns the
    signal that stopped training, if one did: the runs then stand at their last finished epoch.
    `population`: a stacked group's exploit-and-explore step after each epoch
    (optlab/training/population.py)."""
    for run in runs:
        run.begin()
    if population is not None:
        population.begin(engine)
    bar = progress(range(runs[0].epoch + 1, epochs + 1), "train" if len(runs) == 1 else f"train ×{len(runs)}")
    if len(runs) == 1 and hasattr(bar, "set_postfix"):
        runs[0].log.bar = bar  # a single run's bar shows its latest numbers
    with StopOnSignal() as stop:
        for epoch in bar:
            steps = engine.train_epoch(stop)  # the cost: every batch's forward, backward and step
            if steps is None:  # stopped mid-epoch: its steps are dropped, last.pt resumes before them
                break
            val = engine.evaluate()  # one pass over the validation split
            engine.schedule([loss for loss, _ in val])
            for k, run in enumerate(runs):
                if run.active:
                    run.end_epoch(epoch, steps[k], *val[k], engine.member(k), data)
                    if not run.active:
                        engine.freeze(k)
            if not any(run.active for run in runs):
                break
            if population is not None:
                population.after_epoch(engine, runs, epoch)
    for run in runs:
        run.end("interrupted" if stop.signal else "completed")
    return stop.signal
