"""``python -m aioipsec.explain``."""

from aioipsec.explain.cli import main

raise SystemExit(main())
