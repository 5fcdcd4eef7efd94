"""The search space: each expression's Optuna distribution, the values a check composes, a
grid's points, and a grid resumed on an existing study."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from optlab.config.resolvers import register
from optlab.errors import UsageError
from optlab.jobs.tune import space


def test_each_expression_becomes_its_distribution():
    lr, epochs, batch, hidden, step = space.parse({
        "optimizer.lr": "tag(log, interval(1e-4, 1))", "init.epochs": "tag(int, interval(1, 4))",
        "batch_size": "range(16,80,32)", "model.hidden": "choice([64],[256,256])", "dropout": "range(0,0.5,0.25)"})
    assert lr.distribution == FloatDistribution(1e-4, 1.0, log=True) and lr.probes == [1e-4, 1.0]
    assert epochs.distribution == IntDistribution(1, 4) and epochs.probes == [1, 4]
    assert batch.distribution == IntDistribution(16, 48, step=32) and batch.grid() == [16, 48]
    assert hidden.distribution == CategoricalDistribution(["[64]", "[256,256]"]) and hidden.override("[64]") == \
        "model.hidden=[64]"
    assert step.grid() == [0.0, 0.25] and step.override(0.25) == "dropout=0.25"


def test_numeric_choices_are_checked_at_their_ends_and_options_each():
    numbers, options = space.parse({"optimizer.lr": "choice(0.1,0.001,1.0)", "optimizer": "choice(sgd,adam)"})
    assert numbers.probes == ["0.001", "1.0"] and options.probes == ["sgd", "adam"]


@pytest.mark.parametrize("text, words", [("range(0,1,0)", "cannot search"), ("range(5,1)", "empty range"),
                                          ("range(0,1e12,1)", "too long a range"),
                                          ("tag(foo, interval(0,1))", "unknown tag"),
                                          ("tag(log, choice(1,2))", "a tag on a list"), ("0.1", "not a search")])
def test_a_malformed_entry_is_the_users_mistake(text, words):
    with pytest.raises(UsageError, match=words):
        space.parse({"optimizer.lr": text})


def test_the_same_search_however_written():
    assert space.described(space.parse({"a": "interval(0, 0.5)", "b": "choice(x,y)"})) == \
        space.described(space.parse({"b": "choice(x,y)", "a": "interval(0,0.5)"}))


def test_a_grid_queued_again_skips_the_points_a_study_has(tmp_path: Path):
    from optlab.jobs.tune.study import load
    from optlab.jobs.tune.trial import queue_grid

    params = space.parse({"optimizer.lr": "choice(0.1,0.2,0.3)"})
    study = load(tmp_path / "study.journal", "maximize")
    trial = study.ask({p.key: p.distribution for p in params})  # a random trial took one point
    study.tell(trial, 0.5)
    assert queue_grid(study, params, seed=0) == 3
    queued = [t.system_attrs["fixed_params"]["optimizer.lr"] for t in study.get_trials() if t.state.name == "WAITING"]
    assert sorted(queued + [trial.params["optimizer.lr"]]) == ["0.1", "0.2", "0.3"]
    queue_grid(study, params, seed=0)  # a second start queues nothing twice
    assert len(study.get_trials()) == 3


@pytest.mark.parametrize("text", ["choice(0.1,nan)", "interval(0,inf)", "interval(-inf,1)", "range(0,inf,1)",
                                  "range(0,1,nan)", "choice([1,nan],[2])", "choice(a,'nan')", "choice(0.1,1e999)"])
def test_nan_and_infinities_are_refused(text):
    with pytest.raises(UsageError, match=r"NaN or infinity in 'optimizer.lr'"):
        space.parse({"optimizer.lr": text})


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(), min_size=2, max_size=4), st.sampled_from(["choice", "interval", "range"]))
def test_a_drawn_space_is_refused_when_and_only_when_a_number_is_not_finite(numbers, kind):
    used = numbers if kind == "choice" else numbers[:3] if kind == "range" else numbers[:2]
    text = f"{kind}({','.join(map(repr, used))})"
    try:
        (param,) = space.parse({"optimizer.lr": text})
    except UsageError as error:
        assert ("NaN or infinity" in str(error)) == (not all(map(math.isfinite, used))), text
    else:
        assert all(map(math.isfinite, used)) and all(math.isfinite(float(v)) for v in param.probes), text


def test_every_corner_of_a_small_space_and_every_pair_of_a_large_one():
    small = space.points(space.parse({"a": "interval(0,1)", "b": "choice(x,y,z)", "c": "interval(0,1)"}))
    assert len(small) == 12 and small[0] == {"a": 0.0, "b": "x", "c": 0.0}  # 2 × 3 × 2, the first ends first
    assert {"a": 1.0, "b": "z", "c": 1.0} in small
    keys = "abcdefg"  # 2^7 = 128 corners: more than CORNERS
    large = space.points(space.parse({k: "interval(0,1)" for k in keys}))
    assert len(large) == 1 + 7 + 21  # no key moved, one, or two
    assert all(sum(point.values()) <= 2 for point in large)
    assert all({**dict.fromkeys(keys, 0.0), i: 1.0, j: 1.0} in large for i in keys for j in keys)


def test_a_rule_two_keys_break_together_is_found_before_any_trial():
    """Each fraction alone is fine at either end of its interval; both at their high ends
    leave no examples to train on (val_fraction + test_fraction < 1)."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra


    register()
    GlobalHydra.instance().clear()
    params = space.parse({"data.val_fraction": "interval(0.3,0.6)", "data.test_fraction": "interval(0.3,0.6)"})
    with initialize_config_module("optlab.conf", version_base="1.3"):
        with pytest.raises(UsageError, match=r"at data.val_fraction=0.6, data.test_fraction=0.6: .*"
                                             r"val_fraction \+ test_fraction < 1"):
            space.check(params, ["device=cpu"])
        space.check(space.parse({"data.val_fraction": "interval(0.1,0.4)",
                                 "data.test_fraction": "interval(0.1,0.4)"}), ["device=cpu"])
