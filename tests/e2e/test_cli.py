"""The command line as a user meets it: help, version, Hydra's flags, and bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import optlab


def test_optlab_help_lists_subcommands(tmp_path):
    result = optlab("--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "train" in result.stdout and "usage: optlab" in result.stdout
    commands = result.stdout.split("commands:\n")[1].split("\n\n")[0].splitlines()
    assert [line.split()[0] for line in commands] == ["train", "tune", "lr-find", "compare", "landscape", "bench", "report"]


def test_version_from_the_installed_console_script(tmp_path):
    script = Path(sys.executable).parent / "optlab"
    from optlab import __version__

    result = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout.strip() == f"optlab {__version__}"


def test_unknown_command(tmp_path):
    result = optlab("trian", cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown command 'trian'" in result.stderr and "train" in result.stderr


def test_train_help_lists_groups_options_and_keys(tmp_path):
    result = optlab("train", "--help", cwd=tmp_path)
    assert result.returncode == 0
    out = result.stdout
    assert "optimizer: adadelta, adagrad, adam, adamax, adamw, lbfgs, momentum, nadam" in out
    assert "model: cnn, linear, mlp" in out and "surface: beale, quadratic, rosenbrock, saddle" in out
    assert "scheduler: constant" in out and "data: blobs, cifar10, circles, csv, digits, fashion_mnist, frames" in out
    for key in ("batch_size", "epochs", "seed", "device", "shuffle", "steps", "diagnostics"):
        assert f"\n  {key} " in out, key
    assert "batch gradient descent" in out
    adam = optlab("train", "optimizer=adam", "--help", cwd=tmp_path)  # the config shown is the composed one
    assert adam.returncode == 0 and "_target_: torch.optim.Adam" in adam.stdout
    assert "Hydra's own flags: optlab train --hydra-help" in adam.stdout  # the template's footer


def test_cfg_job_prints_the_composed_config(tmp_path):
    result = optlab("train", "optimizer=adam", "batch_size=full", "--cfg", "job", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "_target_: torch.optim.Adam" in result.stdout
    assert "batch_size: full" in result.stdout
    assert not (tmp_path / "outputs").exists()  # printing the config trains nothing


def test_info_flag(tmp_path):
    result = optlab("train", "--info", "defaults", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "optimizer/sgd" in result.stdout


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["train", "--cfg", "job"]])
def test_startup_does_not_import_torch_or_tensorboard(argv, tmp_path):
    code = (
        "import sys, contextlib, io\n"
        "from optlab.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    assert main({argv!r}) == 0\n"
        "heavy = [m for m in ('torch', 'tensorboard', 'sklearn') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_shell_completion(tmp_path):
    install = optlab("train", "-sc", "install=bash", cwd=tmp_path)
    assert install.returncode == 0 and "complete -o nospace" in install.stdout

    def query(line: str) -> list[str]:
        result = optlab("-sc", "query=bash", cwd=tmp_path, env={"COMP_LINE": line})
        assert result.returncode == 0, result.stderr
        return result.stdout.split()

    assert query("optlab tr") == ["train"]
    assert "optimizer=" in query("optlab train opt")
    assert "optimizer=quickprop" in query("optlab train optimizer=")


BAD_INPUT = [
    (["batch_size=0"], "invalid value for 'batch_size': 0 (allowed: an integer >= 1, or 'full')"),
    (["batch_size=abc"], "invalid value for 'batch_size': 'abc' (allowed: an integer >= 1, or 'full')"),
    (["epochs=-1"], "invalid value for 'epochs': -1 (allowed: an integer >= 1)"),
    (["epochs=abc"], "invalid value for 'epochs': 'abc' (allowed: an integer >= 1)"),
    (["optimizer.lr=-1"], "invalid value for 'optimizer.lr': -1 (allowed: a number > 0, or find"),
    (["optimizer=nope"], "unknown option for 'optimizer': 'nope' (allowed: adadelta, adagrad, adam,"),
    (["surface=sphere"], "unknown option for 'surface': 'sphere' (allowed: beale, quadratic, rosenbrock, saddle)"),
    (["surface=quadratic", "surface.kappa=0.5"], "invalid value for 'surface.kappa': 0.5 (allowed: a number >= 1)"),
    (["optimizer=rprop", "optimizer.etas=[1.2,0.5]"], "invalid value for 'optimizer.etas': [1.2, 0.5]"),
    (["epochz=3"], "unknown key 'epochz': 3; did you mean 'epochs'?"),
    (["optimizer.lrr=0.1"], "unknown key 'optimizer.lrr': 0.1; did you mean 'optimizer.lr'?"),
    (["model.activation=swish"], "invalid value for 'model.activation': 'swish' (allowed: relu, tanh"),
    (["optimizer=adam", "optimizer.betas=[0.9,1.5]"], "invalid value for 'optimizer.betas': [0.9, 1.5]"),
    (["device=tpu"], "invalid value for 'device': 'tpu' (allowed: auto, cpu, cuda, cuda:N or mps)"),
    (["data.val_fraction=0.5", "data.test_fraction=0.5"], "val_fraction + test_fraction < 1"),
    (["optimizer.lr=[1"], "cannot parse override"),
]


@pytest.mark.parametrize("overrides, message", BAD_INPUT, ids=[" ".join(o) for o, _ in BAD_INPUT])
def test_bad_input_is_one_clear_line_and_exit_2(overrides, message, tmp_path):
    result = optlab("train", *overrides, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not list(tmp_path.glob("outputs/runs/*/metrics.json"))  # nothing trained


def test_cuda_on_a_machine_without_it(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = optlab("train", "device=cuda", cwd=tmp_path)
    assert result.returncode == 2
    assert "invalid value for 'device': 'cuda'" in result.stderr
    assert "no CUDA device on this machine" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("name", ["plain", "a=1,b=2", "x [1, 2]", "it's here", 'say "hi"', "~home", "$HOME",
                                  "back\\slash\\"])
def test_a_printed_command_reaches_hydra_as_printed(name, tmp_path):
    """What `naming.command` prints, pasted into bash, gives Hydra the value `naming.override`
    quoted: shell quoting and Hydra's grammar both survive any folder name."""
    from optlab.naming import command, override

    line = command(sys.executable, "-m", "optlab", "train", override("hydra.run.dir", tmp_path / name),
                   "--cfg", "hydra")
    pasted = subprocess.run(["bash", "-c", line], cwd=tmp_path, capture_output=True, text=True)
    assert pasted.returncode == 0, (line, pasted.stderr)
    assert yaml.safe_load(pasted.stdout)["hydra"]["run"]["dir"] == str(tmp_path / name), line


@pytest.mark.parametrize("args", [["tune", "--help"], ["train", "--help"], ["--help"]])
def test_a_reader_that_closes_the_pipe_gets_no_error(tmp_path, args):
    """`optlab tune --help | head -1`: head leaves, and optlab ends quietly."""
    process = subprocess.Popen([sys.executable, "-m", "optlab", *args], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    process.stdout.close()  # before anything is written
    err = process.stderr.read()
    process.wait(timeout=60)
    assert err == "" and process.returncode in (0, 1), err


def test_help_lists_each_chosen_options_keys_with_the_schemas_own_words(capfd):
    """One source for `--help`, the reference and the checks: the help line and the allowed text
    are the schema's (optlab/config/schema.py), for the keys the chosen options have."""
    from helpers import call

    from optlab.config.schema import GROUP_KEYS

    code, out, _ = call(capfd, "train", "optimizer=adam", "--help")
    betas = GROUP_KEYS["optimizer.betas"]
    assert code == 0 and f"{betas.help} ({betas.rule.allowed})" in out
    assert "optimizer.momentum " not in out  # adam has none; sgd's help lists it
    code, out, _ = call(capfd, "train", "optimizer=sgd", "--help")
    assert "optimizer.momentum " in out and "optimizer.betas " not in out


def test_each_apps_help_leaves_out_the_groups_it_refuses(capfd):
    from helpers import call

    groups = {}
    for app in ("train", "tune", "lr-find"):
        code, out, _ = call(capfd, app, "--help")
        listed = out.split("== Config groups (group=option) ==")[1].split("==")[0]
        groups[app] = {line.split(":")[0] for line in listed.splitlines() if ":" in line}
        assert code == 0
    assert {"experiment", "surface"} <= groups["train"] and "search" not in groups["train"]
    assert "search" in groups["tune"] and "experiment" not in groups["tune"]
    assert not {"experiment", "search", "surface"} & groups["lr-find"] and "optimizer" in groups["lr-find"]


@pytest.mark.parametrize("args, said", [
    (["compare", "--metric", "nope", "."], "optlab compare: argument --metric: invalid choice: 'nope'"),
    (["landscape"], "optlab landscape: the following arguments are required: RUN"),
    (["train", "resume="], "optlab train: resume: give the folder of the run to continue"),
])
def test_a_commands_own_mistake_is_one_line(capfd, args, said):
    from helpers import call

    code, out, err = call(capfd, *args)
    assert code == 2 and err.startswith(said) and err.count("\n") == 1 and "usage:" not in err
