"""Atomic files and the fast TensorBoard checksum."""

from __future__ import annotations

import pytest
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as reference

from optlab.config import UsageError
from optlab.files import atomic_write, write_json
from optlab.logs import masked_crc32c


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
