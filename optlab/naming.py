"""Names a person reads and types: run and job folders, and the commands optlab prints.

Folder names carry the overrides that made the run (`optimizer=adam,batch_size=16`), so runs are
told apart in the file system and in TensorBoard. Every command optlab prints for a user to
paste (resume hints, `tensorboard --logdir ...`) is quoted here for bash, and paths that go
back into Hydra overrides are quoted for Hydra's grammar, so `=`, `,`, brackets, quotes and
spaces in a folder name survive both. Imports no torch.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from pathlib import Path
from typing import Any


def overrides_name(overrides: Any, drop: tuple[str, ...] = ()) -> str:
    """`key=value` per override, sorted by key and joined by commas (Hydra's override_dirname),
    made safe for any file system, shell and TensorBoard: no `/`, no spaces or quotes.
    `rerun` and `summary.*` change no result, so they leave the name (and the folder) alone.
    A name over 120 bytes is cut (never inside a character) and ends in a hash of the whole."""
    pairs = sorted(
        (name.lstrip("+~"), value)
        for name, _, value in (str(o).partition("=") for o in overrides or [])
        if name.lstrip("+~") not in (*drop, "rerun") and not name.lstrip("+~").startswith("summary.")
    )
    name = ",".join(_safe(f"{k}={v}") for k, v in pairs).strip("_")
    if len(name.encode()) > 120:  # file names stop at 255 bytes; keep them readable and unique
        name = f"{name.encode()[:100].decode(errors='ignore')}_{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return name


def _safe(pair: str) -> str:
    """One `key=value`, its unsafe characters as `_`; where that lost more than a list's
    brackets (`/x/a/b` and `/x/a_b` would both read `_x_a_b`), a short hash of the exact text
    follows, so that no two values share a name."""
    safe = re.sub(r"[^\w.=,+-]+", "_", pair)
    if re.search(r"[^\w.=,+\-\[\]]", pair) or pair.endswith("_"):
        return f"{safe.rstrip('_')}_{hashlib.sha1(pair.encode()).hexdigest()[:8]}"
    return safe


def run_name(prefix: Any, overrides: Any) -> str:
    """A single run's folder: `<time>_<overrides>`."""
    name = overrides_name(overrides)
    return f"{prefix}_{name}" if name else str(prefix)


def job_dir(overrides: Any, seed: Any, *instead: str) -> str:
    """A sweep job's folder: `<overrides but seed>/seed=<seed>`, so that runs differing only in
    seed sit side by side and TensorBoard names each `optimizer=adam,batch_size=16/seed=0`.
    An `experiment=` preset already names the sweep folder, so it stays out of the job's.
    `instead` (`init=xavier_uniform`) names a sibling job: this one with those values."""
    keys = {o.partition("=")[0] for o in instead}
    overrides = [o for o in overrides or [] if str(o).partition("=")[0].lstrip("+~") not in keys] + list(instead)
    return f"{overrides_name(overrides, drop=('seed', 'experiment')) or 'defaults'}/seed={seed}"


def relative(path: Path) -> Path:
    """`path` from the working directory when it lies below it, as a user would type it."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def path_word(path: Path) -> str:
    """A path as a word of a command: `./-x` where a leading `-` would read as an option."""
    return f"./{path}" if str(path).startswith("-") else str(path)


def command(*words: object) -> str:
    """A command line to paste into bash: each word quoted where the shell would split or
    expand it; a `key=value` word keeps its key bare, as a person would type it."""
    return " ".join(_shell_word(str(word)) for word in words)


def _shell_word(word: str) -> str:
    key, sep, value = word.partition("=")
    if sep and re.fullmatch(r"[\w.+~/-]+", key):
        return f"{key}={_shell_word(value)}"
    if "'" in word and not re.search(r'["$`\\!]', word):
        return f'"{word}"'  # reads better than shlex's '"'"' for a Hydra-quoted value
    return shlex.quote(word)


def override(key: str, value: object) -> str:
    """`key=value` for Hydra, the value single-quoted (quotes and the backslashes before them
    escaped) where Hydra's grammar would read `=`, `,`, brackets or spaces in it as syntax."""
    text = str(value)
    if re.fullmatch(r"[\w./+:-]*", text):
        return f"{key}={text}"
    escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", text)
    return f"{key}='" + re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped) + "'"
