"""Training: the engines, the loop, a run's record and its callbacks."""
