"""RFC 5685 against strongSwan's charon, both roles (aioipsec/interop/redirect.py): charon
follows our REDIRECT at IKE_SA_INIT, at IKE_AUTH and in an INFORMATIONAL; our client
follows charon's ``swanctl --redirect``."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from aioipsec.interop.redirect import ROWS, run_row

pytestmark = [pytest.mark.interop, pytest.mark.needs("root", "charon", "swanctl")]


@pytest.mark.parametrize("row", ROWS)
def test_redirect_row(row: str) -> None:
    workdir = Path(tempfile.mkdtemp(prefix=f"aioipsec-{row}-", dir="/tmp"))
    try:
        seen = run_row(row, workdir)
    except BaseException:
        print(f"kept {workdir}")
        raise
    assert seen
    if os.environ.get("AIOIPSEC_KEEP_WORKDIR") != "1":
        shutil.rmtree(workdir, ignore_errors=True)
