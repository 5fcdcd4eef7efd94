"""The commands that read what runs wrote: `optlab compare`, `optlab landscape`, `optlab report`,
each an argparse parser and one call into the layer that does the work.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path


class Parser(argparse.ArgumentParser):
    """argparse, with a mistake said in one line (`optlab compare: argument --metric: invalid
    choice: ...`) and exit code 2, as every other optlab mistake is: no usage block."""

    def error(self, message: str):
        print(f"{self.prog}: {message} (see: {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def report(args: list[str]) -> int:
    """`optlab report [--out DIR]`: index.html and report.md, running what is missing."""
    import logging

    parser = Parser(
        prog="optlab report",
        description="Run every experiment preset of conf/report.yaml that has not been run (about 6 "
        "minutes on 2 CPU cores; a second call reuses the runs), test each claim of the recitation "
        "against its runs (difference of means over seeds, 95% interval, verdict), and write "
        "report.md and a self-contained index.html.",
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/report"), help="the report's folder")
    parser.add_argument("--keep", choices=("all", "records"), default="all",
                        help="records: delete the checkpoints of every finished run (most of the disk the "
                        "runs take); the verdicts read their metrics.json, so a later call reuses them")
    options = parser.parse_args(args)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from optlab.analysis.report import report as write_report
    from optlab.errors import UsageError

    try:
        findings = write_report(options.out, options.keep)
    except UsageError as mistake:
        print(f"optlab report: {mistake}", file=sys.stderr)
        return 2
    shown = sum(f.verdict == "shown" for f in findings)
    print(f"{len(findings)} claims, {shown} shown: {options.out / 'index.html'}, {options.out / 'report.md'}")
    return 0


def bench(args: list[str]) -> int:
    """`optlab bench [--protocol P] [--out DIR]`: optimizers compared at equal tuning budgets."""
    import logging
    import time

    parser = Parser(
        prog="optlab bench",
        description="Compare optimizers fairly: tune each on each problem of a protocol with the same number of "
        "trials (optlab tune), rerun its best setting with several seeds, and write bench.md, bench.json, "
        "profiles.png and budget.png: time to target and final metric with 95% intervals, performance profiles, "
        "the expected best score against the number of trials, a verdict per pair. The same command goes on "
        "where it stopped. The default protocol takes about a minute and a half on 2 CPU cores.",
    )
    parser.add_argument("--protocol", default="default",
                        help="a protocol file (YAML), or the name of one in conf/bench/ (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="the bench's folder (default: outputs/bench/<protocol's name>)")
    options = parser.parse_args(args)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # Ctrl-C stops the bench even where it started with SIGINT ignored (a background job, a test
    # worker): its running child then gets it as its own Ctrl-C (jobs/bench.py `_call`)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from optlab.analysis.bench import write
    from optlab.errors import UsageError
    from optlab.jobs import bench as protocol

    started = time.monotonic()
    try:
        if options.out is not None and not str(options.out).strip():
            raise UsageError("--out '': give a folder for the bench")
        path = protocol.protocol_path(options.protocol)
        options.out = options.out or Path("outputs/bench") / path.stem
        spec = protocol.load(path)
        protocol.run(spec, options.out)
        found = write(spec, options.out)
    except UsageError as mistake:
        print(f"optlab bench: {mistake}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("optlab bench: interrupted; go on with the same command (its studies and runs resume)", file=sys.stderr)
        return 130
    shown = sum(v[count]["verdict"] == "shown" for v in found["verdicts"] for count in ("to_target", "final"))
    print(f"{len(found['results'])} studies, {len(found['verdicts'])} pairs compared ({shown} differences shown) in "
          f"{time.monotonic() - started:.0f} s: {options.out / 'bench.md'}, {options.out / 'bench.json'}")
    return 0


def landscape(args: list[str]) -> int:
    """`optlab landscape RUN`: curvature.json and landscape.png for a finished run."""
    parser = Parser(
        prog="optlab landscape",
        description="Measure the curvature of a finished run's best weights: top Hessian "
        "eigenvalue, trace, ε-sharpness, the exact spectrum of a small model, and loss slices. "
        "Writes curvature.json and landscape.png into the run folder. The `curvature` keys of "
        "the run's config set the sample size and precision (see optlab train --help).",
    )
    parser.add_argument("run", type=Path, metavar="RUN", help="a run folder (with .hydra/ and checkpoints/)")
    options = parser.parse_args(args)
    try:
        from optlab.errors import usage_error
        from optlab.jobs.landscape import landscape_of

        result = landscape_of(options.run)
    except Exception as error:
        mistake = usage_error(error)  # a dataset's complaint, wherever it was raised
        if mistake is None:
            raise
        print(f"optlab landscape: {mistake}", file=sys.stderr)
        return 2
    extra = (f", condition number {result['condition_number']:.3g}, "
             f"{100 * result['negative_fraction']:.1f}% negative eigenvalues" if "eigenvalues" in result else "")
    print(f"λ_max {result['lambda_max']:.4g} (2/lr = {result['stability_threshold']:.4g}), trace "
          f"{result['trace']:.4g}, sharpness {result['sharpness']:.3g}%{extra}\n"
          f"written: {options.run / 'curvature.json'}, {options.run / 'landscape.png'}")
    return 0


def compare(args: list[str]) -> int:
    """`optlab compare PATH [PATH ...]`: the summary a sweep ends with, over any runs."""
    import time

    from optlab.metrics import CURVE_X, METRICS

    parser = Parser(
        prog="optlab compare",
        description="Compare runs: every run folder at or below each PATH (sweeps, single "
        "runs, several sweeps at once). Runs that differ only in seed are grouped (mean ± std).",
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="run or sweep folders")
    parser.add_argument("--metric", default="best_val_acc", choices=METRICS, metavar="METRIC",
                        help=f"rank by this (default: %(default)s; allowed: {', '.join(METRICS)})")
    parser.add_argument("--x", default="epoch", choices=list(CURVE_X), help="x-axis of the curves")
    parser.add_argument(
        "--out", type=Path,
        help="where to write the summary (default: the PATH if one, else outputs/comparisons/<time>)",
    )
    options = parser.parse_args(args)
    missing = [str(p) for p in options.paths if not p.is_dir()]
    if missing:
        print(f"optlab compare: no such folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    out = options.out or (
        options.paths[0] if len(options.paths) == 1
        else Path("outputs/comparisons") / time.strftime("%Y-%m-%d_%H-%M-%S")
    )
    from optlab.analysis.summary import summarize
    from optlab.errors import UsageError

    try:
        found = summarize(options.paths, out, options.metric, options.x)
    except UsageError as mistake:  # the summary cannot be written there
        print(f"optlab compare: {mistake}", file=sys.stderr)
        return 2
    if not found:
        where = ", ".join(map(str, options.paths))
        print(f"optlab compare: no runs (folders with metrics.json) under {where}", file=sys.stderr)
        return 2
    return 0
