"""``python -m aioipsec``: the same as the ``aioipsec`` command."""

from aioipsec.cli import run

run()
