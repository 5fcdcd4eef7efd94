"""Atomic files and the fast TensorBoard checksum."""

from __future__ import annotations

import pytest
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import (
    masked_crc32c as reference,
)

from optlab.errors import UsageError
from optlab.store.files import atomic_write, write_json
from optlab.store.logs import masked_crc32c


@pytest.mark.parametrize("data", [b"", b"a", b"hello world" * 7, bytes(range(256)) * 3])
def test_fast_crc_equals_tensorboards_own(data):
    assert masked_crc32c(data) == reference(data)


def test_atomic_write_replaces_whole_files_only(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"a": 1})

    def fail(f):
        f.write(b'{"half": ')
        raise OSError("disk full")

    with pytest.raises(UsageError, match=f"cannot write {target}: disk full"):  # one line, exit 2
        atomic_write(target, fail)
    assert target.read_text() == '{\n  "a": 1\n}\n'  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary left


def test_atomic_write_makes_its_folder_and_gives_the_file_the_usual_permissions(tmp_path):
    import os
    import stat

    target = tmp_path / "run" / "checkpoints" / "last.pt"  # neither folder is there yet
    umask = os.umask(0o022)
    try:
        for mask, data, mode in ((0o022, b"x", 0o644), (0o077, b"y", 0o600), (0o002, b"z", 0o664)):
            os.umask(mask)
            atomic_write(target, lambda f: f.write(data))
            assert stat.S_IMODE(target.stat().st_mode) == mode  # 0666 less the umask, as open() makes files
            assert target.read_bytes() == data and [p.name for p in target.parent.iterdir()] == ["last.pt"]
    finally:
        os.umask(umask)


def test_the_event_file_holds_every_record_in_order_once_its_writer_flushes(tmp_path):
    """optlab's event file keeps the file open (tensorboard's own stub opens it for each record):
    what TensorBoard reads back is what was written, at every flush and after close."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from optlab.store.logs import event_writer

    def read():
        accumulator = EventAccumulator(str(tmp_path))
        accumulator.Reload()
        return [(e.step, e.value) for e in accumulator.Scalars("loss")]

    writer = event_writer(tmp_path)
    for step in range(5):
        writer.add_scalar("loss", 1.0 / (step + 1), step)
    writer.flush()
    assert read() == [(step, pytest.approx(1.0 / (step + 1))) for step in range(5)]
    writer.add_scalar("loss", 0.1, 5)
    writer.close()
    assert [step for step, _ in read()] == list(range(6))
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1


def test_on_a_terminal_the_bar_shows_the_epochs_and_the_log_file_has_their_lines(tmp_path, monkeypatch):
    """Someone who tails train.log sees every epoch, whether or not a bar is drawn on the terminal."""
    import logging
    import sys

    from helpers import make_config

    from optlab.jobs.train import train

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    handler = logging.FileHandler(tmp_path / "train.log")
    logging.getLogger().addHandler(handler)
    try:
        train(make_config("epochs=2", "model.hidden=[8]"), tmp_path / "run")
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    lines = (tmp_path / "train.log").read_text().splitlines()
    assert [line.split()[1] for line in lines if line.startswith("epoch ")] == ["1", "2"]


@pytest.mark.parametrize("text, says", [("a: 1\na: 2\n", "found duplicate key a (line 2, column 1)"),
                                        ("a:\n  b: [1, 2\n", "did not find expected ',' or ']' (line 3"),
                                        ("a: 1\nb: *a\n", "refused"), ("a: &x 1\nb: *x\n", "YAML alias")])
def test_a_yaml_file_that_does_not_read_says_what_and_where_in_one_line(tmp_path, text, says):
    """Whichever parser reads it (libyaml for text without `*`, PyYAML's own with it)."""
    from optlab.store.files import read_yaml

    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(UsageError) as refused:
        read_yaml(path)
    assert says in str(refused.value) and str(path) in str(refused.value) and "\n" not in str(refused.value)


def test_both_yaml_parsers_read_a_runs_config_alike():
    import yaml
    from helpers import make_config
    from omegaconf import OmegaConf

    from optlab.store.files import _yaml_loader

    text = OmegaConf.to_yaml(make_config("optimizer=adam", "scheduler=onecycle", "model.hidden=[8,4]",
                                         return_hydra_config=True))
    assert "*" not in text
    fast, slow = (yaml.load(text, Loader=_yaml_loader(fast)) for fast in (True, False))
    assert fast == slow and repr(fast) == repr(slow) and fast["optimizer"]["betas"] == [0.9, 0.999]


def test_a_checkpoint_state_is_written_once_and_best_pt_only_when_the_best_changes(tmp_path, monkeypatch):
    """Checkpoint.save serializes each state once: the last epoch that is the best gives both
    files the same bytes; best.pt is not written again while the best stays; a new best is."""
    import torch

    from optlab.store import files
    from optlab.training.callbacks import Checkpoint

    written = []
    monkeypatch.setattr("optlab.training.callbacks.atomic_write",
                        lambda path, write: (written.append(path.name), files.atomic_write(path, write)))
    checkpoint = Checkpoint(tmp_path, {"seed": 0})
    first = {"model": {"w": torch.zeros(2)}, "epoch": 1}
    checkpoint.keep(1, {"val_loss": 1.0}, lambda: first)
    checkpoint.save(first)
    assert written == ["best.pt", "last.pt"]
    assert (tmp_path / "best.pt").read_bytes() == (tmp_path / "last.pt").read_bytes()
    second = {"model": {"w": torch.ones(2)}, "epoch": 2}
    checkpoint.keep(2, {"val_loss": 2.0}, lambda: second)  # worse: the best stays
    checkpoint.save(second)
    assert written[2:] == ["last.pt"] and torch.load(tmp_path / "best.pt")["epoch"] == 1
    third = {"model": {"w": torch.full((2,), 2.0)}, "epoch": 3}
    checkpoint.keep(3, {"val_loss": 0.5}, lambda: third)
    checkpoint.save(third)
    assert written[3:] == ["best.pt", "last.pt"]
    assert torch.load(tmp_path / "best.pt")["epoch"] == 3 and torch.load(tmp_path / "last.pt")["config"] == {"seed": 0}
