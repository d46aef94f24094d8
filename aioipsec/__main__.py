"""``python -m aioipsec``: the same as the ``aioipsec`` command."""

import sys

from aioipsec.cli import main

sys.exit(main())
