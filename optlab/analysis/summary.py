"""The summary a sweep ends with (and `optlab compare` makes of any runs): a ranked table on
the console, summary.md and summary.csv, and its figures.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from optlab.analysis.figures import overlay_trajectories, plot_curves, plot_metric
from optlab.analysis.runs import Group, find_runs, group_runs
from optlab.metrics import COLUMNS, METRICS, QUALITY, lower_is_better
from optlab.store.files import atomic_write, write_csv


def rank(groups: list[Group], metric: str) -> list[Group]:
    """Best first by the mean of `metric`, configurations whose every run completed before the
    others (a diverged run's numbers never rank it above a finished one); those without
    `metric` last."""
    sign = 1 if lower_is_better(metric) else -1
    return sorted(groups, key=lambda g: (g.mean(metric) is None, not g.finished, sign * (g.mean(metric) or 0)))


def ranking(groups: list[Group], asked: str) -> tuple[str | None, str]:
    """The metric to rank by, and the words that say so: `asked` where a run has it, else the
    first measure of quality (QUALITY) the runs have, else none (the order is the folders')."""
    metric = next((m for m in (asked, *QUALITY) if any(g.values(m) for g in groups)), None)
    if metric is None:
        return None, f"not ranked: no run has {asked} or any of {', '.join(QUALITY)}"
    order = f"ranked by {metric}, {'lower' if lower_is_better(metric) else 'higher'} is better"
    return metric, order + ("" if metric == asked else f" (no run has {asked})") + ", unfinished configurations last"


def _cell(group: Group, metric: str) -> str:
    mean, std = group.mean(metric), group.std(metric)
    if mean is None:
        return "—"
    if len(group.values(metric)) == 1 or std == 0:
        return f"{mean:.4g}"
    return f"{mean:.4g} ± {std:.2g}"


def table(groups: list[Group], metric: str | None) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the summary, ranked by `metric` (None: in the order given)."""
    columns = [metric] * bool(metric) + [c for c in COLUMNS if c != metric and any(g.values(c) for g in groups)]
    header = ["#", "configuration", "n", "status", *columns]
    rows = [
        [str(i), g.label, str(len(g.runs)), g.status, *(_cell(g, c) for c in columns)]
        for i, g in enumerate(rank(groups, metric) if metric else groups, start=1)
    ]
    return header, rows


def md_text(text) -> str:
    """`text` as literal Markdown inline text (a table cell, a heading): `&`, `<` and `>` as
    HTML entities, Markdown's inline marks and the table's `|` escaped by a backslash, and
    line breaks as spaces."""
    escaped = re.sub(r"([\\`*_\[\]|~])", r"\\\1", html.escape(str(text), quote=False))
    return " ".join(escaped.splitlines())


def md_code(text) -> str:
    """`text` as a Markdown code span, shown as it is: fenced by more backticks than it holds
    in a row, on one line."""
    line = " ".join(str(text).splitlines())
    fence = "`" * (max(map(len, re.findall("`+", line)), default=0) + 1)
    return f"{fence} {line} {fence}"


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summarize(paths: list[Path], out: Path, metric: str = "best_val_acc", x: str = "epoch") -> list[Path]:
    """Compare every run under `paths`; write the summary files into `out`; print the table."""
    runs = find_runs(paths)
    if not runs:
        return []
    groups = group_runs(runs)
    metric, order = ranking(groups, metric)  # e.g. final_loss where best_val_acc was asked of surface runs
    header, rows = table(groups, metric)
    text = format_table(header, rows)
    print(f"\n{len(runs)} run{'s' * (len(runs) != 1)} in {len(groups)} configuration{'s' * (len(groups) != 1)} "
          f"(mean ± std over seeds), {order}:")
    print(text)

    ranked = rank(groups, metric) if metric else groups
    swept = sorted({k for g in groups for k in g.params})
    records = []
    for g in ranked:
        record = {"configuration": g.label, "n": len(g.runs), "status": g.status}
        record.update({k: g.params.get(k, "") for k in swept})
        for m in METRICS:
            if any(grp.values(m) for grp in groups):
                record[f"{m}_mean"], record[f"{m}_std"] = g.mean(m), g.std(m)
        records.append(record)
    write_csv(out / "summary.csv", records)
    markdown = "\n".join(
        ["| " + " | ".join(map(md_text, header)) + " |", "|" + "---|" * len(header)]
        + ["| " + " | ".join(map(md_text, r)) + " |" for r in rows]
    )
    atomic_write(out / "summary.md",
                 lambda f: f.write(f"# {len(runs)} runs, {md_text(order)}\n\n{markdown}\n".encode()))

    written = [out / "summary.csv", out / "summary.md"]
    written += plot_curves(groups, out / "curves.png", x)
    written += [plot_metric(groups, metric, key, out / f"{metric}_vs_{key}.png") for key in swept if metric]
    written += overlay_trajectories(groups, out)
    from optlab.analysis import critical

    written += critical.summarize(runs, out)
    print(f"summary written to {out}: " + ", ".join(p.name for p in written))
    return written
