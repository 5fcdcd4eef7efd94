"""What `optlab bench` concludes from its studies and reruns (optlab/jobs/bench.py), read from
their folders: per problem and optimizer the final metric and the time to the target over the
reruns' seeds with 95% intervals; performance profiles over the problems (AlgoPerf: the fraction
of problems on which an optimizer reaches the target within a factor τ of the fastest); the
expected best score against the number of tuning trials (Dodge et al. 2019); and a verdict for
each pair of optimizers on each problem, worded as the report words its claims.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from optlab.analysis.runs import find_runs
from optlab.analysis.stats import interval, mean_interval
from optlab.analysis.summary import md_text
from optlab.metrics import BY_NAME
from optlab.store.files import atomic_write, read_json, write_json

TO_TARGET = ("steps_to_target", "examples_to_target", "time_to_target")  # what a time to target counts in


def trial_values(study: Path, metric: str) -> list[float]:
    """The tuning metric of every trial that finished, in the order the trials were asked."""
    runs = sorted(find_runs([study]), key=lambda r: r.path.name)
    return [float(r.metrics[metric]) for r in runs if isinstance(r.metrics.get(metric), (int, float))
            and math.isfinite(r.metrics[metric]) and r.metrics.get("status") == "completed"]


def expected_best(values: list[float], n: int, lower_is_better: bool) -> float:
    """E[best of n trials drawn with replacement from `values`] (Dodge et al. 2019, eq. 1): with
    v₍₁₎ ≤ … ≤ v₍N₎ (worst first), Σᵢ v₍ᵢ₎ · ((i/N)ⁿ − ((i−1)/N)ⁿ)."""
    ordered = sorted(values, reverse=lower_is_better)  # worst first
    size = len(ordered)
    return sum(v * ((i / size) ** n - ((i - 1) / size) ** n) for i, v in enumerate(ordered, 1))

def pair_result(spec: dict, out: Path, problem: str, optimizer: str) -> dict:
    """One problem and optimizer: its tuning, its best setting, its reruns and their summary."""
    metric = spec["problems"][problem]["metric"]
    folder = out / problem / optimizer
    values = trial_values(folder / "tune", metric)
    reruns = sorted(find_runs([folder / "reruns"]), key=lambda r: r.config.get("seed", 0))
    final = [float(r.metrics[metric]) for r in reruns if isinstance(r.metrics.get(metric), (int, float))]
    summary = {metric: dict(zip(("mean", "ci95"), mean_interval(final))) if final else None}
    for key in TO_TARGET:  # a seed that never reached the target makes the pair's time infinite
        times = [r.metrics.get(key) for r in reruns]
        summary[key] = dict(zip(("mean", "ci95"), mean_interval(times))) if times and None not in times else None
    best = read_json(folder / "tune" / "best_trial.json")
    return {"problem": problem, "optimizer": optimizer, "metric": metric,
            "tuning": {"trials": len(values), "values": values, "best": best["params"]},
            "reruns": [{"seed": r.config.get("seed"), "status": r.metrics.get("status"), metric: r.metrics.get(metric),
                        **{k: r.metrics.get(k) for k in TO_TARGET}} for r in reruns],
            "summary": summary}


def profiles(results: list[dict], problems: list[str], optimizers: list[str], key: str = "steps_to_target",
             taus: list[float] | None = None) -> dict:
    """ρ_o(τ): the fraction of problems on which optimizer o reaches the target within τ × the
    fastest optimizer's mean `key` (a problem no optimizer reached counts against every one)."""
    taus = taus or [1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0]
    time = {(r["problem"], r["optimizer"]): (r["summary"][key] or {}).get("mean", math.inf) for r in results}
    rho = {}
    for o in optimizers:
        ratios = [time[p, o] / min(time[p, q] for q in optimizers) if math.isfinite(time[p, o]) else math.inf
                  for p in problems]
        rho[o] = [sum(math.isfinite(r) and r <= tau for r in ratios) / len(problems) for tau in taus]
    return {"key": key, "taus": taus, "rho": rho}


def budget_curves(results: list[dict], trials: int) -> dict:
    """Expected best tuning score after 1 … `trials` trials, per problem and optimizer."""
    curves: dict = {}
    for r in results:
        lower = BY_NAME[r["metric"]].lower_is_better
        values = r["tuning"]["values"]
        curves.setdefault(r["problem"], {})[r["optimizer"]] = [
            expected_best(values, n, lower) if values else None for n in range(1, trials + 1)]
    return curves


def verdicts(results: list[dict], spec: dict, curves: dict) -> list[dict]:
    """Each pair of optimizers on each problem, judged as the report judges a claim (the better
    mean, with Welch's 95% interval of the difference: shown, or not shown on this data) on two
    counts over the reruns: steps to the target (a side with a seed that never reached it loses
    when the other always did) and the final metric; and, at each smaller budget, which is ahead
    by the expected best trial (a point estimate)."""
    found = []
    by = {(r["problem"], r["optimizer"]): r for r in results}
    names = list(spec["optimizers"])
    for p in spec["problems"]:
        metric = spec["problems"][p]["metric"]
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                runs = [by[p, o]["reruns"] for o in (a, b)]
                budgets = {n: (a if _ahead(ca, cb, metric) else b if ca != cb else "tie")
                           for n, ca, cb in zip(range(1, spec["trials"] + 1), curves[p][a], curves[p][b])}
                found.append({"problem": p, "pair": [a, b], "by_budget": budgets,
                              "to_target": _judge(a, b, *([r["steps_to_target"] for r in side] for side in runs), True),
                              "final": _judge(a, b, *([r[metric] for r in side] for side in runs),
                                              BY_NAME[metric].lower_is_better, metric)})
    return found


def _ahead(a: float | None, b: float | None, metric: str) -> bool:
    if a is None or b is None:
        return b is None and a is not None
    return a < b if BY_NAME[metric].lower_is_better else a > b


def _judge(a: str, b: str, va: list, vb: list, lower: bool, metric: str = "steps_to_target") -> dict:
    missing = [sum(v is None or not math.isfinite(v) for v in side) for side in (va, vb)]
    if any(missing):
        if all(missing) or not va or not vb:
            return {"on": metric, "verdict": "not shown on this data", "better": None,
                    "note": f"{a} missed in {missing[0]} of {len(va)} seeds, {b} in {missing[1]} of {len(vb)}"}
        better, worse = (b, a) if missing[0] else (a, b)
        return {"on": metric, "verdict": "shown", "better": better,
                "note": f"{worse} missed it in {max(missing)} of {len(va)} seeds, {better} never did"}
    low, high, note = interval(va, vb, deterministic=False)
    sign, effect = -1 if lower else 1, statistics.fmean(va) - statistics.fmean(vb)
    if effect == 0:
        return {"on": metric, "verdict": "not shown on this data", "better": None, "note": f"equal: {note}"}
    better = a if sign * effect > 0 else b
    shown = sign * low > 0 and sign * high > 0 or sign * low < 0 and sign * high < 0
    return {"on": metric, "verdict": "shown" if shown else "not shown on this data", "better": better,
            "interval": [v if math.isfinite(v) else None for v in (low, high)], "note": note}  # JSON has no ∞

def write(spec: dict, out: Path) -> dict:
    """bench.json (every number, FORMAT below), bench.md, profiles.png and budget.png in `out`."""
    problems, optimizers = list(spec["problems"]), list(spec["optimizers"])
    results = [pair_result(spec, out, p, o) for p in problems for o in optimizers]
    curves = budget_curves(results, spec["trials"])
    found = {"format": FORMAT, "machine": machine(), "protocol": spec, "results": results, "budget": curves,
             "profiles": {key: profiles(results, problems, optimizers, key) for key in TO_TARGET},
             "verdicts": verdicts(results, spec, curves)}
    write_json(out / "bench.json", found)
    figures(found, out)
    atomic_write(out / "bench.md", lambda f: f.write(markdown(found).encode()))
    return found


def machine() -> dict:
    """Where the numbers come from: what another reader needs to compare against them."""
    import datetime
    import os
    import platform
    from importlib.metadata import version

    cpu = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")),
               platform.processor() or platform.machine())
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": version("torch"),
            "optlab": version("optlab"), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes")}


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


# bench.json's form (after DeepOBS's results: one entry per problem and optimizer, the raw numbers
# beside their summary), named so that a reader can check what it is reading
FORMAT = "optlab-bench/1"


def _cell(entry: dict | None, digits: str = ".4g") -> str:
    if entry is None:
        return "not reached"
    if entry["ci95"] is None:
        return f"{entry['mean']:{digits}} (one seed)"
    return f"{entry['mean']:{digits}} ± {entry['ci95']:{digits}}"


def markdown(found: dict) -> str:
    spec = found["protocol"]
    lines = [f"# optlab bench: {len(spec['optimizers'])} optimizers, {len(spec['problems'])} problem(s), "
             f"{spec['trials']} trials each ({spec['sampler']}), the best setting rerun with {spec['seeds']} seed(s)", "",
             "{cpu}, {cores} cores; torch {torch}, optlab {optlab}; {date}".format(**found["machine"]), "",
             "| problem | optimizer | best setting | final metric (mean ± 95%) | steps to target | examples to target "
             "| seconds to target |", "| --- | --- | --- | --- | ---: | ---: | ---: |"]
    for r in found["results"]:
        best = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["tuning"]["best"].items())
        s = r["summary"]
        lines.append(f"| {md_text(r['problem'])} | {md_text(r['optimizer'])} | {md_text(best)} | {r['metric']} "
                     f"{_cell(s[r['metric']])} | {_cell(s['steps_to_target'], '.1f')} | "
                     f"{_cell(s['examples_to_target'], '.0f')} | {_cell(s['time_to_target'], '.3g')} |")
    lines += ["", "## Verdicts", "", "At the full budget, over the reruns' seeds (95% interval of the difference of "
              "means, Welch's t); at each smaller budget, which optimizer's expected best trial is ahead.", "",
              "| problem | pair | steps to target | final metric | ahead by expected best trial, budget 1, 2, … |",
              "| --- | --- | --- | --- | --- |"]
    for v in found["verdicts"]:
        a, b = v["pair"]
        cells = [md_text(_said(v[count])) for count in ("to_target", "final")]
        lines.append(f"| {md_text(v['problem'])} | {md_text(a)} vs {md_text(b)} | {cells[0]} | {cells[1]} | "
                     f"{md_text(', '.join(v['by_budget'].values()))} |")
    lines += ["", "![performance profiles](profiles.png)", "", "![expected best against trials](budget.png)", ""]
    return "\n".join(lines)


def _said(judged: dict) -> str:
    if judged["better"] is None:
        return f"{judged['verdict']} ({judged['note']})"
    span = f"95% interval [{judged['interval'][0]:.3g}, {judged['interval'][1]:.3g}], " \
        if None not in judged.get("interval", [None]) else ""
    return f"{judged['better']} better: {judged['verdict']} ({span}{judged['note']})"


def figures(found: dict, out: Path) -> None:
    """profiles.png (steps to target) and budget.png (one panel per problem)."""
    from optlab.store.plots import pyplot, save_figure

    plt = pyplot()
    profile = found["profiles"]["steps_to_target"]
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    for name, rho in profile["rho"].items():
        ax.step(profile["taus"], rho, where="post", label=name)
    ax.set(xscale="log", xlabel="τ (steps to target ÷ the fastest optimizer's)", ylim=(-0.02, 1.02),
           ylabel="fraction of problems within τ", title="performance profiles")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, out / "profiles.png")
    curves = found["budget"]
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4), layout="constrained", squeeze=False)
    for ax, (problem, by) in zip(axes[0], curves.items()):
        metric = next(r["metric"] for r in found["results"] if r["problem"] == problem)
        for name, values in by.items():
            ax.plot(range(1, len(values) + 1), values, marker="o", ms=3, label=name)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set(xlabel="tuning trials", ylabel=f"expected best {metric}", title=problem,
               yscale="log" if "loss" in metric else "linear")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, out / "budget.png")
