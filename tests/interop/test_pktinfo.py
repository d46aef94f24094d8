"""Our responder with two addresses, charon's request sent to the second one (issue 19).

Our IKE sockets are bound to the wildcard; before IP_PKTINFO the daemon hashed the
address the routing table prefers (the first one) into NAT_DETECTION_SOURCE_IP and
answered from it, so charon saw "remote host is behind NAT". Now the daemon learns from
each datagram the address it was sent to (aioipsec/runtime/sockets.py) and hashes and
answers from that one. charon runs without kernel-libipsec, which would fake a NAT (its
random source hash): IKE only, real hashes both ways, no NAT on either side.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from aioipsec.interop.charon import DEFAULT_CHARON_PLUGINS, Charon
from aioipsec.interop.ours import AioipsecPeer
from aioipsec.interop.peers import swanctl_conf
from aioipsec.interop.scenario import Scenario
from aioipsec.interop.topology import build_topology
from aioipsec.netns import Lab
from tests.interop.charon_pair import wait_ike, workdir_for

pytestmark = [pytest.mark.interop, pytest.mark.needs("root", "charon")]

SECOND = "10.200.0.3"  # our second address, on the same link (the first: 10.200.0.2)


def _set(conf: str, key: str, value: str) -> str:
    changed, count = re.subn(rf"(?m)^(\s*{key}\s*=).*$", rf"\1 {value}", conf)
    assert count == 1, conf
    return changed


def _wait_ike(peer: Any, name: str, timeout: float = 20.0) -> dict[str, Any]:
    return wait_ike(peer, name, timeout)


@pytest.mark.timeout(90)
def test_request_to_our_second_address_sees_no_nat() -> None:
    plugins = DEFAULT_CHARON_PLUGINS.replace(" kernel-libipsec", "")
    scenario = Scenario(name="pkti", initiator="charon", responder="aioipsec")
    name = scenario.connection_name
    with workdir_for("pktinfo") as workdir, Lab("pk") as lab:
        topology = build_topology(lab, scenario)
        topology.responder.add_address(topology.interfaces["responder"], f"{SECOND}/24")
        charon = Charon(lab, topology.initiator, workdir / "charon", plugins=plugins)
        charon.start()
        charon.load(_set(swanctl_conf(scenario, topology, "initiator"), "remote_addrs", SECOND))
        ours = AioipsecPeer(lab, topology.responder, workdir / "ours")
        ours.load(_set(swanctl_conf(scenario, topology, "responder"), "local_addrs", "%any"))
        try:
            try:
                charon.initiate(name, ike=name, timeout=20)
            except Exception:
                pass  # without kernel-libipsec charon cannot install the Child SA
            theirs = _wait_ike(charon, name)
            mine = _wait_ike(ours, name)
            log = charon.log_text()
        finally:
            ours.stop()
    flags = ("nat-local", "nat-remote", "nat-fake", "nat-any")
    assert "behind NAT" not in log, log[-3000:]
    assert not any(theirs.get(flag) == "yes" for flag in flags), theirs
    assert not any(mine.get(flag) == "yes" for flag in flags), mine
    # Both sides know us by the address charon sent to; IKE stayed on port 500.
    assert theirs.get("remote-host") == SECOND and mine.get("local-host") == SECOND, (theirs, mine)
    assert mine.get("local-port") == "500", mine
