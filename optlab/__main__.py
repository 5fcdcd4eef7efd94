"""`python -m optlab` is `optlab`."""

from optlab.cli.main import run

run()
