"""The MTU fault-line (issue 19): the outer path MTU drops to 1200 in the middle of a TCP
transfer through the tunnel.

Two of our daemons, ESP in UDP, a router namespace between them. iperf3 runs TCP from the
initiator's inner address to the responder's; two seconds in, the router's link towards the
responder goes to MTU 1200. The router answers our DF outer packets with ICMP
"fragmentation needed"; the daemon learns the smaller path MTU (EMSGSIZE, IP_MTU), lowers
the tunnel MTU and the TUN device's, and the inner TCP learns it from the TUN. Checked: the
transfer goes on after the drop, the router did send "fragmentation needed", and the
capture of the initiator's outer packets holds no fragment.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from aioipsec.interop.ours import AioipsecPeer
from aioipsec.interop.peers import swanctl_conf
from aioipsec.interop.scenario import Scenario, Topology
from aioipsec.netns import Lab

pytestmark = [pytest.mark.needs("root", "tun", "iperf3", "tcpdump", "tshark")]

SECONDS = 6
DROP_AFTER = 2.0


def _topology(lab: Lab, scenario: Scenario) -> tuple[Topology, str, str]:
    initiator, router, responder = (lab.namespace(n) for n in ("i", "n", "r"))
    router.enable_forwarding()
    inside_i, inside_n = lab.veth(initiator, "10.201.0.1/24", router, "10.201.0.254/24")
    outside_n, outside_r = lab.veth(router, "10.202.0.254/24", responder, "10.202.0.2/24")
    initiator.ip("route", "add", "default", "via", "10.201.0.254")
    responder.ip("route", "add", "10.201.0.0/24", "via", "10.202.0.254")
    assert initiator.wait_reachable("10.202.0.2")
    for namespace, inner in ((initiator, "10.1.0.1"), (responder, "10.2.0.1")):
        namespace.add_address("lo", f"{inner}/32")
    topology = Topology(
        scenario, initiator, responder, router, "10.201.0.1", "10.202.0.2", "10.201.0.1",
        {"initiator": inside_i, "responder": outside_r},
    )  # fmt: skip
    return topology, inside_n, outside_n


def _count(capture: Path, display_filter: str) -> int:
    result = subprocess.run(
        ["tshark", "-n", "-r", str(capture), "-Y", display_filter, "-T", "fields",
         "-e", "frame.number"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return len(result.stdout.split())


@pytest.mark.timeout(150)
def test_path_mtu_drops_to_1200_during_a_tcp_transfer(lab, workdir):
    scenario = Scenario(name="pmtu", initiator="aioipsec", responder="aioipsec", encap=True)
    topology, router_inside, router_outside = _topology(lab, scenario)
    peers = {}
    for side in ("responder", "initiator"):
        peer = AioipsecPeer(lab, topology.namespace(side), workdir / side)
        peer.load(swanctl_conf(scenario, topology, side))
        peers[side] = peer
    peers["initiator"].initiate("pmtu", "pmtu")
    tun_mtu_before = peers["initiator"].call("stats")["esp"]["tun_mtu"]
    capture = lab.capture(topology.router, router_inside, workdir / "outer.pcap")

    server = lab.start(
        topology.responder,
        ["iperf3", "-s", "-1", "--forceflush", "-B", "10.2.0.1", "-p", "5201"],
        log=workdir / "iperf3-server.log",
    )
    assert server.wait_for_log("Server listening", timeout=10)

    def drop_mtu() -> None:
        time.sleep(DROP_AFTER)
        assert topology.router is not None
        topology.router.ip("link", "set", "dev", router_outside, "mtu", "1200")
        # The other end of that link too: a veth drops what exceeds its own MTU silently.
        topology.responder.ip("link", "set", "dev", topology.interfaces["responder"], "mtu", "1200")

    dropper = threading.Thread(target=drop_mtu)
    dropper.start()
    result = topology.initiator.run(
        "iperf3", "-c", "10.2.0.1", "-B", "10.1.0.1", "-p", "5201", "-t", str(SECONDS),
        "-i", "1", "-J", check=False, timeout=SECONDS + 40,
    )  # fmt: skip
    dropper.join()
    server.stop()
    # An inner IPv4 ping without DF over the new tunnel MTU: the kernel fragments it before
    # the TUN device (whose MTU went down); it crosses, and no outer packet is a fragment.
    # (The responder learns its own smaller MTU from the first large reply: EMSGSIZE.)
    ping = topology.initiator.run(
        "ping", "-M", "dont", "-s", "1300", "-c", "4", "-i", "0.3", "-W", "2",
        "-I", "10.1.0.1", "10.2.0.1", check=False, timeout=30,
    )  # fmt: skip
    received = re.search(r"(\d+) received", ping.stdout)
    assert received and int(received.group(1)) >= 3, ping.stdout + ping.stderr
    time.sleep(0.3)
    capture.stop()
    report = json.loads(result.stdout)
    assert "error" not in report, report.get("error")
    intervals = [i["sum"]["bytes"] for i in report["intervals"]]
    # The transfer goes on after the drop: every second after it carried data.
    after = intervals[int(DROP_AFTER) + 1 :]
    assert after and all(b > 0 for b in after), intervals

    stats = peers["initiator"].call("stats")["esp"]
    assert stats["tun_mtu"] < tun_mtu_before and stats["tun_mtu"] <= 1200 - 28, stats
    log = peers["initiator"].log_path.read_text()
    assert "outer path MTU changed" in log

    pcap = workdir / "outer.pcap"
    # The router said so (RFC 1191), and nothing our initiator sent was fragmented.
    assert _count(pcap, "icmp.type == 3 && icmp.code == 4") >= 1
    assert _count(pcap, "ip.src == 10.201.0.1 && (ip.flags.mf == 1 || ip.frag_offset > 0)") == 0
    assert _count(pcap, "ip.src == 10.201.0.1 && udp.port == 4500") > 100
    print(f"intervals (bytes/s): {intervals}; TUN MTU {tun_mtu_before} -> {stats['tun_mtu']}")
