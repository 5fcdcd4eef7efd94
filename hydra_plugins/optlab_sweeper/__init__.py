"""optlab's sweeper: Hydra's basic sweeper, but every job is checked and its folder made ready
before the first is launched, and failed jobs are counted (the logic is in _core.py and optlab/jobs/prepare.py)."""
