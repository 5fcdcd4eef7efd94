"""Storage: run folders, atomic files and safe loads, logs, plots."""
