"""``python -m pvcharge`` is the same as the ``pvcharge`` console script."""

from pvcharge.cli import main

raise SystemExit(main())
