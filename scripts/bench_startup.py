"""What a command costs before it does anything: optlab's answers beside bare Python and torch.

Each command runs as a user runs it (a fresh process), `--repeats` times in a rotating order;
the script prints the median wall time of each and its ratio to `import torch`, the floor of
any command that trains. `plain epoch` is a hand-written script that trains the default MLP
for one epoch on the same digits with torch.optim.SGD: what `optlab train epochs=1` would
cost with nothing of optlab's (building a torch optimizer imports torch._dynamo, ~1 s). The
two `torch._dynamo` rows differ only in how the process ends: Python's own exit, which tears
down every module, or `os._exit` once the exit handlers ran, as the `optlab` command ends
(optlab.cli.main.run): their difference is what that saves each command. The last row runs
`optlab train epochs=1` with Python's own collector thresholds instead of the command's.

    python scripts/bench_startup.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provenance import stamp

PLAIN_EPOCH = """
import numpy as np, torch
from torch import nn
from optlab.datasets import DIGITS
arrays = np.load(DIGITS)
x = torch.tensor(arrays["X"], dtype=torch.float32)
x = (x - x.mean(0)) / x.std(0).clamp(min=1e-8)
y = torch.tensor(arrays["y"], dtype=torch.int64)
model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for index in torch.randperm(1078).split(64):
    loss = nn.functional.cross_entropy(model(x[index]), y[index])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
with torch.no_grad():
    print(nn.functional.cross_entropy(model(x[1078:1438]), y[1078:1438]).item())
"""


# `optlab train epochs=1` as the command runs it, but with Python's own collector thresholds
# (the command sets its young passes to every 50,000 allocations: optlab.cli.main.run)
DEFAULT_COLLECTOR = ("import gc, sys; gc.set_threshold = lambda *thresholds: None; "
                     "sys.argv = ['optlab', 'train', 'epochs=1', 'hydra.run.dir=again', 'rerun=true']; "
                     "from optlab.cli.main import run; run()")


def timed(argv: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    print(stamp())  # the machine, torch version, commit and date these figures come from
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    python, optlab = [sys.executable, "-c", "pass"], [sys.executable, "-m", "optlab"]
    with tempfile.TemporaryDirectory() as folder:
        cwd = Path(folder)
        subprocess.run([*optlab, "train", "epochs=1", "hydra.run.dir=run"], cwd=cwd, check=True, capture_output=True)
        commands = {
            "python": python,
            "import torch": [sys.executable, "-c", "import torch"],
            "plain epoch": [sys.executable, "-c", PLAIN_EPOCH],
            "torch._dynamo, exit": [sys.executable, "-c", "import torch._dynamo"],
            "torch._dynamo, os._exit": [sys.executable, "-c", "import atexit, os, torch._dynamo; "
                                        "atexit._run_exitfuncs(); os._exit(0)"],
            "optlab --help": [*optlab, "--help"],
            "optlab train --help": [*optlab, "train", "--help"],
            "optlab train --cfg job": [*optlab, "train", "--cfg", "job"],
            "optlab compare RUN": [*optlab, "compare", "run"],
            "optlab train epochs=1": [*optlab, "train", "epochs=1", "hydra.run.dir=again", "rerun=true"],
            "  Python's collector": [sys.executable, "-c", DEFAULT_COLLECTOR],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        names = list(commands)
        for round_ in range(args.repeats):
            for name in names[round_ % len(names):] + names[: round_ % len(names)]:
                times[name].append(timed(commands[name], cwd))
    torch_s = statistics.median(times["import torch"])
    print(f"start-up, median of {args.repeats} fresh processes each")
    for name, values in times.items():
        print(f"  {name:<24} {statistics.median(values):6.2f} s   {statistics.median(values) / torch_s:5.2f} × import torch")


if __name__ == "__main__":
    main()
