"""Population-based training in `optlab tune` (`tune.sampler=pbt`): the study's `tune.trials`
trials, drawn at random from the search space, are the population; they train as one stacked
group whose members exploit and explore every `tune.pbt.interval` epochs
(optlab/training/population.py). Each member's lineage, read back from the members' history.csv,
is a schedule that `optlab train scheduler=piecewise` replays as one run.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from optlab.errors import ConfigError, UsageError
from optlab.jobs.tune import space
from optlab.metrics import BY_NAME, so_far
from optlab.naming import command
from optlab.training.population import Member, Population

# optimizer numbers PBT may not move: the decay's exempt parameters keep a group of their own at 0
FIXED = ("weight_decay",)


def check(cfg: DictConfig, params: list[space.Param]) -> None:
    """Refuse, in one line, a population-based search optlab cannot run: a key that is not one
    of the optimizer's numbers, a schedule or early stopping that would fight the exploit step,
    a population too small for `tune.pbt.quantile` to move a member."""
    for p in params:
        name = p.key.removeprefix("optimizer.")
        numeric = not hasattr(p.distribution, "choices") or space.as_numbers(p.distribution.choices) is not None
        if not p.key.startswith("optimizer.") or name in FIXED or not numeric or "." in name:
            raise ConfigError("tune.sampler", "pbt", f"a search over the optimizer's numbers (optimizer.lr, "
                              f"optimizer.momentum, ...; not {', '.join(FIXED)}): {p.key}={p.text} must stay "
                              "one value per member (search it with tune.sampler=tpe)")
    if cfg.scheduler._target_ != "torch.optim.lr_scheduler.ConstantLR":
        raise ConfigError("tune.sampler", "pbt", "the default scheduler=constant: population-based training sets "
                          "the optimizer's numbers itself, and a schedule would change them under it")
    if cfg.early_stopping.monitor:
        raise ConfigError("tune.sampler", "pbt", "early_stopping=off: a member that goes on as another would "
                          "count that member's epochs toward its patience")
    if int(cfg.tune.trials * cfg.tune.pbt.quantile) < 1:
        raise ConfigError("tune.trials", cfg.tune.trials, f"at least {math.ceil(1 / cfg.tune.pbt.quantile)} with "
                          f"tune.sampler=pbt and tune.pbt.quantile={cfg.tune.pbt.quantile}: the bottom quantile "
                          "must hold a member")


def explorer(params: list[space.Param], factors: list[float], resample: float) -> Callable:
    """explore(values, rng): a copied member's numbers, each drawn afresh from its search
    expression with probability `resample`, else multiplied by one of `factors` (a choice moves
    to the neighbouring choice) and kept within the expression's range."""

    def explore(values: dict[str, float], rng: random.Random) -> dict[str, float]:
        return {p.key.removeprefix("optimizer."): draw(p.distribution, rng) if rng.random() < resample
                else perturb(p.distribution, values[p.key.removeprefix("optimizer.")], rng.choice(factors))
                for p in params}

    return explore


def draw(d, rng: random.Random):
    """A value of an Optuna distribution, drawn with `rng`."""
    if hasattr(d, "choices"):
        return rng.choice(choices(d))
    if d.log:
        value = math.exp(rng.uniform(math.log(d.low), math.log(d.high)))
    else:
        value = rng.uniform(d.low, d.high)
    step = d.step or (1 if isinstance(d.low, int) else None)
    return type(d.low)(min(d.high, d.low + round((value - d.low) / step) * step)) if step else value


def perturb(d, value, factor: float):
    """`value` × `factor`, kept within the distribution (a choice: the next one up or down)."""
    if hasattr(d, "choices"):
        ordered = sorted(choices(d))
        i = min(range(len(ordered)), key=lambda i: abs(ordered[i] - value)) + (1 if factor > 1 else -1)
        return ordered[min(max(i, 0), len(ordered) - 1)]
    moved = min(max(value * factor, d.low), d.high)
    return type(d.low)(round(moved)) if isinstance(d.low, int) else moved


def choices(d) -> list[float | int]:
    """A choice's values as the numbers a config holds (`choice(1,2)`: ints, `choice(0.5,0.9)`: floats)."""
    return [int(c) if float(c).is_integer() and "." not in c and "e" not in c.lower() else float(c) for c in d.choices]


def population(trials: list, cfg: DictConfig, params: list[space.Param]):
    """Each trial's `Member` callback and the group's `Population` step."""
    names = [p.key.removeprefix("optimizer.") for p in params]
    members = [Member(folder_number(trial.user_attrs["run"]), names) for trial in trials]
    minimize = trials[0].study.direction.name == "MINIMIZE"
    pbt = cfg.tune.pbt
    step = Population(members, BY_NAME[cfg.tune.metric].per_epoch, minimize, pbt.interval, pbt.quantile,
                      explorer(params, list(pbt.factors), pbt.resample_probability), cfg.tune.seed, cfg.epochs)
    return members, step


def folder_number(name: str) -> int:
    """The number a member goes by: its folder's (`007_optimizer.lr=0.1`: the trial that began it,
    kept when a resumed study asks for it again under a new trial number)."""
    return int(name.split("_", 1)[0])


def read_history(path: Path) -> dict[int, dict]:
    """A member's history.csv as epoch → row (numbers as floats, an empty cell None). Strict, unlike
    the summary's reader (optlab/analysis/runs.py, which reads a damaged cell as a gap in a curve):
    a lineage replayed from a damaged row would train other numbers, so it is refused naming the file."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    try:
        return {int(r["epoch"]): {k: float(v) if v not in ("", None) else None for k, v in r.items()} for r in rows}
    except (KeyError, ValueError) as error:
        raise UsageError(f"{path}: not a member's history ({error})") from None


def lineage(histories: dict[int, dict[int, dict]], number: int) -> list[tuple[int, dict]]:
    """(member, row) of each epoch of the trajectory member `number` ended on: its own epochs
    back to the one it went on from another member at, then that member's, and so on to epoch 1."""
    rows, member = [], number
    for epoch in range(max(histories[number], default=0), 0, -1):
        row = histories.get(member, {}).get(epoch)
        if row is None:
            raise UsageError(f"trial {member}'s history has no epoch {epoch}: the lineage of trial {number} breaks")
        rows.append((member, row))
        if row.get("copied_from") is not None:
            member = int(row["copied_from"])
    return rows[::-1]


def schedule(rows: list[dict], names: list[str]) -> tuple[dict, dict[int, dict]]:
    """(the numbers of epoch 1, {epoch: the numbers set after it}) along a lineage's rows."""
    key = [f"optimizer.{n}" for n in names]
    first, at = {k: rows[0][k] for k in key}, {}
    for before, row in zip(rows, rows[1:]):
        changed = {k.removeprefix("optimizer."): row[k] for k in key if row[k] != before[k]}
        if changed:
            at[int(before["epoch"])] = changed
    return first, at


def replay(base: list[str], first: dict, at: dict[int, dict], params: list[space.Param]) -> str:
    """The `optlab train` command that trains a lineage as one run."""
    kept = [o for o in base if not o.lstrip("+~").startswith("scheduler")]
    values = [p.override(as_type(p, first[p.key])) for p in params]
    steps = ",".join(f"{epoch}:{{{','.join(f'{n}:{v!r}' for n, v in changed.items())}}}"
                     for epoch, changed in at.items())
    return command("optlab", "train", *kept, *values, *(["scheduler=piecewise", f"scheduler.at={{{steps}}}"] * bool(at)))


def as_type(p: space.Param, value: float):
    """A number read back from a history as its search expression's type."""
    d = p.distribution
    whole = isinstance(d.low, int) if not hasattr(d, "choices") else all(isinstance(c, int) for c in choices(d))
    return int(value) if whole else value


def winner(study, cfg: DictConfig, study_dir: Path, params: list[space.Param]) -> dict:
    """The member whose lineage scored best by `tune.metric`, its lineage's value and the command
    that replays it (the record best_trial.json adds for a population)."""
    folders = {folder_number(name): name for name in sorted(
        {t.user_attrs["run"] for t in study.get_trials(deepcopy=False) if t.user_attrs.get("run")})
        if (study_dir / name / "history.csv").is_file()}
    histories = {number: read_history(study_dir / name / "history.csv") for number, name in folders.items()}
    minimize = study.direction.name == "MINIMIZE"
    lines = {n: lineage(histories, n) for n in histories if histories[n]}
    scored = {n: so_far(cfg.tune.metric, [row for _, row in rows], minimize) for n, rows in lines.items()}
    # lineages that share their best epoch tie: the lowest number wins
    best = min(scored, key=lambda n: (scored[n] if minimize else -scored[n], n))
    rows = [row for _, row in lines[best]]
    first, at = schedule(rows, [p.key.removeprefix("optimizer.") for p in params])
    segments = []  # [trial, first epoch, last epoch] of each stretch the lineage spent in one member
    for epoch, (member, _) in enumerate(lines[best], 1):
        if segments and segments[-1][0] == member:
            segments[-1][2] = epoch
        else:
            segments.append([member, epoch, epoch])
    return {"number": best, "run": folders[best], "value": scored[best], "lineage": segments, "first": first,
            "at": at, "lines": lines}
