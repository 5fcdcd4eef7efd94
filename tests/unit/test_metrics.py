"""The one metric table answers every "is this better?": checked against what each metric means."""

import pytest

from optlab import metrics


@pytest.mark.parametrize("name", metrics.METRICS)
def test_every_loss_time_and_distance_is_minimized_every_accuracy_maximized(name):
    if "acc" in name:
        assert not metrics.lower_is_better(name)
    if any(word in name for word in ("loss", "time", "distance", "to_target", "gap", "lambda", "sharp", "condition")):
        assert metrics.lower_is_better(name) and metrics.direction(name) == "minimize"


def test_a_trials_score_so_far_by_hand():
    history = [{"val_acc": 0.5, "val_loss": 0.9, "train_loss": 1.0, "train_acc": 0.4},
               {"val_acc": 0.7, "val_loss": 0.6, "train_loss": 0.8, "train_acc": 0.6},
               {"val_acc": 0.6, "val_loss": 0.7, "train_loss": 0.7, "train_acc": 0.7}]
    assert metrics.so_far("best_val_acc", history) == 0.7  # the best epoch so far
    assert metrics.so_far("best_val_loss", history) == 0.6
    assert metrics.so_far("final_val_acc", history) == 0.6  # the last epoch
    assert metrics.so_far("final_train_loss", history) == 0.7
    assert metrics.so_far("best_val_acc", history, minimize=True) == 0.5  # a search told to minimize it


def test_the_lists_are_views_of_the_table():
    assert set(metrics.TUNE_METRICS) <= set(metrics.METRICS)  # what a search optimizes, a summary ranks
    assert all(metrics.BY_NAME[m].per_epoch for m in metrics.TUNE_METRICS)  # and a pruner reads every epoch
    assert set(metrics.HPARAM_METRICS) | set(metrics.COLUMNS) <= set(metrics.METRICS)
    assert metrics.QUALITY[:2] == ("best_val_acc", "test_acc")  # accuracy first, never a cost
    assert not {"val_loss", "val_acc"} & set(metrics.METRICS)  # an epoch's columns, not a run's record
