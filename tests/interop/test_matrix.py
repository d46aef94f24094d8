"""The interop matrix (issue 6; the rows live in aioipsec/interop/matrix.py): our daemon against
strongSwan in both roles, directly, through a NAT, with packet loss, over IPv6, with
certificates and with several algorithm sets. Each row is one Scenario run by the harness; both
peers' views of the SAs are checked against each other."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from aioipsec.interop.harness import run_scenario
from aioipsec.interop.matrix import MATRIX
from aioipsec.netns import Lab

pytestmark = [
    pytest.mark.interop,
    pytest.mark.netns,
    pytest.mark.skipif(
        os.geteuid() != 0 or not os.path.exists("/usr/lib/ipsec/charon"),
        reason="needs root and strongSwan's charon (Debian strongswan-charon)",
    ),
]


@pytest.fixture
def workdir():
    path = Path(tempfile.mkdtemp(prefix="aioipsec-mx-", dir="/tmp"))
    yield path
    if os.environ.get("AIOIPSEC_KEEP_WORKDIR") != "1":
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.timeout(150)
@pytest.mark.parametrize("scenario", MATRIX, ids=[s.name for s in MATRIX])
def test_matrix(scenario, workdir):
    with Lab("mx") as lab:
        run = run_scenario(lab, scenario, workdir)
        report = "\n".join(f"--- {side} ---\n{text}" for side, text in run.logs.items())
        assert run.problems == [], f"{run.problems}\n{report}"
        assert run.ping is not None and run.ping.received > 0
        if not scenario.loss_percent:
            assert run.ping.received == scenario.ping_count
        if scenario.nat_rebind:
            assert run.ping_after_rebind is not None and run.ping_after_rebind.received > 0
            assert run.rebind_ports is not None and len(run.rebind_ports) >= 2
        if scenario.keep_alive is not None and scenario.nat:
            assert run.keepalives_seen is not None and run.keepalives_seen >= 2
        for note in run.notes:
            print(f"{scenario.name}: note: {note}")
        if scenario.nat and not scenario.nat_rebind:
            responder_view = run.responder_sas[scenario.connection_name]
            assert responder_view["remote-host"] == "10.200.0.254"  # the NAT's public side
        print(
            f"{scenario.name}: established in {run.establish_seconds * 1000:.0f} ms, "
            f"ping {run.ping.received}/{run.ping.transmitted} avg {run.ping.rtt_avg_ms} ms"
        )
