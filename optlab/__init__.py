"""optlab: a command-line lab for studying how deep networks are optimized."""

__version__ = "0.1.0"
