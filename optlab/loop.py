"""The training loop, written once: a single run and a vectorized group of K runs alike.

An engine holds the numbers and does the arithmetic: `train.Single` (one model and its torch
optimizer) or `stacked.Stacked` (K models as one). Each run's `Run` keeps its record: history,
logs, best state, early stopping, divergence. An engine offers

- `train_epoch(stop)`: one epoch of steps, a `run.Epoch` per member (None once `stop` fires);
- `evaluate()`: (val_loss, val_acc) per member;
- `schedule(val_losses)`: the learning-rate schedules stepped once per epoch;
- `member(k)`: member k's weights as an ordinary model; `freeze(k)`: member k trains no more.
"""

from __future__ import annotations

from optlab.callbacks import StopOnSignal
from optlab.logs import progress
from optlab.run import Run


def fit(engine, runs: list[Run], data, epochs: int) -> int | None:
    """Train every run to `epochs`, or until it ends (early stopping, divergence). Returns the
    signal that stopped training, if one did: the runs then stand at their last finished epoch."""
    for run in runs:
        run.begin()
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
    for run in runs:
        run.end("interrupted" if stop.signal else "completed")
    return stop.signal
