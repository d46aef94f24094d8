"""``python -m aioipsec.daemon -c FILE``: the daemon without the rest of the CLI."""

from aioipsec.daemon.run import main

raise SystemExit(main())
