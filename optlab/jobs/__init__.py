"""The Hydra jobs: train, tune, lr-find, surfaces, landscapes, vectorized groups; their callbacks."""
