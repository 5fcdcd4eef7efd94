"""A search space in Hydra's sweep grammar, as hydra-optuna-sweeper reads it, turned into
Optuna distributions and checked against the config before any trial trains.

- `choice(a,b,...)`: one of the values (group options, numbers, lists): categorical;
- `interval(low,high)`: a float; `tag(log, interval(...))` on a log scale; `tag(int, ...)` an integer;
- `range(start,stop,step)`: a stepped integer (or float) from start up to, not including, stop.

NaN and infinities are refused; the config is composed and checked at the space's corners.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from optlab.config.checks import validate
from optlab.config.wording import describe
from optlab.errors import ConfigError, UsageError

GRAMMAR = "choice(a,b), interval(low,high), range(start,stop,step), tag(log, interval(low,high)), tag(int, ...)"


RANGE_VALUES = 10_000  # a range's values are listed (a grid visits each): more is an interval's job


CORNERS = 64  # a space with more corners is checked at every pair of keys' probes (`points`)


@dataclass
class Param:
    """One searched key: its distribution, and the values a check composes (its ends, or its choices)."""

    key: str
    text: str  # as written: `tag(log, interval(1e-4, 1))`
    distribution: object  # an optuna.distributions object
    probes: list

    def override(self, value) -> str:
        return f"{self.key}={value!r}" if isinstance(value, float) else f"{self.key}={value}"

    def name(self, value) -> str:
        """`key=value` for a folder name: floats to 4 significant digits."""
        return f"{self.key}={value:.4g}" if isinstance(value, float) else f"{self.key}={value}"

    def grid(self) -> list:
        """Every value (a choice's or a range's): what a grid search visits."""
        if hasattr(self.distribution, "choices"):
            return list(self.distribution.choices)
        d = self.distribution
        count = round((d.high - d.low) / d.step) + 1
        return [type(d.low)(d.low + i * d.step) for i in range(count)]


def split(args: list[str]) -> tuple[list[str], list[str]]:
    """(plain overrides and flags, search expressions): Hydra would read `choice(...)` as a sweep."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    plain, search = [], []
    for arg in args:
        try:
            is_search = not arg.startswith("-") and parser.parse_override(arg).is_sweep_override()
        except HydraException:  # Hydra reports it, in its own words
            is_search = False
        (search if is_search else plain).append(arg)
    return plain, search


def parse(entries: dict[str, str]) -> list[Param]:
    """The space as Optuna distributions; an entry that is not one is the user's to fix."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    params = []
    for key, text in entries.items():
        try:
            override = parser.parse_override(f"{key}={text}")
            if not override.is_sweep_override():
                raise ConfigError(key, text, GRAMMAR, "not a search expression for")
            params.append(_param(key, text, override))
        except UsageError:
            raise
        except Exception as error:  # Hydra's parser, Optuna's distributions, range's arithmetic
            raise ConfigError(key, text, GRAMMAR, f"cannot search ({error}) by") from None
    return params


def _param(key: str, text: str, override) -> Param:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    sweep = override.value()
    ends = [sweep.start, sweep.end] if override.is_interval_sweep() else \
        [sweep.start, sweep.stop, sweep.step] if override.is_range_sweep() else sweep.list
    if not _finite(ends):  # a trial would train with it (lr=nan), or a range would never end
        raise ConfigError(key, text, "finite numbers", "NaN or infinity in")
    tags = set(sweep.tags)
    if tags - {"log", "int"}:
        raise ConfigError(key, text, "the tags log and int", "unknown tag for")
    if override.is_interval_sweep():
        low, high = sweep.start, sweep.end
        if not low < high:
            raise ConfigError(key, text, "interval(low, high) with low < high", "reversed interval for")
        if "log" in tags and low <= 0:
            raise ConfigError(key, text, "a log interval with 0 < low < high", "log scale through 0 for")
        if "int" in tags:
            if low != int(low) or high != int(high):
                raise ConfigError(key, text, "integer ends with tag(int, ...)")
            return Param(key, text, IntDistribution(int(low), int(high), log="log" in tags), [int(low), int(high)])
        return Param(key, text, FloatDistribution(low, high, log="log" in tags), [low, high])
    if tags:
        raise ConfigError(key, text, "tags on interval(...) only", "a tag on a list for")
    if override.is_range_sweep():
        if sweep.step and (sweep.stop - sweep.start) / sweep.step > RANGE_VALUES:  # Hydra lists every value
            raise ConfigError(key, text, f"at most {RANGE_VALUES} values (wider: interval(low,high), "
                              "tag(int, interval(low,high)))", "too long a range for")
        values = [float(v) if "." in v or "e" in v else int(v) for v in override.sweep_string_iterator()]
        if not values:
            raise ConfigError(key, text, "a range with at least one value", "empty range for")
        kind = FloatDistribution if any(isinstance(v, float) for v in values) else IntDistribution
        step = sweep.step if len(values) > 1 else 1
        return Param(key, text, kind(values[0], values[-1], step=step), [values[0], values[-1]])
    choices = list(override.sweep_string_iterator())
    numbers = as_numbers(choices)
    probes = [choices[numbers.index(min(numbers))], choices[numbers.index(max(numbers))]] if numbers else choices
    return Param(key, text, CategoricalDistribution(choices), probes)


def _finite(value) -> bool:
    """No NaN or infinity in `value` (a choice's list or dict too), nor a string that a trial's
    override would read as one (`'nan'` goes back to Hydra unquoted)."""
    if isinstance(value, (list, tuple)):
        return all(map(_finite, value))
    if isinstance(value, dict):
        return all(map(_finite, value.values()))
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return True


def as_numbers(choices: list[str]) -> list[float] | None:
    """The choices as numbers, when they all are (their ends are then enough to check)."""
    try:
        return [float(c) for c in choices]
    except ValueError:
        return None


def points(params: list[Param]) -> list[dict]:
    """The settings a check composes, fewest keys away from their first probe first: every
    corner of the space (each key at each of its probes) when there are at most CORNERS of
    them, else every pair of keys at each pair of their probes, the other keys at their first.
    A rule spanning two keys (`data.val_fraction` + `data.test_fraction` < 1) is met at all of them."""
    sizes = [len(p.probes) for p in params]
    if math.prod(sizes) <= CORNERS:
        chosen = set(itertools.product(*map(range, sizes)))
    else:
        chosen = set()
        for i, j in itertools.combinations_with_replacement(range(len(params)), 2):
            for a, b in itertools.product(range(sizes[i]), range(sizes[j])):
                point = [0] * len(params)
                point[i], point[j] = a, b
                chosen.add(tuple(point))
    ordered = sorted(chosen, key=lambda point: (sum(map(bool, point)), point))
    return [{p.key: p.probes[k] for p, k in zip(params, point)} for point in ordered]


def check(params: list[Param], base: list[str]) -> None:
    """Compose and validate the config at every point of `points`: an unknown key, an unknown
    option, a value out of range or a rule two keys break together ends the command before any
    trial trains, naming the space's keys and the values that broke it."""
    from hydra import compose
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    for point in points(params):
        overrides = [*base, *(p.override(point[p.key]) for p in params)]
        moved = [p for p in params if point[p.key] != p.probes[0]] or params
        where = f"search space: {', '.join(f'{p.key}={p.text}' for p in moved)} at " + \
            ", ".join(p.override(point[p.key]) for p in moved)
        try:
            cfg = compose("config", overrides)
            validate(cfg)
        except UsageError as error:
            raise UsageError(f"{where}: {error}") from None
        except (HydraException, OmegaConfBaseException, ValueError) as error:  # composing: a key or option
            raise UsageError(f"{where}: {describe(error, overrides)}") from None
        if cfg.get("surface") is not None:
            raise UsageError("surface=...: optlab tune searches network runs (a surface: optlab train -m)")


def described(params: list[Param]) -> dict[str, str]:
    """The space as its distributions: the same search however it was written (spaces, order)."""
    return {p.key: repr(p.distribution) for p in sorted(params, key=lambda p: p.key)}
