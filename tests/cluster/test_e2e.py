"""The cluster end to end in namespaces (aioipsec/cluster/lab.py): three aioipsec gateways
sharing one real redis-server (membership and the VIP leases of one pool) and one LAN with
a server, four road warriors (three aioipsec daemons and strongSwan's charon) placed by
least-loaded, each with a virtual IP on the LAN's subnet that the server reaches through
the gateways' proxy ARP. A paced 6 MiB TCP transfer runs from a client through its gateway,
and the server pings the client's VIP, while that gateway is drained: every client ends on
the other two, every byte arrives (SHA-256 of what was sent equals what the server
received), the client keeps its VIP, and the server's neighbour entry for it holds the
new gateway's MAC (its gratuitous ARP); the pings lost are printed. Then a gateway is
SIGKILLed: its clients come back through DPD (dpd_action = restart) via gateway 1, which
places them again, and every client still has the VIP it first got. Last, the client
leaves: its lease goes offline and the server's pings to its VIP go unanswered (the proxy
entry is gone).

Long mode: ``AIOIPSEC_CLUSTER_CLIENTS=20`` runs the same with more clients (docs/cluster.md
has the figures)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from aioipsec.cluster.lab import run

pytestmark = [
    pytest.mark.needs("root", "tun", "charon", "redis-server", "redis-py"),
    pytest.mark.timeout(240),
]


def test_drain_loses_no_byte_and_a_killed_gateways_clients_come_back() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="aioipsec-cluster-e2e-", dir="/tmp"))
    lines: list[str] = []
    clients = int(os.environ.get("AIOIPSEC_CLUSTER_CLIENTS", "4"))
    try:
        figures = run(workdir, clients=clients, log=lines.append)
    except BaseException:
        print("\n".join(lines), f"\n(kept {workdir})")
        raise
    print("\n".join(lines))
    assert figures["bytes_lost"] == 0 and figures["sha256_equal"], figures
    assert figures["orphans"], figures
    assert figures["vip_kept"] and not figures["vips_changed"], figures
    shutil.rmtree(workdir, ignore_errors=True)
