"""`threads=auto`: one thread for a small model, the cores of this job for a large one, never
the load; a number as set; never part of a run's identity."""

from __future__ import annotations

import pytest
import torch
from helpers import make_config

from optlab.config.identity import config_hash
from optlab.models import CNN, MLP
from optlab.training import threads


@pytest.fixture(autouse=True)
def restore_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "_share", None)
    yield
    torch.set_num_threads(before)


def test_a_step_costs_three_forward_passes_of_multiply_adds():
    """MLP 64 → 32 → 10 at batch 64: 2·64·(64·32 + 32·10) FLOPs forward, three times that a step."""
    assert threads.step_flops(MLP(64, 10, [32]), torch.randn(64, 64)) == 3 * 2 * 64 * (64 * 32 + 32 * 10)
    # a convolution's cost is per output pixel: 3·2·B·(16·28·28·1·9) for the first layer alone
    conv = threads.step_flops(CNN((1, 28, 28), 10, channels=[16], hidden=[]), torch.randn(8, 1, 28, 28))
    assert conv == 3 * 2 * 8 * (16 * 28 * 28 * 9 + 16 * 14 * 14 * 10)


def test_auto_gives_a_small_model_one_thread_and_a_large_one_the_cores_of_its_job(monkeypatch):
    monkeypatch.setattr(threads, "cores", lambda: 4)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "busy_elsewhere", lambda: 0)
    assert threads.choose("auto", MLP(64, 10, [32]), torch.randn(64, 64)) == 1
    big = MLP(64, 10, [1024, 1024])
    assert threads.choose("auto", big, torch.randn(64, 64)) == 4 == torch.get_num_threads()
    assert threads.choose("auto", MLP(64, 10, [32]), torch.randn(64, 64), copies=64) == 4  # a stacked group
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # torch's convention: no more threads than this
    assert threads.choose("auto", big, torch.randn(64, 64)) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    threads.share(2)  # the joblib launcher's two jobs at once: two cores each
    assert threads.choose("auto", big, torch.randn(64, 64)) == 2
    assert threads.choose(3, big, torch.randn(64, 64)) == 3 == torch.get_num_threads()  # as set


def test_the_load_never_changes_the_count_but_a_busy_machine_gets_a_line(monkeypatch, caplog):
    """The count decides the order kernels sum in: a run must not differ from itself an hour
    later because the machine was busier. The load is reported instead."""
    monkeypatch.setattr(threads, "cores", lambda: 4)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    big = MLP(64, 10, [1024, 1024])
    with caplog.at_level("INFO", logger="optlab"):
        for busy in (0, 3):
            monkeypatch.setattr(threads, "busy_elsewhere", lambda busy=busy: busy)
            assert threads.choose("auto", big, torch.randn(64, 64)) == 4
    lines = [r.getMessage() for r in caplog.records if "busy" in r.getMessage()]
    assert lines == ["threads: 3 of 4 cores are busy with other processes; threads=1 may train several times "
                     "faster here (its numbers differ from threads=4's in the last bits)"]
    caplog.clear()
    threads.share(2)  # two jobs of a sweep on two cores each: the other job's two busy cores are its own
    monkeypatch.setattr(threads, "busy_elsewhere", lambda: 2)
    with caplog.at_level("INFO", logger="optlab"):
        assert threads.choose("auto", big, torch.randn(64, 64)) == 2
    assert not [r for r in caplog.records if "busy" in r.getMessage()]


def test_busy_elsewhere_counts_other_runnable_processes(tmp_path):
    import multiprocessing

    quiet = threads.busy_elsewhere()
    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(2)]
    for process in spinners:
        process.start()
    try:
        assert threads.busy_elsewhere() >= min(quiet + 1, 2)
    finally:
        for process in spinners:
            process.terminate()


def _spin():
    while True:
        pass


def test_threads_is_not_part_of_a_runs_identity():
    assert config_hash(make_config("threads=1")) == config_hash(make_config()) == config_hash(make_config("threads=auto"))
