"""Figures: matplotlib on its file-only backend, written atomically. Imports no torch, so a
command that only plots (`optlab compare`, a sweep's summary) does not pay for it."""

from __future__ import annotations

from pathlib import Path

from optlab.store.files import atomic_write


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed), imported when a plot
    is first drawn: it costs ~0.5 s, and `--help` must not pay it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> None:
    """Write `fig` as a PNG atomically and free it."""
    plt = pyplot()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
