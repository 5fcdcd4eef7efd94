"""Population-based training's parts: the piecewise schedule a lineage replays with, the exploit
step's index copy, exploring within the search space, and a lineage read back from histories."""

import random

import pytest
import torch
from helpers import make_config

from optlab.jobs.tune import pbt, space
from optlab.schedules import Piecewise
from optlab.training.callbacks import StopOnSignal
from optlab.training.data import load
from optlab.training.stacked import Stacked


def test_piecewise_sets_each_number_once_its_epoch_has_ended_and_resumes_where_it_stood():
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    schedule = Piecewise(optimizer, {2: {"lr": 0.05}, 3: {"momentum": 0.5, "lr": 0.01}})
    seen = []
    for _ in range(4):  # the numbers each epoch trains with, then the epoch's end
        seen.append((optimizer.param_groups[0]["lr"], optimizer.param_groups[0]["momentum"]))
        schedule.step()
    assert seen == [(0.1, 0.9), (0.1, 0.9), (0.05, 0.9), (0.01, 0.5)]
    again = Piecewise(optimizer, {5: {"lr": 1.0}})
    again.load_state_dict({"last_epoch": 4})
    again.step()
    assert optimizer.param_groups[0]["lr"] == 1.0


def test_piecewise_refuses_a_number_the_optimizer_has_not():
    optimizer = torch.optim.Adam(torch.nn.Linear(2, 1).parameters())
    with pytest.raises(Exception, match="numbers Adam has: lr, eps\\)"):
        Piecewise(optimizer, {1: {"momentum": 0.5}})


def test_a_copied_member_goes_on_exactly_as_its_source():
    """After copy_member(0, 1) with member 0's numbers, both members train the same next epoch
    bit for bit (weights, optimizer state and batch order came along); before it they differ."""
    cfgs = [make_config("model.hidden=[8]", "optimizer=adam", f"optimizer.lr={lr}", f"seed={seed}", "dropout=0.2")
            for lr, seed in ((0.01, 0), (0.003, 1))]
    device = torch.device("cpu")
    engine = Stacked(cfgs, load(cfgs[0].data, device), device)
    with StopOnSignal() as stop:
        engine.train_epoch(stop)
        assert not torch.equal(engine.net.flat[0], engine.net.flat[1])
        engine.copy_member(0, 1)
        engine.set_hyperparameters(1, {"lr": 0.01})
        steps = engine.train_epoch(stop)
    assert torch.equal(engine.net.flat[0], engine.net.flat[1])
    assert steps[0].columns["step/loss"] == steps[1].columns["step/loss"]
    assert engine.numbers(1)["optimizer"]["param_groups"][0]["lr"] == 0.01


def test_explore_perturbs_by_a_factor_within_the_range_and_resamples_from_the_space():
    params = space.parse({"optimizer.lr": "tag(log,interval(0.001,0.5))", "optimizer.momentum": "choice(0.0,0.5,0.9)"})
    perturb = pbt.explorer(params, [0.8, 1.2], 0.0)
    for seed in range(20):
        out = perturb({"lr": 0.1, "momentum": 0.5}, random.Random(seed))
        assert out["lr"] in (pytest.approx(0.08), pytest.approx(0.12)) and out["momentum"] in (0.0, 0.9)
    assert {perturb({"lr": 0.45, "momentum": 0.9}, random.Random(s))["lr"] for s in range(20)} == {0.45 * 0.8, 0.5}  # ×1.2: the top
    resample = pbt.explorer(params, [0.8, 1.2], 1.0)
    drawn = [resample({"lr": 0.1, "momentum": 0.5}, random.Random(seed)) for seed in range(50)]
    assert all(0.001 <= d["lr"] <= 0.5 for d in drawn) and {d["momentum"] for d in drawn} == {0.0, 0.5, 0.9}
    assert drawn == [resample({"lr": 0.1, "momentum": 0.5}, random.Random(seed)) for seed in range(50)]


def test_a_lineage_follows_each_move_back_to_epoch_one_and_its_schedule_lists_the_changes():
    def rows(lrs, moves):
        return {e: {"epoch": float(e), "optimizer.lr": lr, "copied_from": moves.get(e)} for e, lr in enumerate(lrs, 1)}

    histories = {0: rows([0.1, 0.1, 0.1, 0.1], {}),
                 1: rows([0.3, 0.3, 0.08, 0.08], {3: 0}),  # after epoch 2 it went on as member 0, lr × 0.8
                 2: rows([0.01, 0.01, 0.01, 0.096], {4: 1})}  # after epoch 3, as member 1, lr × 1.2
    line = pbt.lineage(histories, 2)
    assert [member for member, _ in line] == [0, 0, 1, 2]
    first, at = pbt.schedule([row for _, row in line], ["lr"])
    assert first == {"optimizer.lr": 0.1} and at == {2: {"lr": 0.08}, 3: {"lr": 0.096}}
    params = space.parse({"optimizer.lr": "interval(0.001,1)"})
    assert pbt.replay(["epochs=4", "scheduler=constant"], first, at, params) == \
        "optlab train epochs=4 optimizer.lr=0.1 scheduler=piecewise scheduler.at='{2:{lr:0.08},3:{lr:0.096}}'"
