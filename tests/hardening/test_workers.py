"""Data-plane worker processes (issue 17 route 1; the fault test of issue 20 target 4).

Two real daemons in namespaces (:mod:`tests.hardening.lab`), both with ``[daemon]
workers = 2``: each has an encrypt worker process reading its TUN device.

* The tunnel carries ping and TCP (iperf3) both ways; a Child SA rekey and an IKE SA rekey
  under a steady ping stream lose no echo; the listings' packet counters of one direction
  agree on both sides (the sender's come from its worker's reports).
* The fault test: gw's encrypt worker SIGKILLed under a UDP stream with sequence numbers
  (gw -> peer, so the dead process is the one sending it). It is restarted, its SAs are
  back (same SPIs, the stream reaches peer again), the datagrams lost are counted, and a
  capture on gw's outer interface shows only IKE and ESP, with no (SPI, sequence number)
  sent twice: the restarted worker started past every number the dead one may have used
  (an AES-GCM nonce is never reused).

* SA-steered workers (``worker_steering = sa``, 2 workers, 3 in long mode, 4 Child SAs,
  ESP in UDP): ping, TCP and UDP both ways, each worker decrypting only its own SAs, and one worker
  SIGKILLed under a UDP stream on its SA: back with the same index and SAs, only IKE and
  ESP on the wire, no (SPI, sequence number) twice.

``AIOIPSEC_WORKERS_LONG=1`` makes the stream and the rekey rounds longer, and runs the
SA-steered test with raw ESP (protocol 50, the workers' filtered raw sockets) too.
"""

from __future__ import annotations

import collections
import datetime
import itertools
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import REPO, OurDaemon, assert_ping, child_of

from .lab import GW_INNER, GW_PEER_SIDE, PEER_INNER, Hosts, daemon_healthy
from .test_faults import assert_only_ike_and_esp, outer_capture
from .test_floods import record
from .test_loss_and_rekey import wait_for

pytestmark = [pytest.mark.netns, pytest.mark.needs("tcpdump", "iperf3")]
LONG = os.environ.get("AIOIPSEC_WORKERS_LONG") == "1"
STREAM_SECONDS = 20.0 if LONG else 4.0
REKEY_ROUNDS = 5 if LONG else 1
UDP_PORT = 5400


@pytest.fixture(scope="module")
def pair(module_hosts: Hosts) -> Iterator[tuple[Hosts, OurDaemon, OurDaemon]]:
    gw = module_hosts.gw(daemon={"workers": 2})
    peer = module_hosts.peer(daemon={"workers": 2})
    peer.call("initiate", child="net", timeout=30)
    peer.wait_for_child("legit")
    gw.wait_for_child("legit")
    yield module_hosts, gw, peer


def worker_pid(daemon: OurDaemon) -> int:
    esp = daemon.call("stats")["esp"]
    assert esp.get("workers") == 2, esp
    return int(esp["worker_pid"])


def child_counters(daemon: OurDaemon) -> dict[str, Any]:
    return child_of(daemon.sas()["legit"])


def rekey_under_pings(hosts: Hosts, gw: OurDaemon, peer: OurDaemon) -> None:
    """A Child SA rekey started by peer, then an IKE SA rekey started by gw, under 100
    pings a second from peer: every echo answered."""
    child_spi = child_counters(peer)["spi-in"]
    ike_spi = peer.sas()["legit"]["initiator-spi"]
    pings: dict[str, str] = {}

    def pinger() -> None:
        pings["out"] = hosts.peer_ns.run(
            "ping", "-n", "-q", "-c", "300", "-i", "0.01", "-W", "2", "-I", PEER_INNER,
            GW_INNER, check=False, timeout=60,
        ).stdout  # fmt: skip

    thread = threading.Thread(target=pinger)
    thread.start()
    time.sleep(0.3)
    peer.call("rekey", child="net")
    assert wait_for(lambda: child_counters(peer)["spi-in"] != child_spi, 20), peer.log_tail()
    gw.call("rekey", ike="legit")
    assert wait_for(
        lambda: (
            (s := peer.sas().get("legit"))
            and s.get("state") == "ESTABLISHED"
            and s["initiator-spi"] != ike_spi
            and s.get("child-sas")
        ),
        20,
    ), peer.log_tail()
    thread.join(60)
    summary = re.search(r"(\d+) packets transmitted, (\d+) received", pings.get("out", ""))
    assert summary, pings
    assert summary.group(1) == summary.group(2) == "300", pings["out"]


def test_tunnel_with_an_encrypt_worker(pair: tuple[Hosts, OurDaemon, OurDaemon]) -> None:
    hosts, gw, peer = pair
    for daemon in (gw, peer):
        # The worker runs, started after the daemon dropped its capabilities: it has no
        # more than the daemon kept (CAP_NET_ADMIN, bit 12).
        status = Path(f"/proc/{worker_pid(daemon)}/status").read_text()
        effective = int(next(line for line in status.splitlines() if line.startswith("CapEff:"))
                        .split()[1], 16)  # fmt: skip
        assert effective & ~(1 << 12) == 0, f"the worker's CapEff is {effective:#x}"
    assert_ping(hosts.peer_ns, PEER_INNER, GW_INNER, count=3)
    assert_ping(hosts.gw_ns, GW_INNER, PEER_INNER, count=3)

    # TCP both ways (-R: the server sends).
    server = hosts.lab.start(
        hosts.gw_ns, ["iperf3", "-s", "--forceflush", "-B", GW_INNER, "-p", "5301"],
        log=hosts.workdir / "iperf_server.log",
    )  # fmt: skip
    try:
        assert server.wait_for_log("Server listening", timeout=10)
        for reverse in ([], ["-R"]):
            result = hosts.peer_ns.run(
                "iperf3", "-c", GW_INNER, "-B", PEER_INNER, "-p", "5301", "-n", "4M",
                "-f", "m", *reverse, check=False, timeout=60,
            )  # fmt: skip
            assert result.returncode == 0, f"iperf3 {reverse}: {result.stdout}{result.stderr}"
            assert "receiver" in result.stdout, result.stdout
    finally:
        server.stop()

    # Rekeys under a steady ping stream (100/s): every echo answered.
    for _ in range(REKEY_ROUNDS):
        rekey_under_pings(hosts, gw, peer)

    # One IKE SA and one Child SA left on each side (the rekeyed ones are gone)...
    for daemon in (gw, peer):
        assert wait_for(lambda d=daemon: len(d.call("sas")) == 1, 15), daemon.call("sas")
        assert wait_for(lambda d=daemon: len(d.sas()["legit"]["child-sas"]) == 1, 15)
    # ...and the counters of one direction agree: gw's packets out (counted by its worker,
    # reported every 0.5 s) are peer's packets in, and the other way round.
    assert_ping(hosts.gw_ns, GW_INNER, PEER_INNER, count=5)
    assert_ping(hosts.peer_ns, PEER_INNER, GW_INNER, count=5)

    def agree() -> bool:
        g, p = child_counters(gw), child_counters(peer)
        out_g, in_p = int(g["packets-out"]), int(p["packets-in"])
        out_p, in_g = int(p["packets-out"]), int(g["packets-in"])
        return out_g == in_p > 0 and out_p == in_g > 0

    assert wait_for(agree, 5), (child_counters(gw), child_counters(peer))
    for daemon in (gw, peer):
        stats = daemon_healthy(daemon)
        assert stats["esp"]["worker_restarts"] == 0, stats["esp"]


def back_after(daemon: OurDaemon, pid: int, killed: float) -> float:
    """Seconds from the SIGKILL until the new worker logged that it runs (reads the TUN)."""
    for event in daemon.log_events():
        if event.get("event") == "encrypt worker running" and event.get("pid") == pid:
            stamp = event["timestamp"].replace("Z", "+00:00")
            return datetime.datetime.fromisoformat(stamp).timestamp() - killed
    raise AssertionError(f"the new worker {pid} never ran:\n{daemon.log_tail()}")


ESP_LINE = re.compile(r"ESP\(spi=(0x[0-9a-f]+),seq=(0x[0-9a-f]+)\)")


def esp_sequence_numbers(pcap: Path, source: str) -> list[tuple[int, int]]:
    """(SPI, sequence number) of every ESP packet SOURCE sent, in capture order."""
    out = subprocess.run(
        ["tcpdump", "-nn", "-r", str(pcap), f"ip proto 50 and src host {source}"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    return [(int(s, 16), int(q, 16)) for s, q in ESP_LINE.findall(out)]


def test_encrypt_worker_sigkilled_under_load(pair: tuple[Hosts, OurDaemon, OurDaemon]) -> None:
    hosts, gw, _peer = pair
    capture, pcap = outer_capture(hosts, "worker-kill")
    stream = hosts.workdir / "worker-kill.json"
    env = {"PYTHONPATH": str(REPO)}
    py = [sys.executable, "-m", "tests.hardening.seqstream"]
    receiver = hosts.lab.start(
        hosts.peer_ns,
        [*py, "recv", "--bind", f"{PEER_INNER}:{UDP_PORT}", "--seconds", str(STREAM_SECONDS + 60),
         "--out", str(stream)],
        log=hosts.workdir / "worker-kill-recv.log", env=env, cwd=REPO,
    )  # fmt: skip
    time.sleep(0.5)
    spi_before = child_counters(gw)["spi-out"]
    old_pid = worker_pid(gw)
    sender = hosts.lab.start(
        hosts.gw_ns,
        [*py, "send", "--bind", GW_INNER, "--to", f"{PEER_INNER}:{UDP_PORT}", "--rate", "2000",
         "--seconds", str(STREAM_SECONDS)],
        log=hosts.workdir / "worker-kill-send.log", env=env, cwd=REPO,
    )  # fmt: skip
    time.sleep(STREAM_SECONDS / 4)
    os.kill(old_pid, signal.SIGKILL)
    killed = time.time()
    restarted = wait_for(
        lambda: (
            (esp := gw.call("stats")["esp"])["worker_restarts"] == 1
            and esp["worker_pid"] != old_pid
            and esp
        ),
        15,
    )
    assert restarted, gw.log_tail()
    sender.popen.wait(STREAM_SECONDS + 30)
    receiver.popen.wait(90)
    capture.stop()
    report = json.loads(stream.read_text())
    # The stream went on after the restart: its last datagrams arrived.
    assert report["end_marker_seen"], report
    assert report["received"] > 0 and report["lost"] < report["sent"] / 2, report
    # The same Child SA, and a working tunnel both ways.
    assert child_counters(gw)["spi-out"] == spi_before
    assert_ping(hosts.gw_ns, GW_INNER, PEER_INNER, count=3)
    assert_ping(hosts.peer_ns, PEER_INNER, GW_INNER, count=3)
    figures = assert_only_ike_and_esp(pcap)
    # No (SPI, sequence number) twice: no nonce used twice under one key.
    sent = esp_sequence_numbers(pcap, GW_PEER_SIDE)
    repeated = [key for key, n in collections.Counter(sent).items() if n > 1]
    assert sent and not repeated, repeated[:10]
    jumps = [b[1] - a[1] for a, b in itertools.pairwise(sent) if a[0] == b[0] and b[1] - a[1] > 1]
    stats = daemon_healthy(gw)["esp"]
    record(
        "worker_sigkill",
        datagrams_sent=report["sent"],
        datagrams_lost=report["lost"],
        worker_back_after_s=round(back_after(gw, int(restarted["worker_pid"]), killed), 3),
        capture=figures,
        sequence_jump=max(jumps, default=0),
        worker_restarts=stats["worker_restarts"],
    )
    print("worker SIGKILL:", report["sent"], "sent,", report["lost"], "lost;", figures)


def test_trap_through_the_worker_and_daemon_sigkill(
    pair: tuple[Hosts, OurDaemon, OurDaemon],
) -> None:
    """start_action = trap: the first packet is read by peer's worker, which holds it and
    asks its daemon to negotiate (acquire); the packet leaves once the SA is there. Then
    gw's daemon is SIGKILLed: its worker exits with it (it holds the TUN device), so the
    device is gone and a new daemon can start."""
    hosts, gw, peer = pair
    peer.stop()
    gw.stop()
    gw = hosts.gw(daemon={"workers": 2})
    peer = hosts.peer(daemon={"workers": 2}, start_action="trap")
    assert not peer.call("sas"), "a trap must not start anything by itself"
    result = hosts.peer_ns.run(
        "ping", "-n", "-c", "1", "-W", "10", "-I", PEER_INNER, GW_INNER, check=False, timeout=30
    )
    assert result.returncode == 0, f"the trapped ping was not answered:\n{result.stdout}"
    assert "acquire" in peer.log_text(), peer.log_tail()
    # The worker's counters reach the daemon's listing within a report interval (0.5 s).
    # The held packet and the packet sent once the SA was there can come in two reports.
    esp = wait_for(
        lambda: (e := peer.call("stats")["esp"])["held"] >= 1 and e["packets_out"] >= 1 and e, 5
    )
    assert esp and esp["worker_restarts"] == 0, peer.call("stats")["esp"]
    old_worker = worker_pid(gw)
    gw.kill()
    assert wait_for(lambda: not _running(old_worker), 10), "the worker outlived its daemon"
    assert wait_for(lambda: "ipsec0" not in hosts.gw_ns.run("ip", "-o", "link").stdout, 10)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# --------------------------------------------------------------------------- worker_steering = sa

SA_WORKERS = 3 if LONG else 2  # 2 workers + the IKE process: the least that steers
CHILDREN = 4  # one Child SA per inner address pair 10.1.0.k <-> 10.2.0.k


def steered_config(directory: Path, local: str, remote: str, local_id: str, remote_id: str,
                   local_net: str, remote_net: str, encap: bool) -> Path:  # fmt: skip
    """CHILDREN Child SAs under one IKE SA, each for one pair of inner /32s."""
    text = f"""[daemon]
control_socket = "{directory / "control.sock"}"
tun_name = "ipsec0"
workers = {SA_WORKERS}
worker_steering = "sa"

[connections.steer]
local_addrs = ["{local}"]
remote_addrs = ["{remote}"]
proposals = ["aes256gcm16-prfsha256-x25519"]
encap = {"true" if encap else "false"}

[connections.steer.local]
auth = "psk"
id = "{local_id}"

[connections.steer.remote]
auth = "psk"
id = "{remote_id}"
"""
    for k in range(1, CHILDREN + 1):
        text += f"""
[connections.steer.children.c{k}]
local_ts = ["{local_net}.{k}/32"]
remote_ts = ["{remote_net}.{k}/32"]
esp_proposals = ["aes256gcm16"]
"""
    text += f"""
[secrets.ike-steer]
id-local = "{local_id}"
id-remote = "{remote_id}"
secret = "steering-secret-not-for-production-0123456789"
"""
    directory.mkdir(exist_ok=True)
    path = directory / "steer.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


def steered_children(daemon: OurDaemon) -> dict[str, dict[str, Any]]:
    """{child name: its listing} of the one IKE SA."""
    children = daemon.sas()["steer"].get("child-sas") or {}
    return {child["name"]: child for child in children.values()}


def esp_sent(pcap: Path, source: str, spis: set[int]) -> list[tuple[int, int]]:
    """(SPI, sequence number) of every ESP packet SOURCE sent, raw or in UDP, read from
    the pcap itself: ESP-in-UDP leaves as UDP GSO super packets, which cross the veth
    whole (tcpdump shows the first segment only). Their segments are equal-sized but the
    last: the size is the offset of the second segment, found by one of SPIS (the
    sender's outbound SPIs) at its start."""
    data = pcap.read_bytes()
    order = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    source_bytes = socket.inet_aton(source)
    found: list[tuple[int, int]] = []
    offset = 24
    while offset + 16 <= len(data):
        (captured,) = struct.unpack_from(order + "I", data, offset + 8)
        frame = data[offset + 16 : offset + 16 + captured]
        offset += 16 + captured
        if frame[12:14] != b"\x08\x00":  # Ethernet, IPv4
            continue
        ip = frame[14:]
        if ip[12:16] != source_bytes:
            continue
        header = (ip[0] & 0x0F) * 4
        if ip[9] == 50:
            found.append(struct.unpack_from("!II", ip, header))
            continue
        if ip[9] != 17 or 4500 not in struct.unpack_from("!HH", ip, header):
            continue
        payload = ip[header + 8 :]
        if len(payload) < 8 or payload[:4] == b"\0\0\0\0":
            continue  # IKE or a keepalive
        starts = (
            k for k in range(16, len(payload) - 4) if int(payload[k : k + 4].hex(), 16) in spis
        )
        size = next(starts, len(payload))
        for start in range(0, len(payload) - 7, size):
            found.append(struct.unpack_from("!II", payload, start))
    return found


def _run_all(hosts: Hosts, commands: list[tuple[Any, list[str]]]) -> list[Any]:
    """Run (namespace, argv) pairs at once; their results in order."""
    results: list[Any] = [None] * len(commands)

    def run(i: int, namespace: Any, argv: list[str]) -> None:
        results[i] = namespace.run(*argv, check=False, timeout=60)

    threads = [threading.Thread(target=run, args=(i, ns, argv))
               for i, (ns, argv) in enumerate(commands)]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    return results


@pytest.mark.parametrize("encap", [True, False] if LONG else [True], ids=lambda e: f"encap={e}")
def test_sa_steered_workers(module_hosts: Hosts, encap: bool) -> None:
    """Two daemons with worker_steering = sa and 2 workers each (3 in long mode), 4 Child
    SAs: TCP, UDP and ping both ways on every SA; each worker decrypts only its own SAs
    (foreign_in = 0) and every worker that owns an SA received ESP on its own socket; one
    worker SIGKILLed under a UDP stream comes back with its index and SAs, nothing in clear
    meanwhile and no (SPI, sequence number) sent twice."""
    hosts = module_hosts
    for daemon in hosts.daemons:
        daemon.stop()
    for k in range(2, CHILDREN + 1):
        hosts.peer_ns.run("ip", "addr", "replace", f"10.1.0.{k}/32", "dev", "lo")
        hosts.gw_ns.run("ip", "addr", "replace", f"10.2.0.{k}/32", "dev", "lo")
    tag = "encap" if encap else "raw"
    gw_config = steered_config(
        hosts.workdir / f"sa-gw-{tag}", GW_PEER_SIDE, "192.168.70.1", "gw.example",
        "peer.example", "10.2.0", "10.1.0", encap)  # fmt: skip
    peer_config = steered_config(
        hosts.workdir / f"sa-peer-{tag}", "192.168.70.1", GW_PEER_SIDE, "peer.example",
        "gw.example", "10.1.0", "10.2.0", encap)  # fmt: skip
    gw = OurDaemon(hosts.lab, hosts.gw_ns, gw_config, gw_config.parent)
    peer = OurDaemon(hosts.lab, hosts.peer_ns, peer_config, peer_config.parent)
    hosts.daemons += [gw, peer]
    starts = [threading.Thread(target=daemon.start) for daemon in (gw, peer)]  # at once
    for thread in starts:
        thread.start()
    for thread in starts:
        thread.join(60)
    try:
        for k in range(1, CHILDREN + 1):
            peer.call("initiate", child=f"c{k}", timeout=30)
        assert wait_for(lambda: len(steered_children(gw)) == CHILDREN, 20), gw.log_tail()
        for daemon in (gw, peer):
            esp = daemon.call("stats")["esp"]
            assert esp["workers"] == SA_WORKERS and esp["worker_steering"] == "sa", esp
            owned = [w["child_sas"] for w in esp["worker_list"]]
            assert sum(owned) == CHILDREN and all(owned), owned  # round robin: all own some
            for worker in esp["worker_list"]:  # started after the capabilities were dropped
                status = Path(f"/proc/{worker['pid']}/status").read_text()
                effective = int(next(line for line in status.splitlines()
                                     if line.startswith("CapEff:")).split()[1], 16)  # fmt: skip
                assert effective & ~(1 << 12) == 0, f"a worker's CapEff is {effective:#x}"

        # Ping both ways on every SA, at once.
        pings = []
        for k in range(1, CHILDREN + 1):
            for ns, src, dst in ((hosts.peer_ns, f"10.1.0.{k}", f"10.2.0.{k}"),
                                 (hosts.gw_ns, f"10.2.0.{k}", f"10.1.0.{k}")):  # fmt: skip
                pings.append((ns, ["ping", "-n", "-q", "-c", "2", "-i", "0.05", "-W", "2",
                                   "-I", src, dst]))  # fmt: skip
        for result in _run_all(hosts, pings):
            assert result.returncode == 0, result.stdout + result.stderr

        # TCP both ways on two SAs (iperf3 -R: the server sends).
        server = hosts.lab.start(
            hosts.gw_ns, ["iperf3", "-s", "--forceflush", "-p", "5302"],
            log=hosts.workdir / f"sa-iperf-{tag}.log",
        )  # fmt: skip
        try:
            assert server.wait_for_log("Server listening", timeout=10)
            for k, reverse in ((1, []), (2, ["-R"])):
                result = hosts.peer_ns.run(
                    "iperf3", "-c", f"10.2.0.{k}", "-B", f"10.1.0.{k}", "-p", "5302", "-n",
                    "512K", "-f", "m", *reverse, check=False, timeout=60,
                )  # fmt: skip
                assert result.returncode == 0, f"iperf3 {k} {reverse}: {result.stdout}"
            # UDP peer -> gw (the stream below is gw -> peer).
            result = hosts.peer_ns.run(
                "iperf3", "-u", "-b", "20M", "-c", "10.2.0.4", "-B", "10.1.0.4", "-p", "5302",
                "-n", "128K", check=False, timeout=60,
            )  # fmt: skip
            assert result.returncode == 0, f"iperf3 -u: {result.stdout}"
        finally:
            server.stop()

        # A Child SA rekey: the new SA's SPI may name another owner (make-before-break
        # across workers); the pings after the fault below go through it both ways.
        old_spi = steered_children(peer)["c1"]["spi-in"]
        peer.call("rekey", child="c1")
        assert wait_for(
            lambda: (
                steered_children(peer)["c1"]["spi-in"] != old_spi
                and len(steered_children(gw)) == len(steered_children(peer)) == CHILDREN
            ),
            20,
        ), peer.log_tail()

        # The fault: the worker owning gw's SA c3 SIGKILLed under a UDP stream on it.
        spi_in = int(steered_children(gw)["c3"]["spi-in"], 16)
        owner = (spi_in >> 24) % SA_WORKERS
        old = gw.call("stats")["esp"]["worker_list"][owner]
        capture, pcap = outer_capture(hosts, f"sa-kill-{tag}")
        stream = hosts.workdir / f"sa-kill-{tag}.json"
        env = {"PYTHONPATH": str(REPO)}
        py = [sys.executable, "-m", "tests.hardening.seqstream"]
        receiver = hosts.lab.start(
            hosts.peer_ns,
            [*py, "recv", "--bind", f"10.1.0.3:{UDP_PORT}", "--seconds",
             str(STREAM_SECONDS + 60), "--out", str(stream)],
            log=hosts.workdir / f"sa-kill-recv-{tag}.log", env=env, cwd=REPO,
        )  # fmt: skip
        time.sleep(0.2)
        sender = hosts.lab.start(
            hosts.gw_ns,
            [*py, "send", "--bind", "10.2.0.3", "--to", f"10.1.0.3:{UDP_PORT}", "--rate",
             "2000", "--seconds", str(STREAM_SECONDS / 2 if LONG else 1.2)],
            log=hosts.workdir / f"sa-kill-send-{tag}.log", env=env, cwd=REPO,
        )  # fmt: skip
        time.sleep(0.3)
        os.kill(old["pid"], signal.SIGKILL)
        back = wait_for(
            lambda: (
                (w := gw.call("stats")["esp"]["worker_list"][owner])["restarts"] == 1
                and w["pid"] != old["pid"]
                and w
            ),
            15,
        )
        assert back, gw.log_tail()
        sender.popen.wait(STREAM_SECONDS + 30)
        receiver.popen.wait(90)
        # Both ways on every SA after the restart (the restarted worker decrypts again).
        for result in _run_all(hosts, pings):
            assert result.returncode == 0, result.stdout + result.stderr
        capture.stop()
        report = json.loads(stream.read_text())
        assert report["end_marker_seen"] and report["received"] > 0, report
        assert int(steered_children(gw)["c3"]["spi-in"], 16) == spi_in
        figures = assert_only_ike_and_esp(pcap) if not encap else _only_ike_and_esp(pcap)
        spis = {int(child["spi-out"], 16) for child in steered_children(gw).values()}
        sent = esp_sent(pcap, GW_PEER_SIDE, spis)
        # (tcpdump may miss some under load: the capture shows what it shows, no more)
        repeated = [key for key, n in collections.Counter(sent).items() if n > 1]
        assert sent and not repeated, repeated[:10]

        # Each SA's inbound packets reached its owner: no worker decrypted another's SA,
        # every worker received ESP on its own socket; handoffs counted.
        def steered(daemon: OurDaemon) -> list[dict[str, Any]] | None:
            workers = daemon.call("stats")["esp"]["worker_list"]
            ok = all(w["esp_in"] > 0 and w["foreign_in"] == 0 for w in workers)
            return workers if ok else None

        listings = [wait_for(lambda d=d: steered(d), 5) for d in (gw, peer)]
        assert all(listings), [d.call("stats")["esp"]["worker_list"] for d in (gw, peer)]
        record(
            f"sa_steered_{tag}",
            datagrams_sent=report["sent"],
            datagrams_lost=report["lost"],
            capture=figures,
            esp_captured=len(sent),
            workers={"gw": listings[0], "peer": listings[1]},
        )
        print("SA-steered workers:", report["sent"], "sent,", report["lost"], "lost;", figures,
              listings)  # fmt: skip
        # The workers die with their daemon (PR_SET_PDEATHSIG), and the TUN device with them.
        pids = [w["pid"] for w in gw.call("stats")["esp"]["worker_list"]]
        gw.kill()
        assert wait_for(lambda: not any(_running(pid) for pid in pids), 10), pids
        assert wait_for(lambda: "ipsec0" not in hosts.gw_ns.run("ip", "-o", "link").stdout, 10)
    finally:
        for daemon in (gw, peer):
            daemon.stop()


def _only_ike_and_esp(pcap: Path) -> dict[str, int]:
    """assert_only_ike_and_esp for UDP-encapsulated ESP (port 4500, RFC 3948)."""

    def count(expression: str) -> int:
        out = subprocess.run(["tcpdump", "-nn", "-r", str(pcap), expression],
                             capture_output=True, text=True, timeout=60).stdout  # fmt: skip
        return len(out.splitlines())

    from .test_faults import NOT_IKE_OR_ESP

    figures = {"packets": count(""), "esp": count("udp port 4500"), "other": count(NOT_IKE_OR_ESP)}
    assert not figures["other"], f"packets in clear on the outer interface: {figures}"
    assert figures["esp"] > 0, figures
    return figures
