"""A folder optlab reads is data, never code.

Run folders are shared: zipped for a colleague, left on a cluster's shared disk, downloaded with
a report. Each test here crafts a folder (or a command line) whose config names a callable that
would run code if optlab handed it to Hydra's `instantiate`, feeds it through every reader
(`landscape`, `compare` and the sweep summary, `report`'s reader, `train resume=`), and checks
that the command is refused in one line naming the key or file and that nothing ran: every
payload would make a marker folder, which must not exist afterwards.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from importlib import resources
from pathlib import Path

import pytest
import yaml
from helpers import make_config, optlab

from optlab.config import allowlist
from optlab.config.checks import validate
from optlab.errors import UsageError


class Payload:
    """A pickle that makes `marker` as it loads (what `torch.load(weights_only=False)` would run)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def payloads(folder: Path) -> dict[str, dict]:
    """`data.source` values that would make `folder/ran` if built."""
    marker = folder / "ran"
    evil = folder / "evil.pt"
    evil.write_bytes(pickle.dumps(Payload(marker)))
    return {
        "torch.load": {"_target_": "torch.load", "f": str(evil), "weights_only": False},
        "os.mkdir": {"_target_": "os.mkdir", "path": str(marker)},
        "load_library": {"_target_": "torch.ops.load_library", "path": str(folder / "evil.so")},
        "nested": {"_target_": "optlab.datasets.digits", "extra": {"_target_": "os.mkdir", "path": str(marker)}},
        "oc.create": {"_target_": "optlab.datasets.digits",
                      "extra": "${oc.create:{_target_: os.mkdir, path: '" + str(marker) + "'}}"},
        # resolves only once `instantiate` has added its own `_convert_` key to the node
        "late": {"_target_": "${.table.${._convert_}}", "table": {"all": "os.mkdir"}, "path": str(marker)},
        # text that a config made of the resolved values would read as an interpolation again
        "escaped": {"_target_": "optlab.datasets.digits",
                    "extra": "\\${oc.create:{_target_: os.mkdir, path: '" + str(marker) + "'}}"},
        "list": {"_target_": "${oc.decode:'[1, 2]'}"},
        "unset": {"_target_": "${oc.env:OPTLAB_NO_SUCH_VARIABLE}"},
    }


def one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    return lines[0]


def test_every_shipped_option_is_allowed_and_every_listed_torch_class_exists():
    conf = resources.files("optlab.conf")
    for group in ("data", "model", "optimizer", "scheduler", "surface"):
        for option in (conf / group).iterdir():
            if option.name.endswith(".yaml"):
                node = yaml.safe_load(option.read_text()) or {}
                for path, value in allowlist.targets(node, group):
                    assert value in allowlist.ALLOWED.get(path, ()), (option.name, path, value)
    import torch

    for name in allowlist.TORCH_OPTIMIZERS:
        assert issubclass(getattr(torch.optim, name), torch.optim.Optimizer), name
    for name in allowlist.TORCH_SCHEDULES:
        assert isinstance(getattr(torch.optim.lr_scheduler, name), type), name


@pytest.mark.parametrize("key, value", [
    ("data.source._target_", "torch.load"),
    ("data.source._target_", "torch.ops.load_library"),
    ("model._target_", "os.system"),
    ("optimizer._target_", "builtins.eval"),
    ("scheduler._target_", "torch.optim.lr_scheduler.LambdaLR"),  # takes a callable: not from a config
    ("optimizer._target_", "torch.optim.Optimizer"),
])
def test_a_command_line_target_outside_the_list_is_refused_by_validate(key, value):
    cfg = make_config(f"{key}={value}")
    with pytest.raises(UsageError, match=f"refused '{key}': '{value}'"):
        validate(cfg)


def test_nested_and_interpolated_targets_are_refused(tmp_path):
    from omegaconf import OmegaConf

    for name, source in payloads(tmp_path).items():
        with pytest.raises(UsageError, match="refused|cannot resolve"):  # on the line that builds it
            allowlist.built(OmegaConf.create({"source": source}).source, "data.source")
        with pytest.raises(UsageError, match="refused"):  # in a folder's config.yaml
            allowlist.check_file(OmegaConf.create({"data": {"source": source}}), tmp_path / "config.yaml")
    assert not (tmp_path / "ran").exists()


def test_the_command_line_is_refused_in_one_line(tmp_path):
    marker = tmp_path / "ran"
    for args in (["data.source._target_=os.mkdir", f"+data.source.path={marker}"],
                 [f"+optimizer.extra={{_target_: os.mkdir, path: {marker}}}"]):
        line = one_line(optlab("train", *args, cwd=tmp_path))
        assert "refused" in line and "_target_" in line and "os.mkdir" in line, line
    assert not marker.exists() and not (tmp_path / "outputs").exists()


def crafted_run(trained_run: Path, tmp_path: Path, source: dict) -> Path:
    run = tmp_path / "shared_run"
    shutil.copytree(trained_run, run)
    config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    config["data"]["source"] = source
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    return run


@pytest.mark.parametrize("payload", ["torch.load", "os.mkdir", "load_library", "nested", "oc.create", "late", "escaped",
                                     "list", "unset"])
def test_landscape_of_a_crafted_folder_runs_nothing(trained_run, tmp_path, payload):
    run = crafted_run(trained_run, tmp_path, payloads(tmp_path)[payload])
    line = one_line(optlab("landscape", str(run), cwd=tmp_path))
    assert "config.yaml" in line and "refused" in line and "_target_" in line, line
    assert not (tmp_path / "ran").exists()
    assert not (run / "curvature.json").exists()


@pytest.mark.parametrize("model, says", [({"foo": 2}, "unknown key 'model.foo'"),
                                         ({"activation": "${oc.env:HOME}"}, "'model.activation'"),
                                         ({"hidden": ["a"]}, "'model.hidden'")])
def test_landscape_of_a_folder_with_values_its_rules_refuse_is_one_line(trained_run, tmp_path, model, says):
    """What `optlab landscape` builds from a folder's config passes the rules a run's config passes."""
    run = tmp_path / "shared_run"
    shutil.copytree(trained_run, run)
    config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    config["model"].update(model)
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    line = one_line(optlab("landscape", str(run), cwd=tmp_path))
    assert "config.yaml" in line and says in line, line
    assert not (run / "curvature.json").exists()


def test_compare_and_the_report_reader_refuse_a_crafted_surface(tmp_path):
    """A surface run's `surface._target_` is built to draw its contour plot."""
    run = tmp_path / "sweep" / "surface=evil" / "seed=0"
    (run / ".hydra").mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"status": "completed", "final_loss": 1.0}))
    (run / ".hydra" / "overrides.yaml").write_text("- surface=quadratic\n")
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(
        {"seed": 0, "surface": {"_target_": "os.mkdir", "path": str(tmp_path / "ran")}}))
    (run / "trajectory.csv").write_text("step,x,y,loss\n0,1.0,1.0,1.0\n")
    line = one_line(optlab("compare", str(tmp_path / "sweep"), cwd=tmp_path))
    assert "optlab compare:" in line and "surface._target_" in line and "os.mkdir" in line, line
    from optlab.analysis.runs import (
        find_runs,  # what the sweep summary and `optlab report` read runs with
    )

    with pytest.raises(UsageError, match="config.yaml: refused 'surface._target_'"):
        find_runs([tmp_path / "sweep"])
    assert not (tmp_path / "ran").exists() and not (tmp_path / "sweep" / "summary.csv").exists()


def test_the_sweep_reader_resolves_a_plain_interpolation_and_refuses_a_crafted_one(tmp_path):
    """A run's config.yaml holds plain values, read as data; one with `${...}` is checked as read
    and then resolved, as OmegaConf resolves it; any YAML type is read, never a traceback."""
    from optlab.analysis.runs import find_runs

    def folder(name: str, config: str) -> Path:
        run = tmp_path / name / "seed=0"
        (run / ".hydra").mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps({"status": "completed", "best_val_acc": 0.5}))
        (run / ".hydra" / "overrides.yaml").write_text("- seed=0\n")
        (run / ".hydra" / "config.yaml").write_text(config)
        return run

    folder("plain", "seed: 0\nepochs: 3\nnote: !!binary aGk=\nmodel:\n  hidden: [8]\n")
    folder("interpolated", "seed: 0\nepochs: ${seed}\nmodel:\n  hidden: ['${epochs}']\n")
    (plain,), (interpolated,) = (find_runs([tmp_path / name]) for name in ("plain", "interpolated"))
    assert plain.config["epochs"] == 3 and plain.config["note"] == b"hi"
    assert interpolated.config["epochs"] == 0 and interpolated.config["model.hidden"] == [0]
    folder("crafted", yaml.safe_dump({"seed": 0, "extra": "${oc.create:{_target_: os.mkdir, path: '"
                                      + str(tmp_path / "ran") + "'}}"}))
    with pytest.raises(UsageError, match="config.yaml: refused"):
        find_runs([tmp_path / "crafted"])
    assert not (tmp_path / "ran").exists()


def killed_copy(trained_run: Path, tmp_path: Path, overrides: list) -> Path:
    """A copy of a run as `kill -9` leaves it (no metrics.json), with crafted overrides."""
    run = tmp_path / "shared_run"
    shutil.copytree(trained_run, run)
    (run / "metrics.json").unlink()
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    return run


@pytest.mark.parametrize("overrides, says", [
    (["data.source._target_=os.mkdir", "+data.source.path=ran"], "refused 'data.source._target_': 'os.mkdir'"),
    (["+hydra.callbacks.evil._target_=os.mkdir", "+hydra.callbacks.evil.path=ran"], "never a flag, a hydra key"),
    (["hydra/launcher=submitit_local"], "never a flag, a hydra key"),
    (["+hydra.job.env_set.LD_PRELOAD=evil.so"], "never a flag, a hydra key"),
    (["--config-dir=."], "never a flag, a hydra key"),
    (["+optimizer@hydra.callbacks.x=sgd"], "or a package"),  # an option put under Hydra's own node
    (["+optimizer@hydra.job.env_set=sgd"], "or a package"),
    (["experiment=surfaces"], "a job of a preset's sweep resumes with its sweep"),  # would start 16 jobs
    ([1, "epochs=2"], "not a list of overrides"),
    ({"epochs": 2}, "not a list of overrides"),
    (["epochs=[1,"], "cannot read"),
])
def test_resume_of_a_crafted_folder_runs_nothing(trained_run, tmp_path, overrides, says):
    run = killed_copy(trained_run, tmp_path, overrides)
    before = sorted(p.name for p in run.iterdir())
    line = one_line(optlab("train", f"resume={run}", cwd=tmp_path))
    assert says in line and ("overrides.yaml" in line or "_target_" in line), line
    assert not (tmp_path / "ran").exists() and not (run / "ran").exists()
    assert sorted(p.name for p in run.iterdir()) == before  # nothing written into the folder


# --- drawn: damaged and crafted folders through every reader ------------------------------------

def _marker_payloads(marker: Path) -> dict:
    evil = marker.parent / "evil.pt"
    if not evil.exists():
        evil.write_bytes(pickle.dumps(Payload(marker)))
    return {"torch.load": {"_target_": "torch.load", "f": str(evil), "weights_only": False},
            "os.mkdir": {"_target_": "os.mkdir", "path": str(marker)},
            "late": {"_target_": "${.table.${._convert_}}", "table": {"all": "torch.load"}, "f": str(evil),
                     "weights_only": False}}


def _edit_yaml(file: Path, edit) -> None:
    """Edit a config that an earlier damage of the same draw left readable as a run's."""
    try:
        node = yaml.safe_load(file.read_text())
    except yaml.YAMLError:
        return
    if isinstance(node, dict) and isinstance(node.get("model"), dict) and isinstance(node.get("data"), dict):
        edit(node)
        file.write_text(yaml.safe_dump(node))


def _set_status(folder: Path, status: str) -> None:
    file = folder / "metrics.json"
    file.write_text(json.dumps({**json.loads(file.read_text()), "status": status}))


# each damage: what a full disk, a partial copy, an old version or an attacker leaves in a folder
DAMAGES = {
    "interrupted": lambda f, m: _set_status(f, "interrupted"),
    "metrics_list": lambda f, m: (f / "metrics.json").write_text("[1, 2]"),
    "metrics_string": lambda f, m: (f / "metrics.json").write_text('"completed"'),
    "metrics_torn": lambda f, m: (f / "metrics.json").write_text('{"status": "compl'),
    "metrics_status_number": lambda f, m: (f / "metrics.json").write_text('{"status": 5}'),
    "metrics_gone": lambda f, m: (f / "metrics.json").unlink(),
    "overrides_int": lambda f, m: (f / ".hydra" / "overrides.yaml").write_text("- 1\n- epochs=1\n"),
    "overrides_dict": lambda f, m: (f / ".hydra" / "overrides.yaml").write_text("epochs: 1\n"),
    "overrides_hydra": lambda f, m: (f / ".hydra" / "overrides.yaml").write_text(
        f"- +hydra.callbacks.x._target_=os.mkdir\n- +hydra.callbacks.x.path={m}\n"),
    "overrides_flag": lambda f, m: (f / ".hydra" / "overrides.yaml").write_text("- --config-dir=/\n"),
    "overrides_target": lambda f, m: (f / ".hydra" / "overrides.yaml").write_text(
        f"- data.source._target_=os.mkdir\n- +data.source.path={m}\n"),
    "overrides_torn": lambda f, m: (f / ".hydra" / "overrides.yaml").write_text("- epochs=[\n"),
    "config_target": lambda f, m: _edit_yaml(f / ".hydra" / "config.yaml",
                                             lambda c: c["data"].update(source=_marker_payloads(m)["os.mkdir"])),
    "config_pickle": lambda f, m: _edit_yaml(f / ".hydra" / "config.yaml",
                                             lambda c: c["data"].update(source=_marker_payloads(m)["torch.load"])),
    "config_nested": lambda f, m: _edit_yaml(f / ".hydra" / "config.yaml",
                                             lambda c: c["model"].update(extra=_marker_payloads(m)["os.mkdir"])),
    "config_surface": lambda f, m: _edit_yaml(f / ".hydra" / "config.yaml",
                                              lambda c: c.update(surface=_marker_payloads(m)["os.mkdir"])),
    "config_late": lambda f, m: _edit_yaml(f / ".hydra" / "config.yaml",
                                           lambda c: c["data"].update(source=_marker_payloads(m)["late"])),
    "config_surface_late": lambda f, m: _edit_yaml(f / ".hydra" / "config.yaml",
                                                   lambda c: c.update(surface=_marker_payloads(m)["late"])),
    "trajectory": lambda f, m: (f / "trajectory.csv").write_text("step,x,y,loss\n0,1.0,1.0,1.0\n1,0.5,0.5,0.2\n"),
    "config_list": lambda f, m: (f / ".hydra" / "config.yaml").write_text("- 1\n- 2\n"),
    "config_torn": lambda f, m: (f / ".hydra" / "config.yaml").write_text("model: [unclosed\n"),
    "last_pickle": lambda f, m: (f / "checkpoints" / "last.pt").write_bytes(pickle.dumps(Payload(m))),
    "last_torn": lambda f, m: (f / "checkpoints" / "last.pt").write_bytes(
        (f / "checkpoints" / "last.pt").read_bytes()[:500]),
    "best_pickle": lambda f, m: (f / "checkpoints" / "best.pt").write_bytes(pickle.dumps(Payload(m))),
    "history_garbage": lambda f, m: (f / "history.csv").write_text("epoch,lr\n1,abc\n\x00\x01"),
}
READERS = ("resume", "landscape", "compare")


def _contents(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_drawn_damaged_and_crafted_folders_through_every_reader(trained_run, tmp_path, capfd):
    """Any mix of damages, through any reader: exit 0, or exit 2 with one line naming the
    command; never a traceback, never a payload run, and a refusal changes nothing in the folder."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from test_bad_input import call

    count = iter(range(10**6))

    @settings(max_examples=int(os.environ.get("OPTLAB_FOLDER_EXAMPLES", "40")), deadline=None, derandomize=True,
              database=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(st.lists(st.sampled_from(sorted(DAMAGES)), min_size=1, max_size=3, unique=True), st.sampled_from(READERS))
    def check(damages, reader):
        case = tmp_path / f"case{next(count)}"
        folder, marker = case / "run", case / "ran"
        shutil.copytree(trained_run, folder)
        for damage in sorted(damages, key=list(DAMAGES).index):  # a record's status is set before it is damaged
            DAMAGES[damage](folder, marker)
        before = _contents(folder)
        argv = {"resume": ["train", f"resume={folder}"], "landscape": ["landscape", str(folder)],
                "compare": ["compare", str(folder), "--out", str(case / "summary")]}[reader]
        capfd.readouterr()
        code, escaped = call(argv)
        err = capfd.readouterr().err
        where = f"optlab {' '.join(argv)} after {damages}: exit {code}\n{err}"
        assert escaped is None and "Traceback" not in err, f"{where}\n{escaped}"
        assert not marker.exists(), f"a payload ran: {where}"
        assert code in (0, 2), where
        if code == 2:
            assert len(err.strip().splitlines()) == 1 and err.startswith(f"optlab {argv[0]}: "), where
            assert _contents(folder) == before, f"a refusal wrote into the folder: {where}"

    check()


# --- links, aliases and numbers a shared folder can hold ----------------------------------------

@pytest.mark.slow
def test_a_link_in_a_run_folder_is_refused_before_anything_is_read_or_written(trained_run, tmp_path):
    """`checkpoints -> elsewhere` would take a resumed run's saves there, `train.log -> ~/.bashrc`
    its log lines, a linked job folder a whole sweep's writes and archives."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "mine.txt").write_text("mine")
    for name in ("checkpoints", "train.log"):
        run = killed_copy(trained_run, tmp_path / name, ["epochs=2", "model.hidden=[8]"])
        target = outside / name
        shutil.move(run / name, target)
        (run / name).symlink_to(target)
        before = _contents(outside)
        line = one_line(optlab("train", f"resume={run}", "resume.allow_changes=true", "epochs=3", cwd=tmp_path))
        assert f"refused {run / name}: a symbolic link" in line, line
        line = one_line(optlab("landscape", str(run), cwd=tmp_path))
        assert "a symbolic link" in line, line
        assert _contents(outside) == before

    sweep = tmp_path / "sweep"
    args = ["-m", "seed=0", "epochs=1", "model.hidden=[8]", f"hydra.sweep.dir={sweep}"]
    assert optlab("train", *args, cwd=tmp_path).returncode == 0
    (job,) = sweep.glob("*/seed=0")
    shutil.move(job, outside / "job")
    job.symlink_to(outside / "job")
    before = _contents(outside)
    line = one_line(optlab("train", *args, "rerun=true", cwd=tmp_path))
    assert f"refused {job}: a symbolic link" in line and _contents(outside) == before, line


def test_a_report_whose_runs_hold_a_link_is_refused_before_it_runs_anything(tmp_path):
    """A report copies its presets' figures into index.html: a link would embed any file."""
    figure = tmp_path / "report" / "runs" / "critical_batch" / "critical_batch.png"
    figure.parent.mkdir(parents=True)
    figure.symlink_to("/etc/hostname")
    result = optlab("report", "--out", str(tmp_path / "report"), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip() == \
        f"optlab report: refused {figure}: a symbolic link (optlab reads and writes a run's files only inside its " \
        "own folder)", result.stderr
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["runs"]


def test_a_damaged_report_marker_means_the_preset_runs_again():
    import tempfile

    from optlab.analysis.report import MARKER, finished

    with tempfile.TemporaryDirectory() as folder:
        for text in ("[1]", '"done"', '{"preset": "x"}', '{"preset": "x", "seconds": "5"}', "{", ""):
            (Path(folder) / MARKER).write_text(text)
            assert finished(Path(folder)) is None, text
        (Path(folder) / MARKER).write_text('{"preset": "x", "seconds": 5}')
        assert finished(Path(folder)) == {"preset": "x", "seconds": 5}


def test_a_yaml_alias_is_refused_before_it_expands(trained_run, tmp_path):
    """Nine levels of ten aliases each: 430 bytes that expand to 10^9 items."""
    bomb = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9))
    run = killed_copy(trained_run, tmp_path, ["epochs=2"])
    (run / ".hydra" / "overrides.yaml").write_text(bomb)
    for argv in (["train", f"resume={run}"], ["compare", str(run)]):
        if argv[0] == "compare":  # a finished run to compare
            shutil.copy(trained_run / "metrics.json", run)
        line = one_line(optlab(*argv, cwd=tmp_path, timeout=30))
        assert f"refused {run / '.hydra' / 'overrides.yaml'}: it holds a YAML alias" in line, line


def test_numbers_a_summary_cannot_use_are_left_out_not_a_traceback(trained_run, tmp_path):
    for i, value in enumerate(["1" + "0" * 400, "1e308", "-1e308"]):
        run = tmp_path / "sweep" / f"lr={i}"
        shutil.copytree(trained_run, run)
        record = (run / "metrics.json").read_text()
        (run / "metrics.json").write_text(record.replace('"best_val_acc": ', f'"best_val_acc": {value}, "was": ', 1))
        (run / ".hydra" / "overrides.yaml").write_text(f"- optimizer.lr=0.{i + 1}\n")
    result = optlab("compare", str(tmp_path / "sweep"), cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr


def test_a_rate_of_zero_in_history_is_named(trained_run, tmp_path):
    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    history = (run / "history.csv").read_text().splitlines()
    column = history[0].split(",").index("lr")
    rows = [",".join("0" if k == column else cell for k, cell in enumerate(row.split(","))) for row in history[1:]]
    (run / "history.csv").write_text("\n".join([history[0], *rows]) + "\n")
    line = one_line(optlab("landscape", str(run), cwd=tmp_path))
    assert line == f"optlab landscape: cannot read {run / 'history.csv'}: its last learning rate, 0.0, is not a number > 0"


def test_a_folder_config_whose_key_is_no_name_is_refused_in_one_line(tmp_path):
    from optlab.analysis.runs import find_runs

    run = tmp_path / "sweep" / "seed=0"
    (run / ".hydra").mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"status": "completed", "test_acc": 0.5}))
    (run / ".hydra" / "overrides.yaml").write_text("- seed=0\n")
    (run / ".hydra" / "config.yaml").write_text("!!binary aGk=: 1\nseed: 0\n")
    with pytest.raises(UsageError, match="config.yaml: keys must be str") as refused:
        find_runs([tmp_path / "sweep"])
    assert "\n" not in str(refused.value)
