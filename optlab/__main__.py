"""`python -m optlab` is `optlab`."""

from optlab.cli import main

raise SystemExit(main())
