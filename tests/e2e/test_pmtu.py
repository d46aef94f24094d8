"""The MTU fault-line (issue 19): the outer path MTU drops to 1200 in the middle of a TCP
transfer through the tunnel.

Two of our daemons, ESP in UDP, a router namespace between them. iperf3 runs TCP from the
initiator's inner address to the responder's; one second in, the router's link towards the
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

# Every whole second from one second after the drop on must carry data (2 of them).
SECONDS = 4
DROP_AFTER = 1.0


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


def _iperf3_server(lab: Lab, topology: Topology, workdir: Path, address: str, port: int):
    """One iperf3 server run in the responder's namespace, listening on ADDRESS."""
    server = lab.start(
        topology.responder,
        ["iperf3", "-s", "-1", "--forceflush", "-B", address, "-p", str(port)],
        log=workdir / "iperf3-server.log",
    )
    assert server.wait_for_log("Server listening", timeout=10)
    return server


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

    server = _iperf3_server(lab, topology, workdir, "10.2.0.1", 5201)

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


NODF_CHILD = """            nodf {
                local_ts = %s
                remote_ts = %s
                esp_proposals = aes256gcm16
                copy_df = no
            }
"""


def _with_nodf_child(conf: str, local: str, remote: str) -> str:
    """SCENARIO's swanctl.conf with a second child, copy_df = no, between LOCAL and REMOTE."""
    marker = "        children {\n"
    assert marker in conf
    return conf.replace(marker, marker + NODF_CHILD % (local, remote), 1)


def _ping(namespace, *args: str) -> str:
    result = namespace.run("ping", "-c", "3", "-i", "0.2", "-W", "2", *args, check=False,
                           timeout=30)  # fmt: skip
    return result.stdout + result.stderr


@pytest.mark.timeout(150)
def test_outer_packets_without_df_are_fragmented_on_the_path(lab, workdir):
    """strongSwan's copy_df through the 1200 link (issue 19): a copy_df = no tunnel sends
    no outer packet with DF, so a TCP transfer crosses with outer fragments and no
    "fragmentation needed"; in a copy_df = yes tunnel an inner packet without DF leaves
    without DF too (fragments), one with DF still meets "fragmentation needed". The
    initiator, which sends, runs an encrypt worker (workers = 2); the responder's echo
    replies (the kernel sends them without DF) leave by its own no-DF socket."""
    scenario = Scenario(name="pmtu", initiator="aioipsec", responder="aioipsec", encap=True)
    topology, router_inside, router_outside = _topology(lab, scenario)
    assert topology.router is not None
    # A veth hands a UDP GSO packet to its peer whole, and the router forwards it whole (in
    # a namespace nothing cuts it to the 1200 link): the initiator's outer interface cuts
    # its datagrams in software, as a network card does on the wire.
    outer = topology.interfaces["initiator"]
    topology.initiator.ip("link", "set", "dev", outer, "gso_max_segs", "1")
    for namespace, inner in ((topology.initiator, "10.1.1.1"), (topology.responder, "10.2.1.1")):
        namespace.add_address("lo", f"{inner}/32")
    peers = {}
    for side, extra, nodf in (
        ("responder", "", ("10.2.1.0/24", "10.1.1.0/24")),
        ("initiator", "workers = 2\n", ("10.1.1.0/24", "10.2.1.0/24")),
    ):
        peer = AioipsecPeer(lab, topology.namespace(side), workdir / side, extra_toml=extra)
        peer.load(_with_nodf_child(swanctl_conf(scenario, topology, side), *nodf))
        peers[side] = peer
    initiator = peers["initiator"]
    initiator.initiate("pmtu", "pmtu")
    initiator.initiate("nodf", "pmtu")
    # The link shrinks once the tunnels are up (MSS and tunnel MTUs are those of 1500).
    topology.router.ip("link", "set", "dev", router_outside, "mtu", "1200")
    topology.responder.ip("link", "set", "dev", topology.interfaces["responder"], "mtu", "1200")
    tun_mtu = initiator.call("stats")["esp"]["tun_mtu"]
    assert tun_mtu > 1200, tun_mtu
    near = lab.capture(topology.router, router_inside, workdir / "near.pcap")
    far = lab.capture(topology.router, router_outside, workdir / "far.pcap")

    # 1. copy_df = no: TCP (DF on every inner packet) crosses, the router fragments.
    server = _iperf3_server(lab, topology, workdir, "10.2.1.1", 5202)
    result = topology.initiator.run(
        "iperf3", "-c", "10.2.1.1", "-B", "10.1.1.1", "-p", "5202", "-t", "1", "-J",
        check=False, timeout=60,
    )  # fmt: skip
    server.stop()
    report = json.loads(result.stdout)
    assert "error" not in report, report.get("error")
    sums = report["end"]["sum_sent"]["bytes"], report["end"]["sum_received"]["bytes"]
    print(f"copy_df = no: {sums} octets sent, received")
    assert sums[1] > 1_000_000, sums
    assert all(i["sum"]["bytes"] > 0 for i in report["intervals"]), report["intervals"]
    phase2 = time.time()
    # 2. copy_df = yes, inner IPv4 without DF below the tunnel MTU: no DF outside either.
    dont = _ping(topology.initiator, "-M", "dont", "-s", "1300", "-I", "10.1.0.1", "10.2.0.1")
    received = re.search(r"(\d+) received", dont)
    assert received and int(received.group(1)) >= 2, dont
    assert initiator.call("stats")["esp"]["tun_mtu"] == tun_mtu
    phase3 = time.time()
    # 3. copy_df = yes, inner DF: the outer DF packet meets "fragmentation needed".
    _ping(topology.initiator, "-M", "do", "-s", "1300", "-I", "10.1.0.1", "10.2.0.1")
    deadline = time.monotonic() + 20
    while "outer path MTU changed" not in initiator.log_path.read_text():
        assert time.monotonic() < deadline, "the initiator never lowered its tunnel MTU"
        time.sleep(0.2)
    time.sleep(0.3)
    near.stop()
    far.stop()

    fragment = "(ip.flags.mf == 1 || ip.frag_offset > 0)"
    frag_needed = "icmp.type == 3 && icmp.code == 4 && ip.dst == 10.201.0.1"

    def window(start: float, end: float | None = None) -> str:
        return f"frame.time_epoch >= {start}" + (f" && frame.time_epoch < {end}" if end else "")

    far_pcap, near_pcap = workdir / "far.pcap", workdir / "near.pcap"
    # Phase 1: the router fragmented our outer packets, and never said "fragmentation needed".
    assert _count(far_pcap, f"ip.src == 10.201.0.1 && {fragment} && {window(0, phase2)}") > 100
    assert _count(near_pcap, f"{frag_needed} && {window(0, phase3)}") == 0
    # Phase 2: the initiator's packets fragmented by the router, the responder's echo replies
    # (no DF) by its own kernel before its 1200 link.
    assert _count(far_pcap, f"ip.src == 10.201.0.1 && {fragment} && {window(phase2, phase3)}")
    assert _count(far_pcap, f"ip.src == 10.202.0.2 && {fragment} && {window(phase2, phase3)}")
    # Phase 3: DF set, "fragmentation needed" from the router.
    assert _count(near_pcap, f"{frag_needed} && {window(phase3)}") >= 1
    assert initiator.call("stats")["esp"]["tun_mtu"] <= 1200 - 28
