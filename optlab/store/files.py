"""Files that are never half-written (write to a temporary file, then rename into place), and a
lock that processes sharing a folder take in turn."""

from __future__ import annotations

import contextlib
import csv
import errno
import functools
import io
import itertools
import json
import math
import os
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from optlab.errors import UsageError, reason


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Call `write` on a temporary file beside `path`, then rename it over `path`: a reader
    sees the old file or the new one, never half of one. A full disk or a folder that cannot
    be written is a one-line UsageError naming the file; the old file stays as it was."""
    try:
        fd, tmp = _temporary(path)
    except OSError as error:
        raise UsageError(f"cannot write {path}: {error.strerror or error}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException as error:
        os.unlink(tmp)
        failure = os_error(error)  # torch.save raises a RuntimeError while handling the OSError
        if failure is not None:
            raise UsageError(f"cannot write {path}: {failure.strerror or failure}") from None
        raise


def _temporary(path: Path) -> tuple[int, Path]:
    """A new file beside `path` (`.name.<random>.tmp`, opened for writing) with a file's usual
    permissions, 0666 less the umask; its folder is made where it is missing. `tempfile.mkstemp`
    makes the file 0600, and a run writes several files an epoch where each system call counts
    (a member of a vectorized group writes ten): so the file is opened here with its mode, and
    the folder made only when the first try finds none."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:  # another writer's name: draw again
            continue
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
    raise FileExistsError(errno.EEXIST, f"no free temporary name beside {path}")


def os_error(error: BaseException | None) -> OSError | None:
    """The OSError that `error` is, or that it was raised from or while handling, if any."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


# what a file that cannot be written raises: a full disk or quota, a read-only or forbidden folder
WRITE_FAILURES = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


def unwritable(error: BaseException, where: Path) -> UsageError | None:
    """`error` as a one-line UsageError when a file could not be written (see WRITE_FAILURES),
    naming the file, or `where` (the folder being written) when the error does not say."""
    failure = os_error(error)
    if failure is None or failure.errno not in WRITE_FAILURES:
        return None
    return UsageError(f"cannot write {failure.filename or where}: {failure.strerror}")


def stamped(folder: Path, prefix: str = "") -> Iterator[Path]:
    """Names in `folder` for something kept aside now: `<prefix><time>`, then `-2`, `-3`, ...; the
    caller takes the first that is free."""
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    yield folder / f"{prefix}{stamp}"
    for n in itertools.count(2):
        yield folder / f"{prefix}{stamp}-{n}"


def write_json(path: Path, data: dict) -> None:
    """JSON with NaN and infinities as null (JSON has no NaN; other readers choke on it)."""
    clean = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in data.items()}
    text = json.dumps(clean, indent=2) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def write_csv(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else [])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, lambda f: f.write(buffer.getvalue().encode()))


def refuse_links(folder: Path, itself: bool = True, own: tuple[str, ...] = ()) -> None:
    """A one-line UsageError naming the first symbolic link in `folder` (and `folder` itself,
    unless not `itself`): optlab reads and writes a run's files only inside its own folder, and a
    link in a shared folder (`checkpoints -> ~/elsewhere`, `train.log -> ~/.bashrc`) would take
    its writes, archives and reads anywhere. `own`: names of links a library makes there itself."""
    paths = [folder] if itself else []
    if folder.is_dir() and not folder.is_symlink():
        for root, folders, files in os.walk(folder):  # a linked folder is listed here, never entered
            paths += [Path(root, name) for name in (*folders, *files) if name not in own]
    for path in paths:
        if path.is_symlink():
            raise UsageError(f"refused {path}: a symbolic link (optlab reads and writes a run's files only "
                             "inside its own folder)")


def load_yaml(path: Path, what: str = "") -> Any:
    """A YAML file a run wrote (`.hydra/config.yaml`, `overrides.yaml`) as OmegaConf reads it,
    or a one-line UsageError naming it (see `read_yaml`)."""
    from omegaconf import OmegaConf

    data = read_yaml(path, what)
    try:
        return OmegaConf.create({} if data is None else {data: None} if isinstance(data, str) else data)
    except Exception as error:
        raise UsageError(f"{what}cannot read {path}: {reason(error)}") from None


def read_yaml(path: Path, what: str = "") -> Any:
    """A YAML file's plain data, read by OmegaConf's rules (`OmegaConf.create(text)` makes its
    config of this), or a one-line UsageError naming it when it is missing or does not parse.
    An alias (`*name`) is refused before anything is built: nested ones make a few hundred bytes
    expand past any memory, and optlab writes none. Text without `*` can hold no alias and is
    parsed by libyaml, in C, where PyYAML has it: several times faster than its Python parser
    (scripts/bench_bookkeeping.py, row `yaml`), which was most of what a sweep's summary spent
    on each run it read. The two differ only on
    text no YAML writer makes (tabs between a key and its value, a byte-order mark after a
    comment, an empty tag), and a file is read by the same one every time."""
    import yaml

    try:
        text = path.read_text()
        return yaml.load(text, Loader=_yaml_loader(fast="*" not in text))
    except _Alias:
        raise UsageError(f"{what}refused {path}: it holds a YAML alias (*name), which a run's files never do") from None
    except yaml.MarkedYAMLError as error:  # the problem and where, not the parser's first line ("while ...")
        mark = error.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise UsageError(f"{what}cannot read {path}: {error.problem or reason(error)}{where}") from None
    except Exception as error:
        raise UsageError(f"{what}cannot read {path}: {reason(error)}") from None


@functools.cache
def _yaml_loader(fast: bool):
    """OmegaConf's YAML loader (its floats, its refusal of duplicate keys): on libyaml's parser
    when `fast` and PyYAML has it, else one that refuses an alias as it meets one, in the one
    pass that reads the file."""
    import yaml
    from omegaconf._utils import get_yaml_loader

    omegaconf = get_yaml_loader()
    if fast and yaml.__with_libyaml__:
        from yaml.cyaml import CParser

        class CLoader(CParser, omegaconf):  # libyaml's parser; OmegaConf's resolver and constructor
            def __init__(self, stream):
                CParser.__init__(self, stream)
                yaml.constructor.SafeConstructor.__init__(self)
                yaml.resolver.Resolver.__init__(self)

        return CLoader

    class Loader(omegaconf):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                raise _Alias
            return super().compose_node(parent, index)

    return Loader


class _Alias(Exception):
    """A YAML alias met while reading a run's file."""


def read_json(path: Path) -> dict:
    """A JSON object a run wrote (`metrics.json`, `lr_find.json`), or a one-line UsageError
    naming the file when it is missing, does not parse, or holds anything but an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read {path}: {reason(error)}") from None
    if not isinstance(data, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(data), "a number")
        raise UsageError(f"cannot read {path}: it holds {kind}, not a JSON object of key: value")
    return data


def load_checkpoint(path: Path, map_location: Any = "cpu") -> dict:
    """A checkpoint's dict, loaded with `weights_only=True`: tensors and plain values only, so
    that no file optlab reads can run code (a pickle can call anything as it loads). Anything
    that does not load that way is a one-line UsageError naming the file."""
    import pickle
    import warnings

    import torch

    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol: torch warns, then refuses or loads it
            warnings.simplefilter("ignore", UserWarning)
            saved = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UsageError(f"{path} does not exist") from None
    except pickle.UnpicklingError as error:
        if "weights only load failed" in str(error).lower():
            raise UsageError(
                f"refused to load {path}: it holds objects other than tensors and plain values, "
                f"and loading those could run code (optlab loads checkpoints with weights_only=True)"
            ) from None
        raise UsageError(f"cannot load {path}: not a PyTorch checkpoint ({error})") from None
    except Exception as error:  # truncated, or not a checkpoint at all
        raise UsageError(f"cannot load {path}: {reason(error)}") from None
    if not isinstance(saved, dict):
        raise UsageError(f"cannot load {path}: it holds a {type(saved).__name__}, not a checkpoint's dict")
    return saved


@contextlib.contextmanager
def locked(folder: Path):
    """One process at a time in the block, across processes sharing `folder` (a lock file in it)."""
    import fcntl

    with open(folder / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
