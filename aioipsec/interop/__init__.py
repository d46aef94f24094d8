"""Interop with strongSwan: scenarios, peers in namespaces, the matrix (docs/interop-harness.md).

``aioipsec interop`` (aioipsec/cli.py) runs :func:`main`, the matrix runner."""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """``aioipsec interop [SCENARIO...|--all|--list|-k PATTERN] [-j N] [--markdown FILE]``."""
    from aioipsec.interop.matrix import main as matrix_main

    return matrix_main(None if argv is None else list(argv))
