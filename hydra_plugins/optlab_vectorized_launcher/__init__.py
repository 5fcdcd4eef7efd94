"""`hydra/launcher=vectorized`: a sweep's compatible runs train together as one stacked model."""
