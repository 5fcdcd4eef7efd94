"""Put the claims table of a report into README.md, between its report markers, so that the
README's experiment table comes from `optlab report`, not from typing.

    optlab report && python scripts/readme_report.py outputs/report/report.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

START, END = "<!-- report table: scripts/readme_report.py writes it -->", "<!-- end of report table -->"


def table(report_md: str) -> str:
    """The summary paragraph and table at the top of report.md."""
    lines = report_md.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("| slide |"))
    last = next((i for i in range(first, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join([lines[2], "", *lines[first:last]])


def replace(readme: str, block: str) -> str:
    """`readme` with the text between the markers (kept) replaced by `block`."""
    if START not in readme or END not in readme:
        raise SystemExit(f"README has no report markers: {START} ... {END}")
    head, rest = readme.split(START, 1)
    return f"{head}{START}\n{block}\n{END}{rest.split(END, 1)[1]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="report.md written by optlab report")
    parser.add_argument("--readme", type=Path, default=Path(__file__).parents[1] / "README.md")
    args = parser.parse_args()
    args.readme.write_text(replace(args.readme.read_text(), table(args.report.read_text())))
    print(f"{args.readme}: report table from {args.report}")


if __name__ == "__main__":
    main()
