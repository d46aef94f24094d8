"""Redis stopped and restarted under a cluster (issue 20, target 4), in the namespaces of
aioipsec/cluster/lab.py: two aioipsec gateways sharing one redis-server, road-warrior
clients placed by least-loaded, a paced TCP transfer from a client to the LAN server.

Redis goes away for a few seconds in the middle of the transfer, then comes back: every
byte of the transfer arrives (SHA-256 equal), every client keeps its IKE SA at the same
gateway, no gateway logs a traceback, and once Redis is back a new client is placed and
comes up. Then the gateway serving some of the clients (not the entry gateway) is
SIGKILLed: its clients come back through DPD via the other. Captures on every client's
outer link show only IKE and ESP throughout.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest

from aioipsec.cluster.lab import GATEWAYS, SERVER, ClusterLab, kill_and_recover
from aioipsec.netns import Lab

from .test_faults import assert_only_ike_and_esp
from .test_floods import record

pytestmark = [
    pytest.mark.needs("root", "tun", "redis-server", "redis-py"),
    pytest.mark.timeout(180),
]
# The outage (from SECONDS / 4 on) ends before the transfer does.
TOTAL, SECONDS, OUTAGE = 2 << 20, 6.0, 3.0


def test_redis_stopped_and_restarted_under_a_cluster() -> None:
    with tempfile.TemporaryDirectory(prefix="cl-redis-") as tmp, Lab("clr") as lab:
        workdir = Path(tmp)
        cluster = ClusterLab.build(lab, workdir, log=print)
        cluster.start_redis()
        for index in range(2):
            cluster.add_gateway(index)
        time.sleep(1.0)  # every member has published once
        for index in range(2):
            cluster.add_client(index)
            time.sleep(0.6)
        cluster.wait_all_up(30)
        placed = {c.name: c.gateway() for c in cluster.clients}
        captures = [
            (lab.capture(cluster.router, f"o-c{i}", workdir / f"c{i}.pcap"), workdir / f"c{i}.pcap")
            for i in (1, 2)
        ]
        sink, source = cluster.transfer(cluster.clients[0], TOTAL, SECONDS)
        time.sleep(SECONDS / 4)
        assert cluster.redis is not None
        cluster.redis.stop()
        stopped_at = time.monotonic()
        during = []
        while time.monotonic() - stopped_at < OUTAGE:
            during.append({c.name: c.gateway() for c in cluster.clients})
            time.sleep(0.5)
        cluster.start_redis()
        restarted_at = time.monotonic()
        for process in (source, sink):
            deadline = time.monotonic() + SECONDS + 60
            while process.running() and time.monotonic() < deadline:
                time.sleep(0.2)
        sent = source.log_text().split()
        received = sink.log_text().split()
        # Members publish again (heartbeat 0.5 s): 2 s after Redis came back.
        time.sleep(max(0.0, restarted_at + 2.0 - time.monotonic()))
        cluster.add_client(2)
        cluster.wait_all_up(30)
        after = {c.name: c.gateway() for c in cluster.clients}
        logs = {g: d.log_path.read_text(errors="replace") for g, d in cluster.gateways.items()}
        # A gateway SIGKILLed: the second one, when it serves anyone (least-loaded gives it
        # one of the three clients unless placement failed, which the spread shows).
        killed: tuple[str, float, list[str]] | None = None
        if any(g == GATEWAYS[1] for g in after.values()):
            killed = kill_and_recover(cluster, timeout=60)
        # Every client reaches the LAN server through its (new) gateway.
        for client in cluster.clients:
            result = client.peer.namespace.run(
                "ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", "-I", client.inner, SERVER,
                check=False,
            )  # fmt: skip
            assert result.returncode == 0, f"{client.name}: {result.stdout}"
        for capture, _ in captures:
            capture.stop()
        figures = [assert_only_ike_and_esp(path) for _, path in captures]
        record(
            "redis_outage", outage_s=OUTAGE, bytes=TOTAL, sent=sent[-2:], received=received[-2:],
            placed=placed, after=after, capture=figures,
            killed=killed and {"gateway": killed[0], "recovery_s": round(killed[1], 1),
                               "clients": killed[2]},
        )  # fmt: skip
        assert killed is not None, f"no client on {GATEWAYS[1]} to orphan: {after}"
        assert sent[-2:] == received[-2:] and sent[-2] == str(TOTAL), (sent, received)
        assert all(snapshot == placed for snapshot in during), (placed, during)
        assert {k: after[k] for k in placed} == placed, (placed, after)
        for gateway, text in logs.items():
            assert "Traceback" not in text, f"{gateway}:\n{text[-3000:]}"
