"""Hydra's and OmegaConf's complaints about a command line, reworded as one line naming the
key, the value and what is allowed.
"""

from __future__ import annotations

import re

from optlab.config.schema import rule_for
from optlab.errors import ConfigError, reason, show, suggest


def describe(error: Exception, args: list[str]) -> str:
    """One line for a user's mistake: the key, the value, and what is allowed."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    if isinstance(error, OverrideParseException):
        return f"cannot parse override: {reason(error)}"
    if isinstance(error, MissingConfigException) and error.options:
        missing = re.search(r"Could not find '([^']+)'", str(error))
        group, _, option = (missing.group(1) if missing else "?/?").rpartition("/")
        return str(ConfigError(group, option, ", ".join(error.options), "unknown option for"))
    cause = error.__cause__ or error
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError, ValidationError)) and cause.full_key:
        path = cause.full_key
        value = _typed_value(path, args)
        if isinstance(cause, ValidationError):
            rule = rule_for(path)
            allowed = rule.allowed if rule else reason(cause)
            return str(ConfigError(path, value, allowed))
        removed = [a.partition("=")[0][1:] for a in args if a.startswith("~")]
        for key in removed:
            if path == key or path.startswith(f"{key}."):
                return f"'{key}' cannot be removed: every run needs it (see: optlab train --help)"
        parent, _, name = path.rpartition(".")
        known = [str(k) for k in (cause.parent_node or {}) if k not in ("_target_", "hydra")]
        hint = suggest(name, known, f"{parent}." if parent else "")
        where = f"'{parent}'" if parent else "the top level"
        return (
            f"unknown key '{path}': {show(value)}{hint} "
            f"(allowed at {where}: {', '.join(known)})"
        )
    return reason(error)


def _typed_value(path: str, args: list[str]) -> object:
    """The value the user wrote for `path` on the command line, parsed as YAML reads it."""
    import yaml

    for arg in args:
        name, sep, value = arg.lstrip("+~").partition("=")
        if sep and name == path:
            try:
                return yaml.safe_load(value)
            except yaml.YAMLError:
                return value
    return "?"
