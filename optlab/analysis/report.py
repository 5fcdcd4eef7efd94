"""`optlab report`: the recitation reproduced by one command, each claim checked by its data.

`conf/report.yaml` lists the experiment presets and the claims of the slides. The report runs
every preset not yet run into `<out>/runs/<experiment>/` (vectorized where its runs stack; a
preset whose runs all finished is not run again, so a second call takes seconds), then judges
each claim: the difference of the two configurations' means over seeds, a 95% interval for it
(Welch's t), and a verdict. It writes `report.md` (figures in `figures/`) and `index.html`, a
single file with the figures inline.
"""

from __future__ import annotations

import base64
import hashlib
import html
import logging
import math
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from urllib.parse import quote

from omegaconf import DictConfig, OmegaConf

from optlab.analysis.runs import RunFolder, find_runs, group_runs, run_folders, sort_key
from optlab.analysis.stats import interval, mean_interval
from optlab.analysis.summary import md_code, md_text
from optlab.errors import UsageError
from optlab.naming import command
from optlab.store.files import atomic_write, read_json, refuse_links, write_json

log = logging.getLogger("optlab")


VERDICTS = ("shown", "not shown on this data", "opposite", "not run")


@dataclass
class Finding:
    """One claim against its runs."""

    claim: DictConfig
    slide: str
    better: list[float]  # the metric of each run of the configuration the claim favours
    than: list[float]
    low: float
    high: float  # the 95% interval of mean(better) − mean(than)
    note: str  # how the interval was had
    data: str  # the dataset the runs used

    @property
    def effect(self) -> float:
        return statistics.fmean(self.better) - statistics.fmean(self.than)

    @property
    def verdict(self) -> str:
        """Shown when the whole interval lies on the claimed side of 0, opposite when on the other."""
        if self.data == "not run":
            return "not run"
        sign = 1 if self.claim.direction == "higher" else -1
        if sign * self.low > 0 and sign * self.high > 0:
            return "shown"
        if sign * self.low < 0 and sign * self.high < 0:
            return "opposite"
        return "not shown on this data"


def spec() -> DictConfig:
    return OmegaConf.load(str(files("optlab.conf") / "report.yaml"))


def run_experiments(spec: DictConfig, out: Path, keep: str = "all") -> list[str]:
    """Run each preset that has not finished into `out/runs/<name>`, its progress shown as runs
    done of its sweep's; with `keep="records"`, delete the checkpoints of every finished run
    (the verdicts read metrics.json). Returns the presets that failed."""
    failed, names = [], list(spec.experiments)
    for i, name in enumerate(names, start=1):
        if missing(spec.experiments[name]):
            log.info("%s: not run: needs %s", name, missing(spec.experiments[name]))
            continue
        folder, experiment = out / "runs" / name, spec.experiments[name]
        if (finished(folder) or {}).get("preset") != _fingerprint(name, experiment):
            launcher, bench = experiment.get("launcher"), experiment.get("bench")
            command = [sys.executable, "-m", "optlab", "train", f"experiment={name}", f"hydra.sweep.dir={folder}",
                       *(["hydra/launcher=vectorized"] if launcher == "vectorized" else [])] if bench is None else \
                [sys.executable, "-m", "optlab", "bench", "--protocol", bench, "--out", str(folder)]
            started = time.perf_counter()
            folder.mkdir(parents=True, exist_ok=True)
            total = planned(name) if bench is None else bench_planned(bench)
            log.info("%s (preset %d of %d): %d runs, output in %s", name, i, len(names), total,
                     out / "runs" / f"{name}.log")
            with (open(out / "runs" / f"{name}.log", "w") as output,
                  subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT) as process):
                code = watch(process, folder, name, total)
            log.info("%s: %.0f s%s", name, time.perf_counter() - started, "" if code == 0 else f", exit {code}")
            if code != 0:
                failed.append(name)
                continue
            write_json(folder / MARKER, {"preset": _fingerprint(name, experiment), "seconds": time.perf_counter() - started})
        if keep == "records":
            drop_checkpoints(folder)
    return failed


MARKER = ".report.json"  # a preset's folder once its sweep finished: {"preset": fingerprint, "seconds": time}


def finished(folder: Path) -> dict | None:
    """What a preset's finished sweep recorded in `folder`; None when it has not finished (or its
    record is damaged: the sweep runs again, skipping what it completed, and records it anew)."""
    try:
        record = read_json(folder / MARKER)
    except UsageError:
        return None
    return record if isinstance(record.get("seconds"), (int, float)) else None


def planned(name: str) -> int:
    """How many runs the preset's sweep has: its `hydra.sweeper.params` expanded as Hydra's
    sweeper expands them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from optlab.config.hydra_compat import BasicSweeper

    params = OmegaConf.load(str(files("optlab.conf") / "experiment" / f"{name}.yaml")).hydra.sweeper.params
    overrides = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    return sum(map(len, BasicSweeper.split_arguments(overrides, None)))


def watch(process: subprocess.Popen, folder: Path, name: str, total: int) -> int:
    """Wait for a preset's sweep, showing its runs done (those with a record) of `total`: a bar
    on a terminal, a log line at each change otherwise. Returns its exit code."""
    from tqdm import tqdm

    done, code = -1, None
    bar = tqdm(total=total, desc=name, unit="run", dynamic_ncols=True) if sys.stdout.isatty() else None
    while code is None:
        try:
            code = process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass
        now = len(run_folders(folder))
        if now != done and bar is not None:
            bar.update(now - bar.n)
        elif now != done:
            log.info("%s: %d/%d runs done", name, now, total)
        done = now
    if bar is not None:
        bar.close()
    return code


def drop_checkpoints(folder: Path) -> None:
    """Delete `checkpoints/` of every finished run under `folder`: a finished run is never
    resumed, and its record (metrics.json, curves, configs) holds what a verdict reads."""
    from optlab.store.folder import FINISHED, read_metrics

    for run in run_folders(folder):
        if (read_metrics(run) or {}).get("status") in FINISHED:
            shutil.rmtree(run / "checkpoints", ignore_errors=True)


def disk_use(folder: Path) -> str:
    """`701.2 MB in 4321 files (666 checkpoints)` under `folder`."""
    sizes = [(f.stat().st_size, f.suffix == ".pt") for f in folder.rglob("*") if f.is_file()]
    checkpoints = sum(pt for _, pt in sizes)
    return f"{sum(size for size, _ in sizes) / 1e6:,.1f} MB in {len(sizes)} files ({checkpoints} checkpoints)"


def missing(experiment: DictConfig) -> str | None:
    """What an experiment needs that is not installed (`pip install -e ".[mnist5k]"`), if anything."""
    import importlib.util

    need = experiment.get("needs")
    return f'{need} (pip install -e ".[mnist5k]")' if need and importlib.util.find_spec(need) is None else None


def _fingerprint(name: str, experiment: DictConfig) -> str:
    """The preset's (or bench protocol's) text: a changed one runs again (what finished is still skipped)."""
    source = protocol(experiment.bench) if experiment.get("bench") else files("optlab.conf") / "experiment" / f"{name}.yaml"
    return hashlib.sha1(source.read_bytes()).hexdigest()


def protocol(bench: str) -> Path:
    """A bench protocol: a YAML file's path, or the name of one in conf/bench/."""
    return Path(bench) if bench.endswith((".yaml", ".yml")) else Path(str(files("optlab.conf") / "bench" / f"{bench}.yaml"))


def bench_planned(bench: str) -> int:
    """How many runs a bench protocol trains: every trial and rerun of every problem and optimizer."""
    spec = OmegaConf.load(protocol(bench))
    return len(spec.problems) * len(spec.optimizers) * (spec.trials + spec.seeds)


def experiment_runs(folder: Path, experiment: DictConfig) -> list[RunFolder]:
    """The runs a claim is judged on: a preset's sweep, or a bench's reruns of each optimizer's
    best setting (found with the same tuning budget)."""
    return find_runs(sorted(folder.glob("*/*/reruns")) if experiment.get("bench") else [folder])


def picked(runs: list[RunFolder], overrides: DictConfig) -> list[RunFolder]:
    """The runs whose overrides include every `key: value` given, compared as Hydra writes
    values (`1e-3` = `0.001`, `true` = `True`)."""
    return [r for r in runs if all(_plain(r.overrides.get(str(k))) == _plain(v) for k, v in overrides.items())]


def _plain(value) -> float | str:
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value).lower()


def value(run: RunFolder, metric: str) -> float | None:
    if metric == "diverged":
        return float(run.metrics.get("status") == "diverged")
    number = run.metrics.get(metric)
    return float(number) if isinstance(number, (int, float)) and math.isfinite(number) else None

def judge(claim: DictConfig, slide: str, runs: list[RunFolder]) -> Finding:
    sides = [picked(runs, claim.better), picked(runs, claim.than)]
    for side, name in zip(sides, ("better", "than")):
        if not side:
            raise UsageError(f"report: no run of experiment={claim.experiment} matches {name}: "
                             f"{OmegaConf.to_container(claim[name])}")
    better, than = ([v for v in (value(r, claim.metric) for r in side) if v is not None] for side in sides)
    deterministic = all("surface._target_" in r.config for r in sides[0] + sides[1])  # no data, no seed
    low, high, note = interval(better, than, deterministic) if better and than else (math.nan, math.nan, "no value")
    data = "2-D surface" if deterministic else sides[0][0].config["data.source._target_"].rsplit(".", 1)[-1]
    return Finding(claim, slide, better, than, low, high, note, data)


def figure(finding: Finding, runs: list[RunFolder], path: Path) -> Path:
    """The claim's metric for every configuration of its experiment (each seed a dot, the mean
    with its 95% interval), the two it compares in colour."""
    from optlab.store.plots import pyplot, save_figure

    claim = finding.claim
    groups = sorted((g for g in group_runs(runs) if any(value(r, claim.metric) is not None for r in g.runs)),
                    key=lambda g: [sort_key(v) for v in g.params.values()])  # 8, 16, ..., full
    chosen = {id(r): colour for side, colour in ((claim.better, "tab:green"), (claim.than, "tab:red"))
              for r in picked(runs, side)}
    fig, ax = pyplot().subplots(figsize=(max(5.0, 0.55 * len(groups) + 2), 3.6), layout="constrained")
    for i, group in enumerate(groups):
        values = [v for v in (value(r, claim.metric) for r in group.runs) if v is not None]
        colour = next((chosen[id(r)] for r in group.runs if id(r) in chosen), "tab:grey")
        ax.scatter([i] * len(values), values, s=14, color=colour, alpha=0.6, zorder=3)
        mean, half = mean_interval(values)
        ax.errorbar(i + 0.18, mean, yerr=half, fmt="_", color=colour, capsize=3, markersize=10)
    ax.set_xticks(range(len(groups)), [g.label or "defaults" for g in groups], rotation=35, ha="right", fontsize=7)
    ax.set(ylabel=claim.metric, title=f"{claim.experiment}: {claim.metric}")
    ax.grid(alpha=0.3, axis="y")
    save_figure(fig, path)
    return path


def effect_text(f: Finding) -> str:
    if f.verdict == "not run":
        return f.note
    if not (f.better and f.than):
        return "no value"
    bounds = "" if f.low == f.high else f" [{f.low:+.4g}, {f.high:+.4g}]"
    means = f"{statistics.fmean(f.better):.4g} vs {statistics.fmean(f.than):.4g}"
    return f"Δ {f.claim.metric} = {f.effect:+.4g}{bounds} ({means}; {f.note})"


def tally(findings: list[Finding]) -> str:
    """`20 claims: 15 shown, 5 not shown on this data, 0 opposite` (and any not run)."""
    counts = {v: sum(f.verdict == v for f in findings) for v in VERDICTS}
    parts = [f"{counts[v]} {v}" for v in VERDICTS if v != "not run" or counts[v]]
    return f"{len(findings)} claims: " + ", ".join(parts)


def markdown(findings: list[Finding], figures: dict[int, list[Path]], minutes: float) -> str:
    """report.md: every value as literal text (md_text, md_code), whatever a config holds."""
    lines = ["# The recitation, reproduced", "",
             f"{md_text(tally(findings))}. Every number comes from the runs under `runs/` "
             f"({minutes:.1f} min of experiments on this machine); effects are the difference of the two "
             "configurations' means over seeds with a 95% interval.", "",
             "| slide | claim | data | effect (95% interval) | verdict |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {md_text(f.slide)} | {md_text(f.claim.claim)} | {md_text(f.data)} | {md_text(effect_text(f))} "
              f"| **{md_text(f.verdict)}** |" for f in findings]
    slide = None
    for i, f in enumerate(findings):
        if f.slide != slide:
            slide = f.slide
            lines += ["", f"## {md_text(slide)}", "", md_code(rerun(f))]
        lines += ["", f"**Claim.** {md_text(f.claim.claim)}", "",
                  *(f"![{md_text(p.stem)}](figures/{quote(p.name)})" for p in figures[i]), "",
                  f"{md_text(effect_text(f))}: **{md_text(f.verdict)}**."]
    return "\n".join(lines) + "\n"


def rerun(finding: Finding) -> str:
    """The command that runs a claim's experiment, quoted for the shell."""
    return command("optlab", "train", f"experiment={finding.claim.experiment}")


CSS = """body{font:15px/1.5 system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}
img{max-width:100%}code{background:#f3f3f3;padding:1px 4px}.shown{color:#1a7f37}.opposite{color:#c62828}
.not{color:#9a6700}section{border-top:1px solid #ddd;margin-top:2em}"""


def page(findings: list[Finding], figures: dict[int, list[Path]], minutes: float) -> str:
    """index.html: everything in one file, figures as data URIs, no script."""
    def badge(f):
        return f'<b class="{f.verdict.split()[0]}">{html.escape(f.verdict)}</b>'

    def inline(path):
        return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}">'

    rows = "".join(f"<tr><td>{html.escape(f.slide)}</td><td>{html.escape(f.claim.claim)}</td>"
                   f"<td>{html.escape(f.data)}</td><td>{html.escape(effect_text(f))}</td><td>{badge(f)}</td></tr>"
                   for f in findings)
    sections, slide = [], None
    for i, f in enumerate(findings):
        if f.slide != slide:
            slide = f.slide
            sections.append(f"<section><h2>{html.escape(slide)}</h2><p><code>{html.escape(rerun(f))}</code></p>")
        sections.append(f"<h3>{html.escape(f.claim.claim)}</h3>{''.join(inline(p) for p in figures[i])}"
                        f"<p>{html.escape(effect_text(f))}: {badge(f)}</p>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>optlab report</title><style>{CSS}</style>"
            f"</head><body><h1>The recitation, reproduced</h1><p>{html.escape(tally(findings))} ({minutes:.1f} min of "
            "experiments). Effects: difference of means over seeds, 95% interval.</p>"
            f"<table><tr><th>slide</th><th>claim</th><th>data</th><th>effect</th><th>verdict</th></tr>{rows}</table>"
            f"{''.join(sections)}</body></html>\n")


def report(out: Path, keep: str = "all") -> list[Finding]:
    """Run what is missing, judge every claim, write report.md and index.html into `out`, and
    say how much disk it takes (`keep`: see run_experiments)."""
    plan = spec()
    refuse_links(out / "runs")  # a report writes its runs' logs and copies, embeds what they hold: all inside
    failed = run_experiments(plan, out, keep)
    if failed:
        raise UsageError(f"report: experiment{'s' * (len(failed) > 1)} {', '.join(failed)} failed: "
                         f"see {out / 'runs'}/<name>.log; run the same command again to go on")
    ran = [n for n in plan.experiments if not missing(plan.experiments[n])]
    minutes = sum(finished(out / "runs" / n)["seconds"] for n in ran) / 60
    runs = {name: experiment_runs(out / "runs" / name, plan.experiments[name]) for name in ran}
    findings, figures, pictured = [], {}, set()
    (out / "figures").mkdir(parents=True, exist_ok=True)
    for i, claim in enumerate(plan.claims):
        slide, absent = plan.experiments[claim.experiment].slide, missing(plan.experiments[claim.experiment])
        if absent:
            findings.append(Finding(claim, slide, [], [], math.nan, math.nan, f"not run: needs {absent}", "not run"))
            figures[i] = []
            continue
        finding = judge(claim, slide, runs[claim.experiment])
        findings.append(finding)
        figures[i] = [figure(finding, runs[claim.experiment], out / "figures" / f"claim{i + 1:02d}.png")]
        for extra in ("critical_batch.png", "budget.png"):  # the preset's own fit, the bench's budget curve: once
            if (out / "runs" / claim.experiment / extra).exists() and claim.experiment not in pictured:
                figures[i].append(atomic_copy(out / "runs" / claim.experiment / extra, out / "figures" / extra))
        pictured.add(claim.experiment)
    atomic_write(out / "report.md", lambda f: f.write(markdown(findings, figures, minutes).encode()))
    atomic_write(out / "index.html", lambda f: f.write(page(findings, figures, minutes).encode()))
    log.info("disk: %s under %s%s", disk_use(out), out,
             "" if keep == "records" else " (--keep records deletes the checkpoints of finished runs)")
    return findings


def atomic_copy(source: Path, target: Path) -> Path:
    atomic_write(target, lambda f: f.write(source.read_bytes()))
    return target
