"""RFC 5685 against strongSwan's charon, both roles: the redirect rows of the interop matrix
(aioipsec/interop/redirect.py), run through the matrix's own runner. charon follows our
REDIRECT at IKE_SA_INIT, at IKE_AUTH and in an INFORMATIONAL; our client follows charon's
``swanctl --redirect``."""

from __future__ import annotations

import pytest

from aioipsec.interop.redirect import MATRIX_ROWS
from aioipsec.interop.scripted import ScriptedRow
from tests.interop.scripted_rows import RowPool, pool_fixture

pytestmark = [pytest.mark.interop, pytest.mark.needs("root", "charon", "swanctl")]


rows = pool_fixture("test_redirect_row", MATRIX_ROWS, "rd")


@pytest.mark.parametrize("row", MATRIX_ROWS, ids=[row.name for row in MATRIX_ROWS])
def test_redirect_row(row: ScriptedRow, rows: RowPool) -> None:
    rows.check(row)
