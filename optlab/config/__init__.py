"""Config: the schema and its checks, a run's identity, the allow-list, Hydra's glue. No torch."""
