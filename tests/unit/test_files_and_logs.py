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
