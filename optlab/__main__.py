"""`python -m optlab` is `optlab`."""

from optlab.cli.main import main

raise SystemExit(main())
