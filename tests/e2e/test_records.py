"""What records and summaries say: a damaged record is refused in one line that names it and
changes nothing; markup in any value a summary or a report shows stays text; a summary ranks
by a measure of quality its runs have, finished configurations first."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from optlab.analysis import report
from optlab.analysis.summary import summarize
from optlab.cli.main import main

TINY = ["data=blobs", "model.hidden=[8]", "epochs=1"]
MARKUP = "<script>alert(1)</script>|x\ny`*_[a](b)"


def call(capsys, *argv: str) -> tuple[int, str]:
    """`optlab <argv>` in this process: (exit code, stderr)."""
    try:
        code = main(list(argv))
    except SystemExit as stop:
        code = stop.code
    return code, capsys.readouterr().err


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}


def refused(code: int, err: str, file: Path) -> None:
    """Exit 2 and one line, no traceback, naming the damaged file."""
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert str(file) in lines[0], err


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """A tiny run that found its rate (lr_find.json) and a sweep of two, both finished."""
    root = tmp_path_factory.mktemp("made")
    assert main(["train", *TINY, "optimizer.lr=find", f"hydra.run.dir={root / 'run'}"]) == 0
    assert main(["train", "-m", *TINY, "seed=0,1", f"hydra.sweep.dir={root / 'sweep'}"]) == 0
    return root


DAMAGED_METRICS = ["[1, 2]", '"completed"', "3", '{"status": "compl']


@pytest.mark.parametrize("text", DAMAGED_METRICS)
@pytest.mark.parametrize("reader", ["run", "resume", "compare", "sweep"])
def test_a_damaged_metrics_json_is_refused_naming_it(made, tmp_path, capsys, text, reader):
    root = shutil.copytree(made, tmp_path / "copy")
    run = root / "run"
    if reader == "sweep":
        (metrics,) = [m for m in (root / "sweep").rglob("metrics.json") if m.parent.name == "seed=1"]
    else:
        metrics = run / "metrics.json"
    metrics.write_text(text)
    before = files_of(root)
    argv = {
        "run": ["train", *TINY, "optimizer.lr=find", f"hydra.run.dir={run}"],
        "resume": ["train", f"resume={run}"],
        "compare": ["compare", str(run), "--out", str(root / "summary")],
        "sweep": ["train", "-m", *TINY, "seed=0,1", f"hydra.sweep.dir={root / 'sweep'}"],
    }[reader]
    refused(*call(capsys, *argv), metrics)
    assert files_of(root) == before


def interrupted(made: Path, tmp_path: Path) -> Path:
    run = shutil.copytree(made / "run", tmp_path / "run")
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({**metrics, "status": "interrupted"}))
    return run


@pytest.mark.parametrize("text", ["- data=blobs\n- 5\n", "optimizer: adam\n", "7\n"])
def test_resume_refuses_overrides_that_are_not_a_list_of_strings(made, tmp_path, capsys, text):
    run = interrupted(made, tmp_path)
    (run / ".hydra" / "overrides.yaml").write_text(text)
    before = files_of(run)
    refused(*call(capsys, "train", f"resume={run}"), run / ".hydra" / "overrides.yaml")
    assert files_of(run) == before


@pytest.mark.parametrize("text", ["[0.1]", '{"suggested_lr": "x"}', '{"suggested_lr": -1}', "{}", "not json"])
def test_resume_refuses_a_damaged_lr_find_json_and_writes_nothing(made, tmp_path, capsys, text):
    run = interrupted(made, tmp_path)
    (run / "lr_find.json").write_text(text)
    before = files_of(run)
    refused(*call(capsys, "train", f"resume={run}"), run / "lr_find.json")
    assert files_of(run) == before  # no error.txt, no `failed` record
    (run / "lr_find.json").write_text(json.dumps({"suggested_lr": 0.05}))
    assert call(capsys, "train", f"resume={run}")[0] == 0  # the folder still resumes


# --- summaries --------------------------------------------------------------------------------

def fake_run(folder: Path, overrides: list[str], metrics: dict, config: dict | None = None) -> None:
    """A run folder as a summary reads it: metrics.json and .hydra/{overrides,config}.yaml."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    OmegaConf.save(OmegaConf.create(overrides), folder / ".hydra" / "overrides.yaml")
    plain = dict(kv.split("=", 1) for kv in overrides)
    OmegaConf.save(OmegaConf.create({**plain, **(config or {})}), folder / ".hydra" / "config.yaml")


def unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))


def configurations(folder: Path) -> list[str]:
    return [row["configuration"] for row in csv.DictReader((folder / "summary.csv").open())]


def test_markup_in_a_summary_stays_text(tmp_path):
    fake_run(tmp_path / "a", [f"optimizer={MARKUP}", "seed=0"], {"status": "completed", "best_val_acc": 0.9})
    fake_run(tmp_path / "b", ["optimizer=sgd", "seed=0"], {"status": MARKUP, "best_val_acc": 0.8},
             {"data": {"path": MARKUP}})
    summarize([tmp_path], tmp_path)
    text = (tmp_path / "summary.md").read_text()
    assert "<script" not in text and "<" not in text.replace("&lt;", "")
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 2  # header, rule and one row per configuration: no line broken
    assert {unescaped_pipes(line) for line in table} == {unescaped_pipes(table[0])}
    assert "y\\`\\*\\_\\[a\\](b)" in text  # no code span, emphasis or link begins


def test_a_surface_summary_ranks_by_final_loss_finished_first(tmp_path, capsys):
    """No run has best_val_acc: the summary ranks by final_loss (not wall_time_s), and the
    diverged configurations, whatever their numbers, come after the completed ones."""
    for name, status, loss, seconds in [("sgd", "diverged", 1e-3, 0.1), ("momentum", "diverged", None, 0.05),
                                        ("adam", "completed", 4.2, 2.0), ("lbfgs", "completed", 1e-10, 5.0)]:
        fake_run(tmp_path / name, [f"optimizer={name}", "surface=rosenbrock"],
                 {"status": status, "final_loss": loss, "wall_time_s": seconds})
    summarize([tmp_path], tmp_path)
    assert "ranked by final_loss, lower is better (no run has best_val_acc)" in capsys.readouterr().out
    assert configurations(tmp_path) == ["optimizer=lbfgs", "optimizer=adam", "optimizer=sgd", "optimizer=momentum"]


def test_a_summary_ranks_a_diverged_configuration_below_a_finished_one(tmp_path):
    for lr, status, acc in [("3.0", "diverged", 0.95), ("0.1", "completed", 0.90)]:
        for seed in (0, 1):
            fake_run(tmp_path / f"{lr}_{seed}", [f"optimizer.lr={lr}", f"seed={seed}"],
                     {"status": status if seed else "completed", "best_val_acc": acc})
    summarize([tmp_path], tmp_path)
    assert configurations(tmp_path) == ["optimizer.lr=0.1", "optimizer.lr=3.0"]


def test_a_summary_without_a_measure_of_quality_says_it_is_not_ranked(tmp_path, capsys):
    for name, seconds in [("b", 2.0), ("a", 1.0)]:
        fake_run(tmp_path / name, [f"optimizer={name}"], {"status": "completed", "wall_time_s": seconds})
    written = summarize([tmp_path], tmp_path)
    out = capsys.readouterr().out
    assert "not ranked: no run has best_val_acc or any of" in out and "ranked by wall_time_s" not in out
    assert configurations(tmp_path) == ["optimizer=a", "optimizer=b"]  # as found, by folder
    assert not [p for p in written if "_vs_" in p.name]


# --- the report -------------------------------------------------------------------------------

def test_markup_in_a_report_stays_text(tmp_path):
    """Every field a report shows: slide, claim, experiment, metric, the data a run names, the
    effect and its note, and the figure's name."""
    claim = OmegaConf.create({"experiment": MARKUP, "claim": MARKUP, "metric": MARKUP, "direction": "lower",
                              "better": {"k": "a"}, "than": {"k": "b"}})
    runs = [report.RunFolder(Path(k), {"status": "completed", MARKUP: v}, {"k": k}, {"data.source._target_": f"x.{MARKUP}"})
            for k, v in (("a", 1.0), ("b", 2.0))]
    finding = report.judge(claim, MARKUP, runs)
    assert finding.data == MARKUP and MARKUP in report.effect_text(finding)
    figure = tmp_path / f"{MARKUP.splitlines()[0][:8]}.png"
    figure.write_bytes(b"\x89PNG")
    page = report.page([finding], {0: [figure]}, 1.0)
    assert "<script" not in page and "&lt;script&gt;" in page

    text = report.markdown([finding], {0: [figure]}, 1.0)
    # the command is a code span, which shows its content as text: fenced so that it cannot end early
    command = next(line for line in text.splitlines() if "optlab train experiment=" in line)
    assert command == f"`` {report.rerun(finding).replace(chr(10), ' ')} ``" and "``" not in command[2:-2]
    assert "<script" not in text.replace(command, "")
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == 3 and {unescaped_pipes(line) for line in table} == {6}
    assert f"## {report.md_text(MARKUP)}" in text and "\n## " + MARKUP.splitlines()[0] not in text
