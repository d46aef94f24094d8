"""Traffic through the tunnel: pings, iperf3, NAT rebinding and NAT-T keepalives."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aioipsec.interop.peers import InteropPeer
from aioipsec.interop.scenario import (
    NAT_REBIND_PAUSE,
    PingResult,
    ScenarioRun,
    Side,
    Topology,
)
from aioipsec.netns import Capture, Lab

_RTT = re.compile(r"rtt min/avg/max/mdev = ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms")
_RECEIVED = re.compile(r"(\d+) packets transmitted, (\d+) received")


def ping_through(topology: Topology, count: int, from_side: Side = "initiator") -> PingResult:
    """Ping the other side's inner address from FROM_SIDE's inner address."""
    scenario = topology.scenario
    other: Side = "responder" if from_side == "initiator" else "initiator"
    namespace = topology.namespace(from_side)
    result = namespace.run(
        "ping",
        "-c",
        str(count),
        "-i",
        "0.2",
        "-W",
        "2",
        "-I",
        scenario.inner_address(from_side),
        scenario.inner_address(other),
        check=False,
        timeout=count * 2 + 10,
    )
    received = _RECEIVED.search(result.stdout)
    rtt = _RTT.search(result.stdout)
    return PingResult(
        int(received.group(1)) if received else 0,
        int(received.group(2)) if received else 0,
        float(rtt.group(2)) if rtt else None,
        result.stdout + result.stderr,
    )


_ECHO_REPLY = re.compile(r"icmp_seq=(\d+) ttl=")


def _start_background_ping(lab: Lab, topology: Topology, path: Path) -> Any:
    scenario = topology.scenario
    return lab.start(
        topology.initiator,
        ["ping", "-n", "-i", "0.1", "-W", "1", "-I", scenario.inner_address("initiator"),
         scenario.inner_address("responder")],
        log=path,
    )  # fmt: skip


def _lost_echoes(process: Any, path: Path) -> tuple[int, list[int]]:
    """(replies, sequence numbers missing before the last reply) of the background ping."""
    time.sleep(1.2)  # the last request's answer (-W 1)
    process.stop(signal.SIGINT)
    replies = sorted({int(m.group(1)) for m in _ECHO_REPLY.finditer(path.read_text())})
    if not replies:
        return 0, []
    return len(replies), sorted(set(range(1, replies[-1] + 1)) - set(replies))


def _nat_source_ports(capture_path: Path, nat_address: str) -> list[int]:
    """The UDP source ports the NAT used towards the responder's port 4500, in order."""
    result = subprocess.run(
        ["tshark", "-n", "-r", str(capture_path), "-Y",
         f"ip.src == {nat_address} && udp.dstport == 4500", "-T", "fields", "-e", "udp.srcport"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    ports: list[int] = []
    for token in result.stdout.split():
        if not ports or ports[-1] != int(token):
            ports.append(int(token))
    return ports


def _rebind(
    run: ScenarioRun,
    topology: Topology,
    peers: Mapping[Side, InteropPeer],
    capture: Capture,
) -> None:
    name = run.scenario.connection_name
    time.sleep(NAT_REBIND_PAUSE)
    run.ping_after_rebind = ping_through(topology, run.scenario.ping_count)
    view = peers["responder"].list_sas().get(name, {}).get("remote-port")
    time.sleep(0.2)
    capture.stop()
    ports = _nat_source_ports(capture.path, topology.initiator_seen_as)
    run.rebind_ports = tuple(str(p) for p in ports)
    if len(ports) < 2:
        run.problems.append(f"the NAT did not rebind (source ports on the wire: {ports})")
    elif run.ping_after_rebind.received == 0:
        run.problems.append(
            f"after the NAT moved the initiator from port {ports[0]} to {ports[-1]} no ping "
            "came back: the responder did not follow (RFC 7296 sec. 2.23)"
        )
    elif view != str(ports[-1]):
        # ESP follows (the pings came back), but the IKE SA's endpoint as reported is stale:
        # the next IKE request (DPD, rekey) would go to the old mapping.
        run.notes.append(
            f"responder reports remote-port {view} after the NAT moved the initiator to "
            f"{ports[-1]} (ESP followed)"
        )


def _count_keepalives(run: ScenarioRun, lab: Lab, topology: Topology, workdir: Path) -> None:
    """Idle for three keepalive intervals and count the NAT-T keepalives on the NAT's outside."""
    interval = run.scenario.keep_alive
    assert interval is not None and topology.router is not None
    path = workdir / "keepalive.pcap"
    capture = lab.capture(
        topology.router, topology.interfaces["router_outside"], path, "udp port 4500"
    )
    time.sleep(3 * interval + 0.5)
    capture.stop()
    result = subprocess.run(
        ["tshark", "-n", "-r", str(path), "-Y", "udp.length == 9",
         "-T", "fields", "-e", "ip.src", "-e", "udp.payload"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    sources = [
        fields[0]
        for fields in (line.split("\t") for line in result.stdout.splitlines())
        if len(fields) == 2 and fields[1] == "ff"
    ]
    run.keepalives_seen = sources.count(topology.initiator_seen_as)
    if run.keepalives_seen < 2:
        run.problems.append(
            f"{run.keepalives_seen} NAT-T keepalives from the NATed initiator in "
            f"{3 * interval:g} s idle (keep_alive {interval:g} s)"
        )


def _iperf(run: ScenarioRun, lab: Lab, topology: Topology, workdir: Path) -> None:
    """iperf3 TCP through the tunnel, initiator -> responder (the inner addresses)."""
    scenario = run.scenario
    server_address = scenario.inner_address("responder")
    server = lab.start(
        topology.responder,
        ["iperf3", "-s", "-1", "--forceflush", "-B", server_address, "-p", "5201"],
        log=workdir / "iperf3-server.log",
    )
    if not server.wait_for_log("Server listening", timeout=10):
        run.problems.append(f"iperf3 server did not start: {server.log_text()[-300:]}")
        return
    result = topology.initiator.run(
        "iperf3", "-c", server_address, "-B", scenario.inner_address("initiator"),
        "-p", "5201", "-t", str(scenario.iperf_seconds), "-J",
        check=False, timeout=scenario.iperf_seconds + 30,
    )  # fmt: skip
    server.stop()
    try:
        report = json.loads(result.stdout)
        summary = report["end"]["sum_received"]
        run.iperf_mbps = summary["bits_per_second"] / 1e6
        run.iperf_retransmits = report["end"]["sum_sent"].get("retransmits")
    except (ValueError, KeyError) as exc:
        run.problems.append(f"iperf3 failed ({exc}): {(result.stdout + result.stderr)[-300:]}")


# A TCP receiver and sender for tcp_transfer (run with this interpreter inside namespaces):
# the receiver counts and hashes every byte of one connection; the sender sends SIZE bytes
# of a seeded pseudo-random stream, so both hashes are known without a file of that size.
_RECEIVER = """
import hashlib, json, socket, sys
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
connection, peer = server.accept()
digest, count = hashlib.sha256(), 0
while data := connection.recv(65536):
    digest.update(data)
    count += len(data)
print(json.dumps({"bytes": count, "sha256": digest.hexdigest(), "from": peer[0]}), flush=True)
"""
_SENDER = """
import hashlib, json, random, socket, sys
host, port, size, source = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
stream, digest, sent = random.Random(size), hashlib.sha256(), 0
with socket.create_connection((host, port), timeout=30,
                              source_address=(source, 0) if source else None) as connection:
    while sent < size:
        chunk = stream.randbytes(min(65536, size - sent))
        connection.sendall(chunk)
        digest.update(chunk)
        sent += len(chunk)
print(json.dumps({"bytes": sent, "sha256": digest.hexdigest()}))
"""


def tcp_transfer(
    lab: Lab,
    sender: Any,
    receiver: Any,
    address: str,
    workdir: Path,
    *,
    source: str = "",
    size: int = 4 << 20,
    port: int = 5301,
) -> str:
    """SIZE bytes over one TCP connection from SENDER (a namespace; from SOURCE if given) to
    ADDRESS:PORT in RECEIVER; raises AssertionError unless every byte arrived, in order
    (SHA-256 of both ends compared). Returns a summary for the table."""
    import sys

    log = workdir / f"tcp-receiver-{port}.log"
    server = lab.start(receiver, [sys.executable, "-c", _RECEIVER, address, str(port)], log=log)
    assert server.wait_for_log("listening", timeout=15), f"TCP receiver: {server.log_text()}"
    started = time.monotonic()
    result = sender.run(
        sys.executable, "-c", _SENDER, address, str(port), str(size), source,
        check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, f"TCP sender failed: {result.stderr[-400:]}"
    sent = json.loads(result.stdout)
    deadline = time.monotonic() + 30
    received: dict[str, Any] = {}
    while time.monotonic() < deadline and not received:
        for line in log.read_text().splitlines():
            if line.startswith("{"):
                received = json.loads(line)
        time.sleep(0.05)
    seconds = time.monotonic() - started
    server.stop()
    assert received, f"the TCP receiver reported nothing: {log.read_text()[-300:]}"
    assert received["bytes"] == sent["bytes"] and received["sha256"] == sent["sha256"], (
        f"TCP through the tunnel: sent {sent}, received {received}"
    )
    if source:
        assert received["from"] == source, f"TCP came from {received['from']}, not {source}"
    return f"TCP {sent['bytes'] >> 20} MiB whole (SHA-256 equal, {seconds:.1f} s)"
