"""A user's mistake, in one line: `UsageError` (the CLI prints it and exits 2) and
`ConfigError` (names the key, the bad value and what is allowed), with the helpers that word them.
"""

from __future__ import annotations

import difflib
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


class UsageError(ValueError):
    """A user's mistake: the CLI prints its one-line message and exits with code 2."""


def usage_error(error: BaseException | None) -> BaseException | None:
    """The user's mistake behind `error`, if any: `error` itself, or what it was raised from."""
    while error is not None and not isinstance(error, UsageError):
        error = error.__cause__
    return error


def reason(error: BaseException, lines: int = 1) -> str:
    """What went wrong, for a one-line message: the first non-empty line(s) of the error's
    text, or its type's name when it has none."""
    text = [line.strip() for line in str(error).splitlines() if line.strip()]
    return " ".join(text[:lines]) or type(error).__name__


class ConfigError(UsageError):
    """A bad config value: names the key, the bad value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str, problem: str = "invalid value for"):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{problem} '{key}': {show(value)} (allowed: {allowed})")


def show(value: Any) -> str:
    """A value as the user would type it back: strings quoted, lists plain."""
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value)
    return repr(value) if isinstance(value, str) else str(value).replace("'", "")


def suggest(name: str, known: list[str], prefix: str = "") -> str:
    """"; did you mean 'optimizer.lr'?" for a near miss of `name` among `known` (each named as
    `prefix` + itself, so that the hint pastes back), else ''."""
    close = difflib.get_close_matches(name, known, n=1)
    return f"; did you mean '{prefix}{close[0]}'?" if close else ""


class Refused(BaseException):
    """An error in a Hydra callback, which Hydra would turn into a warning before going on:
    this passes through to the CLI, which prints a user's mistake in one line."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error
