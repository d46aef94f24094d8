"""``make demo-rw`` end to end: three namespaces, two aioipsec daemons, EAP-MSCHAPv2, a
virtual IP from the pool, a ping to the LAN host, ``aioipsec pools`` (docs/remote-access.md)."""

from __future__ import annotations

import pytest

from aioipsec import demo_rw

pytestmark = [pytest.mark.needs("root", "tun", "ip", "ping"), pytest.mark.timeout(180)]


def test_demo_rw(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo_rw.run_demo() == 0
    out = capsys.readouterr().out
    assert "ipsec0" in out and "10.3.0.1/32" in out
    assert "DNS servers ['10.1.0.53'], domains ['corp.demo.example']" in out
    assert " 0% packet loss" in out
    assert "online   'carol'" in out
