"""The interop matrix (issue 6), first rows: our daemon against strongSwan in both roles,
directly, through a NAT, and with packet loss on the path. Each row is one Scenario run by
the harness; both peers' views of the SAs are checked against each other."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from aioipsec.interop.harness import Scenario, run_scenario
from aioipsec.netns import Lab

pytestmark = [
    pytest.mark.interop,
    pytest.mark.netns,
    pytest.mark.skipif(
        os.geteuid() != 0 or not os.path.exists("/usr/lib/ipsec/charon"),
        reason="needs root and strongSwan's charon (Debian strongswan-charon)",
    ),
]

ALGORITHMS = [
    # (IKE proposal, ESP proposal): each in both roles
    ("aes128gcm16-prfsha384-ecp384", "aes128gcm16"),
    ("chacha20poly1305-prfsha512-x448", "chacha20poly1305"),
    ("aes256-sha256-modp3072", "aes256-sha256"),
    ("aes128-sha256-modp2048", "aes128-sha1"),
    # The first Child SA is keyed from IKE_AUTH: its PFS group only shows in a rekey.
    ("aes256gcm16-prfsha256-ecp256", "aes256gcm16-x25519"),
    ("aes128ccm16-prfsha256-x25519", "aes128ccm16"),
]

MATRIX = [
    Scenario(name="ours-to-charon", initiator="aioipsec", responder="charon"),
    Scenario(name="charon-to-ours", initiator="charon", responder="aioipsec"),
    Scenario(name="ours-behind-nat", initiator="aioipsec", responder="charon", nat=True),
    Scenario(name="charon-behind-nat", initiator="charon", responder="aioipsec", nat=True),
    Scenario(
        name="ours-lossy",
        initiator="aioipsec",
        responder="charon",
        loss_percent=10,
        ping_count=10,
        establish_timeout=60.0,
    ),
    Scenario(
        name="charon-lossy",
        initiator="charon",
        responder="aioipsec",
        loss_percent=10,
        ping_count=10,
        establish_timeout=60.0,
    ),
    Scenario.ipv6(name="ours-to-charon-v6", initiator="aioipsec", responder="charon"),
    Scenario.ipv6(name="charon-to-ours-v6", initiator="charon", responder="aioipsec"),
    *(
        Scenario(
            name=f"{initiator}-cert-{key_type}",
            initiator=initiator,
            responder="charon" if initiator == "aioipsec" else "aioipsec",
            auth="pubkey",
            key_type=key_type,
        )
        for key_type in ("ecdsa", "rsa")
        for initiator in ("aioipsec", "charon")
    ),
    *(
        Scenario(
            name=f"{initiator}-{ike.split('-')[0]}-{esp.replace('-', '_')}",
            initiator=initiator,
            responder="charon" if initiator == "aioipsec" else "aioipsec",
            ike_proposals=(ike,),
            esp_proposals=(esp,),
        )
        for ike, esp in ALGORITHMS
        for initiator in ("aioipsec", "charon")
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
        if scenario.nat:
            responder_view = run.responder_sas[scenario.connection_name]
            assert responder_view["remote-host"] == "10.200.0.254"  # the NAT's public side
        print(
            f"{scenario.name}: established in {run.establish_seconds * 1000:.0f} ms, "
            f"ping {run.ping.received}/{run.ping.transmitted} avg {run.ping.rtt_avg_ms} ms"
        )
