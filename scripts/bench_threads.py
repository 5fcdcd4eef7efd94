"""Threads on a quiet and on a busy machine: `optlab train` with `threads=auto` beside one
thread and a thread per core, for models of four sizes, in one run.

Busy: `--competitors` processes (default: one) spin on the CPU for as long as the run takes,
as a laptop's or a shared node's other work does. The figure is the run's own training
throughput (metrics.json `train_samples_per_s`), the best of `--repeat`.

    python scripts/bench_threads.py
    python scripts/bench_threads.py --competitors 2 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from provenance import stamp

MODELS = {
    "mlp [128,128]": ["epochs=10", "model.hidden=[128,128]"],
    "mlp [256,256] (default)": ["epochs=10"],
    "mlp [1024,1024]": ["epochs=3", "model.hidden=[1024,1024]"],
    "cnn on mnist5k": ["epochs=1", "model=cnn", "data=mnist5k"],
}


def spin() -> None:
    while True:
        pass


def throughput(args: list[str], folder: Path) -> float:
    result = subprocess.run([sys.executable, "-m", "optlab", "train", *args, f"hydra.run.dir={folder}"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"failed: optlab train {' '.join(args)}\n{result.stderr[-2000:]}")
    return json.loads((folder / "metrics.json").read_text())["train_samples_per_s"]


def main() -> None:
    print(stamp())  # the machine, torch version, commit and date these figures come from
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--competitors", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    settings = {"auto": "threads=auto", "1": "threads=1", f"{cores}": f"threads={cores}"}
    work = Path(tempfile.mkdtemp(prefix="bench_threads_"))
    print(f"{cores} cores; busy = {args.competitors} competing process(es); samples/s, best of {args.repeat}")
    print(f"{'model':<26}{'machine':<8}" + "".join(f"{'threads=' + s:>16}" for s in settings))
    for name, model_args in MODELS.items():
        for machine in ("quiet", "busy"):
            competitors = [multiprocessing.Process(target=spin, daemon=True)
                           for _ in range(args.competitors if machine == "busy" else 0)]
            for process in competitors:
                process.start()
            try:
                rates = {s: max(throughput([*model_args, arg], work / f"{len(os.listdir(work))}")
                                for _ in range(args.repeat)) for s, arg in settings.items()}
            finally:
                for process in competitors:
                    process.terminate()
            print(f"{name:<26}{machine:<8}" + "".join(f"{rates[s]:>16,.0f}" for s in settings), flush=True)


if __name__ == "__main__":
    main()
