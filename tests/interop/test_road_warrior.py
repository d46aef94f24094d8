"""Remote access with a real strongSwan (issue 14): the road-warrior rows of the interop matrix
(aioipsec/interop/road_warrior.py), run through the matrix's own runner, so pytest, ``aioipsec
interop`` and docs/interop.md check the same things.

charon as road warrior against our gateway (PSK with two clients, a TCP transfer and a
reconnect, EAP-MSCHAPv2, a wrong password, EAP-TLS, EAP-only) and our client against charon
gateways (PSK; EAP-MSCHAPv2, EAP-TLS and EAP-only with a TCP transfer compared by SHA-256;
an EAP-only gateway with EAP-MSCHAPv2 refused).
"""

from __future__ import annotations

import pytest

from aioipsec.interop.road_warrior import ROWS
from aioipsec.interop.scripted import ScriptedRow
from tests.interop.scripted_rows import RowPool, pool_fixture

pytestmark = [pytest.mark.interop, pytest.mark.needs("root", "charon", "swanctl")]


rows = pool_fixture("test_road_warrior_row", ROWS, "rw")


@pytest.mark.timeout(240)
@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_road_warrior_row(row: ScriptedRow, rows: RowPool) -> None:
    rows.check(row)
