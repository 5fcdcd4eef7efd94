"""optlab's Hydra config groups, shipped inside the package as `optlab.conf` (pkg://optlab.conf)."""
