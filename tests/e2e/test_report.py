"""`optlab report`: the interval by hand, verdicts, matching runs to a claim, a report from a
real preset that a second call reuses, a self-contained page, and the README table."""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from helpers import ROOT
from omegaconf import OmegaConf

from optlab.analysis import report
from optlab.analysis.runs import RunFolder


def claim(direction="lower", metric="best_val_loss", **sides):
    return OmegaConf.create({"experiment": "x", "claim": "c", "metric": metric, "direction": direction,
                             "better": sides.get("better", {"k": "a"}), "than": sides.get("than", {"k": "b"})})


def run(metrics: dict, **overrides) -> RunFolder:
    return RunFolder(Path("r"), metrics, {k: str(v) for k, v in overrides.items()}, {"data.source._target_": "x.digits"})


def test_welchs_interval_by_hand():
    """a = 1, 2, 3 and b = 4, 5, 6: Δ = −3, each variance of the mean 1/3, se = √(2/3), Welch's
    df = (2/3)² / (2·(1/3)²/2) = 4, t(0.975, 4) = 2.7764: Δ ± 2.2670."""
    low, high, note = report.interval([1, 2, 3], [4, 5, 6], deterministic=False)
    assert low == pytest.approx(-3 - 2.7764 * (2 / 3) ** 0.5, abs=1e-4)
    assert high == pytest.approx(-3 + 2.2670, abs=1e-4) and "4.0 df" in note
    assert report.interval([1.0], [2.0], deterministic=True)[:2] == (-1.0, -1.0)
    assert report.interval([1.0], [2.0, 3.0], deterministic=False)[:2] == (float("-inf"), float("inf"))


@pytest.mark.parametrize("direction, low, high, verdict", [
    ("lower", -2.0, -0.5, "shown"), ("lower", -2.0, 0.5, "not shown on this data"), ("lower", 0.5, 2.0, "opposite"),
    ("higher", 0.1, 0.3, "shown"), ("higher", -0.3, -0.1, "opposite"),
])
def test_the_verdict_needs_the_whole_interval_on_one_side(direction, low, high, verdict):
    finding = report.Finding(claim(direction), "s", [1.0], [1.0], low, high, "", "digits")
    assert finding.verdict == verdict


def test_a_claim_compares_the_runs_its_overrides_pick_and_diverged_counts():
    runs = [run({"status": "diverged", "best_val_loss": float("nan")}, batchnorm="false", seed=s) for s in range(3)]
    runs += [run({"status": "completed", "best_val_loss": 0.2 + s / 100}, batchnorm="true", seed=s) for s in range(3)]
    found = report.judge(claim(metric="diverged", better={"batchnorm": "true"}, than={"batchnorm": "false"}),
                         "2.4", runs)
    assert found.better == [0.0] * 3 and found.than == [1.0] * 3 and found.verdict == "shown"
    losses = report.judge(claim(better={"batchnorm": "true"}, than={"batchnorm": "false"}), "2.4", runs)
    assert losses.than == [] and report.effect_text(losses) == "no value"
    with pytest.raises(report.UsageError, match="no run of experiment=x matches better"):
        report.judge(claim(better={"batchnorm": "maybe"}), "2.4", runs)


def test_a_report_from_a_real_preset_is_one_page_and_a_second_call_reuses_its_runs(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="optlab")
    plan = report.spec()
    plan.experiments = {"batchnorm": plan.experiments.batchnorm}
    plan.claims = [c for c in plan.claims if c.experiment == "batchnorm"]
    monkeypatch.setattr(report, "spec", lambda: plan)
    findings = report.report(tmp_path)
    assert [f.verdict for f in findings] == ["shown"]  # lr 3.0 diverges without batch norm, every seed
    assert len(list((tmp_path / "runs" / "batchnorm").glob("*/seed=*/metrics.json"))) == 6
    # progress as it runs (a log line at each change, not on a terminal), and its disk use
    assert "batchnorm (preset 1 of 1): 6 runs" in caplog.text and "batchnorm: 6/6 runs done" in caplog.text
    checkpoints = list(tmp_path.rglob("*.pt"))
    assert len(checkpoints) == 6 * 3  # init, best and last of each run
    size = sum(f.stat().st_size for f in tmp_path.rglob("*") if f.is_file())
    assert f"disk: {size / 1e6:,.1f} MB in " in caplog.text and f"({len(checkpoints)} checkpoints) under" in caplog.text
    page = (tmp_path / "index.html").read_text()
    assert "<script" not in page and not re.search(r'(src|href)="(?!data:)', page)  # nothing outside the file
    assert page.count('src="data:image/png;base64,') == 1 and "shown" in page
    text = (tmp_path / "report.md").read_text()
    assert "| 2.4 Batch normalization |" in text and "![claim01](figures/claim01.png)" in text
    assert (tmp_path / "figures" / "claim01.png").stat().st_size > 0

    started = time.perf_counter()
    again = report.report(tmp_path, keep="records")  # reuses the runs, keeps only what verdicts read
    assert time.perf_counter() - started < 10 and [f.effect for f in again] == [f.effect for f in findings]
    assert not list(tmp_path.rglob("*.pt")) and not list(tmp_path.rglob("checkpoints"))
    assert "(0 checkpoints) under" in caplog.text.splitlines()[-1]
    assert [f.effect for f in report.report(tmp_path)] == [f.effect for f in findings]  # and again, without them


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium (apt-get install chromium)")
def test_the_page_renders_in_headless_chromium(tmp_path):
    from optlab.store.plots import pyplot, save_figure

    page = tmp_path / "index.html"
    fig, ax = pyplot().subplots()
    ax.plot([0, 1], [0, 1])
    save_figure(fig, tmp_path / "f.png")
    finding = report.Finding(claim(), "1.2 Momentum", [0.1, 0.2], [0.5, 0.6], -0.6, -0.2, "n = 2 vs 2", "digits")
    page.write_text(report.page([finding], {0: [tmp_path / "f.png"]}, 1.0))
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1000,1200", page.as_uri()], capture_output=True, timeout=120)
    assert shot.stat().st_size > 10_000  # a page with text, a table and a figure, not a blank one


def test_the_readme_table_is_the_reports():
    spec = importlib.util.spec_from_file_location("readme_report", ROOT / "scripts" / "readme_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    md = "# The recitation, reproduced\n\n2 claims: 1 shown.\n\n| slide | claim |\n| --- | --- |\n| 1 | a |\n\n## 1\n"
    block = module.table(md)
    assert block == "2 claims: 1 shown.\n\n| slide | claim |\n| --- | --- |\n| 1 | a |"
    readme = f"intro\n{module.START}\nold\n{module.END}\nrest\n"
    assert module.replace(readme, block) == f"intro\n{module.START}\n{block}\n{module.END}\nrest\n"
    current = (ROOT / "README.md").read_text()
    assert module.START in current and module.END in current  # the README's table is generated


def test_a_preset_whose_data_needs_an_extra_is_listed_as_not_run():
    experiment = OmegaConf.create({"slide": "2.2", "launcher": "vectorized", "needs": "no_such_module_here"})
    assert "pip install" in report.missing(experiment)
    assert report.missing(OmegaConf.create({"slide": "2.2", "needs": "json"})) is None
    finding = report.Finding(claim(), "2.2", [], [], float("nan"), float("nan"), "not run: needs x", "not run")
    assert finding.verdict == "not run" and report.effect_text(finding) == "not run: needs x"
    assert report.tally([finding]) == "1 claims: 0 shown, 0 not shown on this data, 0 opposite, 1 not run"


def test_a_claim_on_a_bench_compares_the_reruns_of_settings_tuned_with_the_same_budget(tmp_path, monkeypatch):
    """An experiment of conf/report.yaml may be a bench protocol: the optimizer claims compare each
    optimizer's reruns of its best setting (tuned with the same trials), and the report shows the
    bench's budget curve."""
    from test_bench import SMALL

    protocol = tmp_path / "protocol.yaml"  # the bench test's, judged on the loss, with RMSProp too
    protocol.write_text(SMALL.replace("metric: best_val_acc", "metric: best_val_loss").replace("trials: 3", "trials: 2")
                        + """  rmsprop:
    overrides: [optimizer=rmsprop]
    space: {optimizer.lr: "tag(log,interval(0.0001,0.01))"}
""")
    plan = report.spec()
    plan.experiments = {"optimizers_tuned": {**plan.experiments.optimizers_tuned, "bench": str(protocol)}}
    plan.claims = [c for c in plan.claims if c.experiment == "optimizers_tuned"]
    assert len(plan.claims) == 2 and all("same budget" in c.claim for c in plan.claims)
    monkeypatch.setattr(report, "spec", lambda: plan)
    findings = report.report(tmp_path / "out")
    assert [len(f.better) for f in findings] == [2, 2] and [len(f.than) for f in findings] == [2, 2]  # reruns only
    reruns = json.loads((tmp_path / "out" / "runs" / "optimizers_tuned" / "bench.json").read_text())["results"]
    adam = next(r for r in reruns if r["optimizer"] == "adam")
    assert sorted(findings[0].better) == sorted(run["best_val_loss"] for run in adam["reruns"])
    assert (tmp_path / "out" / "figures" / "budget.png").stat().st_size > 0
    assert "![budget](figures/budget.png)" in (tmp_path / "out" / "report.md").read_text()
