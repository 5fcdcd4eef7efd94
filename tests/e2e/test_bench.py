"""`optlab bench`: optimizers tuned with equal budgets, rerun, compared. Known answers hold (heavy
ball against gradient descent on a quadratic of condition number 100); every study and rerun is an
ordinary folder, and the same command goes on without training anything twice; a protocol is data,
and one that asks for more than key=value is refused in one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers import optlab

SMALL = """
trials: 3
seeds: 2
seed: 0
problems:
  digits:
    overrides: ["model.hidden=[16]", epochs=3]
    target: {val_acc: 0.8}
    metric: best_val_acc
optimizers:
  sgd:
    overrides: [optimizer=sgd]
    space: {optimizer.lr: "tag(log,interval(0.03,1))"}
  adam:
    overrides: [optimizer=adam]
    space: {optimizer.lr: "tag(log,interval(0.001,0.1))"}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "protocol.yaml"
    path.write_text(text)
    return path


@pytest.mark.slow
def test_tuned_heavy_ball_needs_about_one_over_sqrt_kappa_of_gradient_descents_steps(tmp_path):
    """On least squares whose Hessian has condition number κ = 100, each method tuned with the
    same budget (12 settings), heavy ball reaches the target in about √κ/κ = 0.1 of the steps
    gradient descent needs: within a factor of two, [0.05, 0.2]."""
    protocol = write(tmp_path, """
trials: 12
seeds: 1
seed: 0
sampler: grid
problems:
  quadratic:
    overrides: [data=regression, data.source.kappa=100.0, data.source.noise=0.0, model=linear, batch_size=full,
                epochs=40]
    rerun: [epochs=800]
    target: {val_loss: 1.0e-9}
    metric: final_val_loss
optimizers:
  gd:
    overrides: [optimizer=sgd]
    space: {optimizer.lr: "choice(0.05,0.075,0.1,0.15,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9)"}
  heavy_ball:
    overrides: [optimizer=momentum]
    space: {optimizer.lr: "choice(0.4,0.7,1.0,1.3)", optimizer.momentum: "choice(0.5,0.7,0.85)"}
""")
    result = optlab("bench", "--protocol", str(protocol), "--out", "bench", cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    found = json.loads((tmp_path / "bench" / "bench.json").read_text())
    steps = {r["optimizer"]: r["summary"]["steps_to_target"]["mean"] for r in found["results"]}
    assert all(r["tuning"]["trials"] == 12 for r in found["results"])  # equal budgets
    assert 0.05 <= steps["heavy_ball"] / steps["gd"] <= 0.2, steps
    assert found["profiles"]["steps_to_target"]["rho"]["heavy_ball"][0] == 1.0  # the fastest on its one problem


def test_a_small_protocol_writes_its_comparison_and_goes_on_without_training_again(tmp_path):
    protocol = write(tmp_path, SMALL)
    result = optlab("bench", "--protocol", str(protocol), "--out", "bench", cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "bench"
    assert "[1/2] digits × sgd: tuning, 3 trials" in result.stderr and "[2/2] digits × adam" in result.stderr
    for name in ("bench.md", "bench.json", "profiles.png", "budget.png"):
        assert (out / name).stat().st_size > 0, name
    found = json.loads((out / "bench.json").read_text())
    assert found["format"] == "optlab-bench/1" and found["protocol"]["trials"] == 3
    for r in found["results"]:
        folder = out / r["problem"] / r["optimizer"]
        assert (folder / "tune" / "study.journal").is_file() and (folder / "reruns" / "summary.csv").is_file()
        assert r["tuning"]["trials"] == 3 and len(r["reruns"]) == 2 and {run["seed"] for run in r["reruns"]} == {0, 1}
        values = [run["best_val_acc"] for run in r["reruns"]]
        assert r["summary"]["best_val_acc"]["mean"] == pytest.approx(sum(values) / 2)
        # the expected best of n trials rises with n, from the mean of the trials to their best
        curve = found["budget"]["digits"][r["optimizer"]]
        assert curve[0] == pytest.approx(sum(r["tuning"]["values"]) / 3)
        assert curve == sorted(curve) and curve[-1] <= max(r["tuning"]["values"])
    (verdict,) = found["verdicts"]
    assert verdict["pair"] == ["sgd", "adam"]
    for count in ("to_target", "final"):
        assert verdict[count]["verdict"] in ("shown", "not shown on this data")
    assert set(verdict["by_budget"]) == {"1", "2", "3"}
    again = optlab("bench", "--protocol", str(protocol), "--out", "bench", cwd=tmp_path, timeout=120)
    assert again.returncode == 0 and "tuning" not in again.stderr and "seeds" not in again.stderr, again.stderr
    other = write(tmp_path, SMALL.replace("trials: 3", "trials: 4"))  # another budget: not these studies
    refused = optlab("bench", "--protocol", str(other), "--out", "bench", cwd=tmp_path)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "digits × sgd: bench/digits/sgd/tune holds the tune of another protocol (its trials differ)" in refused.stderr


def test_the_expected_best_of_n_trials_is_dodges_formula():
    from optlab.analysis.bench import expected_best

    values = [0.5, 0.7, 0.9]  # higher is better: E[max of 2 draws] = Σ v(i)((i/3)² − ((i−1)/3)²)
    assert expected_best(values, 1, False) == pytest.approx(0.7)
    assert expected_best(values, 2, False) == pytest.approx(0.5 / 9 + 0.7 * 3 / 9 + 0.9 * 5 / 9)
    assert expected_best(values, 2, True) == pytest.approx(0.9 / 9 + 0.7 * 3 / 9 + 0.5 * 5 / 9)  # lower is better
    assert expected_best(values, 200, False) == pytest.approx(0.9)


def test_performance_profiles_count_the_problems_within_tau_of_the_fastest():
    from optlab.analysis.bench import profiles

    def result(problem, optimizer, steps):
        return {"problem": problem, "optimizer": optimizer,
                "summary": {"steps_to_target": None if steps is None else {"mean": steps, "ci95": 0}}}

    results = [result("p", "a", 10), result("p", "b", 30), result("q", "a", 50), result("q", "b", 40),
               result("r", "a", None), result("r", "b", 20)]
    found = profiles(results, ["p", "q", "r"], ["a", "b"], taus=[1.0, 1.25, 3.0, math.inf])
    assert found["rho"]["a"] == pytest.approx([1 / 3, 2 / 3, 2 / 3, 2 / 3])  # never reaches r
    assert found["rho"]["b"] == pytest.approx([2 / 3, 2 / 3, 1, 1])


@pytest.mark.parametrize("text, message", [
    ("trials: 0\nseeds: 1\nseed: 0\nproblems: {}\noptimizers: {}", "trials: 0 (allowed: an integer from 1 to 10000)"),
    (SMALL.replace("seeds: 2", "seeds: 1000000000000"), "seeds: 1000000000000 (allowed: an integer from 1 to 1000)"),
    (SMALL.replace("optimizer=sgd]", 'optimizer=sgd, "target={stop:true}"]'), "not hydra, tune, seed, target"),
    (SMALL.replace("optimizer=sgd]", 'optimizer=sgd, "tune={storage:sqlite:////tmp/x.db}"]'), "not hydra, tune"),
    (SMALL.replace("optimizer=sgd]", 'optimizer=sgd, " seed=5"]'), "not hydra, tune, seed"),
    (SMALL.replace('space: {optimizer.lr: "tag(log,interval(0.03,1))"}', 'space: {seed: "choice(1,2)"}'), "space"),
    (SMALL.replace("{val_acc: 0.8}", "{val_acc: .nan}"), "val_acc: a number in [0, 1]"),
    (SMALL.replace("  digits:", "  " + "d" * 300 + ":"), "is not a folder name"),
    (SMALL.replace("optimizer=sgd]", "optimizer=sgd, hydra.callbacks.x._target_=os.system]"), "not hydra"),
    (SMALL.replace("optimizer=adam]", "optimizer._target_=builtins.eval]"), "_target_"),
    (SMALL.replace("  digits:", "  ../../etc:"), "is not a folder name"),
    (SMALL.replace("seed: 0", "seed: 0\nsampler: pbt"), "sampler: 'pbt' (allowed: tpe, random, grid, cmaes)"),
    (SMALL.replace("seed: 0", "seed: 0\nlauncher: x"), "unknown key 'launcher'"),
    (SMALL.replace("metric: best_val_acc", "metric: test_acc"), "metric: 'test_acc' (allowed: best_val_acc"),
    (SMALL.replace("{val_acc: 0.8}", "{val_acc: 0.8, val_loss: 1}"), "target"),
    ("!!python/object/apply:os.system [echo hi]", "not YAML"),
    (SMALL.replace('space: {optimizer.lr: "tag(log,interval(0.03,1))"}', "search: nope"),
     "optimizers.sgd.search: 'nope' (allowed: one of adaptive, batch_size, lr_momentum, regularization"),
    ("trials: [", "not YAML"),
])
def test_a_protocol_is_data_and_a_bad_one_is_refused_in_one_line(text, message, tmp_path):
    protocol = write(tmp_path, text)
    result = optlab("bench", "--protocol", str(protocol), "--out", "bench", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr and str(protocol) in result.stderr
    assert not (tmp_path / "bench").exists()


def test_an_optimizers_space_may_be_a_preset_of_conf_search(tmp_path):
    from optlab.jobs.bench import load

    protocol = write(tmp_path, SMALL.replace('space: {optimizer.lr: "tag(log,interval(0.03,1))"}', "search: lr_momentum"))
    space = load(protocol)["optimizers"]["sgd"]["space"]
    assert space == {"optimizer.lr": "tag(log, interval(0.001, 1.0))", "optimizer.momentum": "interval(0.0, 0.99)"}


def test_a_pair_none_of_whose_trials_finished_ends_the_bench_in_one_line_and_a_fixed_protocol_goes_on(tmp_path):
    sgd_only = SMALL.split("  adam:")[0].replace("trials: 3", "trials: 2").replace("seeds: 2", "seeds: 1")
    diverging = write(tmp_path, sgd_only.replace("interval(0.03,1)", "interval(1000,10000)"))
    result = optlab("bench", "--protocol", str(diverging), "--out", "bench", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == (
        "optlab bench: digits × sgd: no trial of its study finished with a best_val_acc (see bench/digits/sgd/tune.out): "
        "its search space may hold only rates that diverge")
    fixed = write(tmp_path, sgd_only)
    again = optlab("bench", "--protocol", str(fixed), "--out", "bench", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert list((tmp_path / "bench" / "digits" / "sgd" / ".previous").iterdir())  # the diverged study, kept aside


@pytest.mark.slow
def test_ctrl_c_to_the_bench_alone_stops_its_study_resumably_and_the_same_command_goes_on(tmp_path):
    """The signal reaches the running `optlab tune` as its own Ctrl-C: its trials stop at their last
    finished epoch and are queued again, so the next command trains on at once (a child killed
    outright would leave a trial whose heartbeat the next command waits tune.grace_s for)."""
    import signal
    import subprocess
    import sys
    import time

    from test_survival import wait_for_epoch

    protocol = write(tmp_path, SMALL.split("  adam:")[0].replace("epochs=3", "epochs=40"))
    command = [sys.executable, "-m", "optlab", "bench", "--protocol", str(protocol), "--out", "bench"]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_epoch(tmp_path / "bench" / "digits" / "sgd" / "tune" / "000_*", 2, process)
    process.send_signal(signal.SIGINT)  # to the bench's process only, not its group
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and "interrupted; go on with the same command" in err, err
    assert "interrupted" in (tmp_path / "bench" / "digits" / "sgd" / "tune.out").read_text()
    started = time.monotonic()
    again = optlab("bench", "--protocol", str(protocol), "--out", "bench", cwd=tmp_path, timeout=120)
    assert again.returncode == 0, again.stderr
    assert time.monotonic() - started < 60  # tune.grace_s is 120: no trial was left running


def test_an_unknown_protocol_name_lists_the_shipped_ones(tmp_path):
    result = optlab("bench", "--protocol", "nope", cwd=tmp_path)
    assert result.returncode == 2 and "--protocol nope: no such file, nor a shipped protocol (shipped: default, full, " \
        "report)" in result.stderr
