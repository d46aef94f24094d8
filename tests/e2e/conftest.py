"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aioipsec.netns import Lab


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    """A Lab whose namespaces carry a short tag of the test; removed afterwards."""
    tag = "".join(ch for ch in request.node.name if ch.isalnum())[:6]
    with Lab(tag) as lab:
        yield lab


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    # AF_UNIX socket paths hold at most 107 octets: pytest's tmp_path can be long.
    import tempfile

    short = Path(tempfile.mkdtemp(prefix="e2e-", dir="/tmp"))
    yield short
    import shutil

    shutil.rmtree(short, ignore_errors=True)
