"""The `optlab` command line."""
