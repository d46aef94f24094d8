"""Faults of this round's parts against a daemon carrying traffic (issue 20, target 4).

Every test runs with a tunnel up between peer and gw, pings crossing it, and a capture on
gw's outer interface towards peer: at the end the capture must hold only IKE (UDP 500 and
4500), ESP and link-level chatter (ARP, IPv6 neighbour discovery), nothing in clear.

* The control socket and the VICI socket flooded by 100 clients at once (idle ones that
  hold a connection, ones sending garbage or oversized frames, ones looping valid
  requests): the daemon goes on answering a fresh client on both sockets, the tunnel
  carries its pings, and once the flood is over its descriptors and asyncio tasks are back
  to what they were.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from aioipsec.vici.codec import PacketType, encode_packet
from tests.e2e.helpers import assert_ping
from tests.vici.helpers import receive_packet

from .lab import GW_INNER, PEER_INNER, Hosts, daemon_healthy, tunnel_up
from .test_floods import record

pytestmark = [pytest.mark.netns]
CLIENTS = 100
FLOOD_SECONDS = float(os.environ.get("AIOIPSEC_FAULT_FLOOD_SECONDS", "8"))
# What may cross the outer link: IKE, ESP, and the link's own housekeeping (ARP, IPv6
# link-local: neighbour discovery, MLD reports behind a hop-by-hop header), and ICMP
# errors about IKE datagrams (a killed gateway's kernel answers its clients' DPD with
# port unreachable: the quoted packet, at ICMP offset 8, is UDP to port 500/4500).
NOT_IKE_OR_ESP = (
    "not (udp port 500 or udp port 4500 or ip proto 50 or arp"
    " or (ip6 and (dst net ff02::/16 or src net fe80::/10))"
    " or (icmp and icmp[0] == 3 and icmp[17] == 17"
    " and (icmp[30:2] == 500 or icmp[30:2] == 4500)))"
)


def vici_call(path: Path, command: str, timeout: float = 5.0) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(encode_packet(PacketType.CMD_REQUEST, command, {}))
        packet = receive_packet(sock)
    assert packet.type is PacketType.CMD_RESPONSE, packet
    return packet.message


def outer_capture(hosts: Hosts, name: str):
    path = hosts.workdir / f"{name}.pcap"
    return hosts.lab.capture(hosts.gw_ns, hosts.gw_peer_dev, path), path


def assert_only_ike_and_esp(path: Path) -> dict[str, int]:
    """Count the capture's packets: all, ESP, and anything else (must be none)."""

    def count(expression: str) -> int:
        out = os.popen(f"tcpdump -nn -r {path} '{expression}' 2>/dev/null | wc -l").read()
        return int(out.strip() or 0)

    figures = {"packets": count(""), "esp": count("ip proto 50"), "other": count(NOT_IKE_OR_ESP)}
    if figures["other"]:
        shown = os.popen(f"tcpdump -nn -r {path} '{NOT_IKE_OR_ESP}' 2>/dev/null | head").read()
        raise AssertionError(f"packets in clear on the outer interface: {figures}\n{shown}")
    assert figures["esp"] > 0, f"no ESP in the capture: the test proved nothing {figures}"
    return figures


def _flood_client(path: Path, kind: str, vici: bool, stop: threading.Event, counts: dict) -> None:
    valid = (
        encode_packet(PacketType.CMD_REQUEST, "version", {})
        if vici
        else json.dumps({"command": "stats", "args": {}}).encode() + b"\n"
    )
    while not stop.is_set():
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(2.0)
                sock.connect(str(path))
                if kind == "idle":  # hold the connection, say nothing
                    stop.wait(FLOOD_SECONDS)
                elif kind == "garbage":
                    junk = (
                        struct.pack("!I", 0xFFFFFFF0) + b"\x00" * 64  # oversized frame
                        if vici
                        else b"{" * 5000 + b"\n" + os.urandom(2048) + b"\n"
                    )
                    sock.sendall(junk)
                    sock.recv(4096)
                else:  # valid requests, as fast as answered
                    for _ in range(20):
                        sock.sendall(valid)
                        if not sock.recv(65536):
                            break
                counts[kind] = counts.get(kind, 0) + 1
        except OSError:
            counts["errors"] = counts.get("errors", 0) + 1
            time.sleep(0.05)


@pytest.mark.timeout(180)
def test_control_and_vici_sockets_flooded_by_100_clients(hosts: Hosts) -> None:
    gw, peer = tunnel_up(hosts)
    vici_path = gw.control_socket.with_suffix(".vici")
    assert vici_path.exists(), f"no VICI socket at {vici_path}"
    assert vici_call(vici_path, "version").get("daemon"), "VICI version answered nothing"
    before = gw.call("stats")
    capture, pcap = outer_capture(hosts, "flood")
    pinger = hosts.lab.start(
        hosts.peer_ns,
        # As long as the flood (a count, not a deadline: ping ends with the flood).
        ["ping", "-n", "-q", "-i", "0.05", "-c", str(int(FLOOD_SECONDS / 0.05)), "-W", "2",
         "-I", PEER_INNER, GW_INNER],
        log=hosts.workdir / "ping.log",
    )  # fmt: skip
    stop = threading.Event()
    counts: dict[str, int] = {}
    threads = []
    for index in range(CLIENTS):
        vici = index % 2 == 1
        kind = ("idle", "garbage", "valid")[index % 3]
        path = vici_path if vici else gw.control_socket
        threads.append(
            threading.Thread(target=_flood_client, args=(path, kind, vici, stop, counts))
        )
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    # During the flood: a fresh client is served on both sockets.
    latencies = []
    deadline = time.monotonic() + FLOOD_SECONDS - 1.5
    while time.monotonic() < deadline:
        started = time.monotonic()
        stats = gw.call("stats", timeout=10)
        vici_call(vici_path, "version", timeout=10)
        latencies.append(time.monotonic() - started)
        time.sleep(0.3)
    stop.set()
    for thread in threads:
        thread.join(15)
    pinger.popen.wait(30)
    ping_text = pinger.log_text()
    capture.stop()
    # The daemon closes the flood's connections (then its descriptors and tasks are back).
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = gw.call("stats")
        if (now["open-fds"], now["tasks"]) == (before["open-fds"], before["tasks"]):
            break
        time.sleep(0.1)
    after = daemon_healthy(gw)
    daemon_healthy(peer)
    assert_ping(hosts.peer_ns, PEER_INNER, GW_INNER, count=2)
    figures = assert_only_ike_and_esp(pcap)
    record(
        "control_vici_flood", clients=CLIENTS, seconds=FLOOD_SECONDS, connections=counts,
        fresh_client_answer_s_max=round(max(latencies), 3),
        fresh_client_answers=len(latencies), ping=ping_text.strip().splitlines()[-2:],
        fds=(before["open-fds"], after["open-fds"]), tasks=(before["tasks"], after["tasks"]),
        capture=figures,
    )  # fmt: skip
    assert latencies and stats["ike-sas"] >= 1
    assert counts.get("valid", 0) > CLIENTS // 3, counts  # the flood did reach the daemon
    assert " 0% packet loss" in ping_text, ping_text
    assert after["open-fds"] == before["open-fds"], (before["open-fds"], after["open-fds"])
    assert after["tasks"] == before["tasks"], (before["tasks"], after["tasks"])
