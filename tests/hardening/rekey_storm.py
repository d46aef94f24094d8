"""Rekeys under load between two aioipsec daemons (issue 20, target 1).

    sudo .venv/bin/python -m tests.hardening.rekey_storm --rekeys 100 [--json FILE]

peer and gw of :mod:`tests.hardening.lab` establish one IKE SA and one Child SA; then, while
a full-speed TCP stream (iperf3, peer -> gw) and a numbered UDP stream in each direction
(:mod:`tests.hardening.seqstream`, 1000 datagrams/s each) cross the tunnel, the Child SA and
the IKE SA are rekeyed REKEYS times, in turn: Child by peer, Child by gw, IKE by peer, IKE by
gw, Child by both at once, IKE by both at once (the last two collide: RFC 7296 sec. 2.8.1
and 2.8.2, the nonces pick the survivor). After each rekey both daemons must hold exactly 1
IKE SA and 1 Child SA again (no leak). Figures: UDP datagrams lost (must be 0), the TCP
sender's retransmitted segments (``RetransSegs`` of the peer namespace's /proc/net/snmp,
nstat's source) during each rekey and during as long a quiet spell, the rekey times.

``tests/hardening/test_rekey_storm.py`` runs 6 rekeys of the same code in ``make test``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from aioipsec.netns import BackgroundProcess, Lab, Namespace
from tests.e2e.helpers import OurDaemon

from .lab import GW_INNER, PEER_INNER, Hosts, build_hosts, daemon_healthy

# The order of kinds: each initiator, then collisions (both daemons request the same rekey).
KINDS = [
    ("child", "peer"), ("child", "gw"), ("ike", "peer"), ("ike", "gw"),
    ("child", "both"), ("ike", "both"),
]  # fmt: skip
UDP_PORT = 5301
REPO = Path(__file__).resolve().parents[2]


class StormError(AssertionError):
    pass


def sa_counts(daemon: OurDaemon) -> tuple[int, int, list[dict[str, Any]]]:
    """(IKE SAs, Child SAs, the IKE SAs) as the control socket lists them (every IKE SA of
    every connection, rekeyed-away ones included while they exist)."""
    entries = daemon.call("sas")
    ike_sas = [sa for entry in entries for sa in entry.values()]
    children = sum(len(sa.get("child-sas") or {}) for sa in ike_sas)
    return len(ike_sas), children, ike_sas


def _identity(daemon: OurDaemon) -> tuple[set[str], set[tuple[str, str]]]:
    _, _, ike_sas = sa_counts(daemon)
    children = {c["spi-in"] for sa in ike_sas for c in (sa.get("child-sas") or {}).values()}
    ikes = {(sa["initiator-spi"], sa["responder-spi"]) for sa in ike_sas}
    return children, ikes


def retrans_segs(namespace: Namespace) -> int:
    """The namespace's TCP RetransSegs (/proc/net/snmp is per network namespace)."""
    text = namespace.run("cat", "/proc/net/snmp").stdout
    lines = [line.split() for line in text.splitlines() if line.startswith("Tcp:")]
    header, values = lines[0], lines[1]
    return int(values[header.index("RetransSegs")])


def drop_counters(namespace: Namespace) -> dict[str, int]:
    """Where a datagram can be dropped on this host without the daemon choosing to: the
    TUN device's queues, UDP receive buffers (IKE/ESP-in-UDP, the streams' receivers) and
    raw ESP sockets' buffers (the ``drops`` column of /proc/net/raw)."""
    out: dict[str, int] = {}
    links = json.loads(namespace.run("ip", "-s", "-j", "link", "show").stdout)
    for link in links:
        stats = link.get("stats64") or {}
        for direction in ("rx", "tx"):
            value = (stats.get(direction) or {}).get("dropped", 0)
            if value:
                out[f"{link['ifname']}.{direction}_dropped"] = value
    snmp = namespace.run("cat", "/proc/net/snmp").stdout.splitlines()
    udp = [line.split() for line in snmp if line.startswith("Udp:")]
    for key in ("RcvbufErrors", "SndbufErrors", "InErrors"):
        value = int(udp[1][udp[0].index(key)])
        if value:
            out[f"udp.{key}"] = value
    raw = namespace.run("cat", "/proc/net/raw").stdout.splitlines()[1:]
    drops = sum(int(line.split()[-1]) for line in raw if line.split())
    if drops:
        out["raw.drops"] = drops
    return out


def _settled(daemons: list[OurDaemon], kind: str, before: dict[str, Any]) -> bool:
    for daemon in daemons:
        ikes, children, _ = sa_counts(daemon)
        if (ikes, children) != (1, 1):
            return False
        child_spis, ike_spis = _identity(daemon)
        old_children, old_ikes = before[daemon.config.name]
        if kind == "child" and child_spis & old_children:
            return False
        if kind == "ike" and ike_spis & old_ikes:
            return False
    return True


def rekey_once(gw: OurDaemon, peer: OurDaemon, kind: str, who: str, timeout: float) -> float:
    """One rekey; returns the seconds until both daemons hold 1 new IKE SA + 1 Child SA."""
    daemons = [gw, peer]
    before = {d.config.name: _identity(d) for d in daemons}
    started = time.monotonic()
    selector = {"child": "net"} if kind == "child" else {"ike": "legit"}
    actors = {"peer": [peer], "gw": [gw], "both": [peer, gw]}[who]
    errors: list[BaseException] = []

    def call(daemon: OurDaemon) -> None:
        try:
            daemon.call("rekey", **selector)
        except BaseException as exc:  # reported below, with the daemon's log
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(d,)) for d in actors]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    if errors:
        raise StormError(f"rekey {kind} by {who}: {errors[0]}")
    while time.monotonic() - started < timeout:
        if _settled(daemons, kind, before):
            return time.monotonic() - started
        time.sleep(0.05)
    counts = {d.config.name: sa_counts(d)[:2] for d in daemons}
    raise StormError(
        f"rekey {kind} by {who} did not settle in {timeout} s (IKE, Child SAs per daemon:"
        f" {counts})\n--- gw ---\n{gw.log_tail(30)}\n--- peer ---\n{peer.log_tail(30)}"
    )


def _start_streams(
    hosts: Hosts, workdir: Path, seconds: float, udp_rate: float, tcp: bool
) -> dict[str, BackgroundProcess]:
    lab, py = hosts.lab, [sys.executable, "-m", "tests.hardening.seqstream"]
    env = {"PYTHONPATH": str(REPO)}
    processes: dict[str, BackgroundProcess] = {}
    for name, ns, local in (
        ("udp_to_gw", hosts.gw_ns, GW_INNER),
        ("udp_to_peer", hosts.peer_ns, PEER_INNER),
    ):
        processes[f"{name}_recv"] = lab.start(
            ns,
            [*py, "recv", "--bind", f"{local}:{UDP_PORT}", "--seconds", str(seconds + 120),
             "--out", str(workdir / f"{name}.json")],
            log=workdir / f"{name}_recv.log", env=env, cwd=REPO,
        )  # fmt: skip
    if tcp:
        processes["iperf_server"] = lab.start(
            hosts.gw_ns, ["iperf3", "-s", "-1", "-B", GW_INNER, "-p", "5302"],
            log=workdir / "iperf_server.log",
        )  # fmt: skip
    time.sleep(0.5)
    for name, ns, local, remote in (
        ("udp_to_gw", hosts.peer_ns, PEER_INNER, GW_INNER),
        ("udp_to_peer", hosts.gw_ns, GW_INNER, PEER_INNER),
    ):
        processes[f"{name}_send"] = lab.start(
            ns,
            [*py, "send", "--bind", local, "--to", f"{remote}:{UDP_PORT}", "--rate",
             str(udp_rate), "--seconds", str(seconds), "--stop-file",
             str(workdir / "stop")],
            log=workdir / f"{name}_send.log", env=env, cwd=REPO,
        )  # fmt: skip
    if tcp:
        processes["iperf_client"] = lab.start(
            hosts.peer_ns,
            ["iperf3", "-c", GW_INNER, "-B", PEER_INNER, "-p", "5302", "-t", str(int(seconds)),
             "-i", "1", "-f", "m", "--forceflush"],
            log=workdir / "iperf_client.log",
        )  # fmt: skip
    return processes


def _wait(process: BackgroundProcess, timeout: float) -> None:
    try:
        process.popen.wait(timeout)
    except Exception:
        process.stop()


def _iperf_mbits(text: str) -> float | None:
    for line in text.splitlines():
        if "sender" in line and "Mbits/sec" in line:
            fields = line.split()
            return float(fields[fields.index("Mbits/sec") - 1])
    # No summary (interrupted early): the mean of the one-second intervals.
    rates = [float(line.split()[line.split().index("Mbits/sec") - 1])
             for line in text.splitlines() if "Mbits/sec" in line and "sec" in line]  # fmt: skip
    return round(sum(rates) / len(rates), 1) if rates else None


def run_storm(
    hosts: Hosts,
    rekeys: int,
    *,
    gap: float = 1.0,
    udp_rate: float = 1000.0,
    tcp: bool = True,
    settle_timeout: float = 30.0,
    progress: Any = None,
    txqueuelen: int | None = None,
    quiet: float = 3.0,
) -> dict[str, Any]:
    """Establish, start the streams, rekey REKEYS times, stop the streams; the figures."""
    workdir = Path(tempfile.mkdtemp(prefix="storm-", dir=str(hosts.workdir)))
    gw = hosts.gw()
    peer = hosts.peer()
    peer.call("initiate", child="net", timeout=30)
    peer.wait_for_child("legit")
    gw.wait_for_child("legit")
    if txqueuelen is not None:
        for namespace in (hosts.gw_ns, hosts.peer_ns):
            namespace.ip("link", "set", "ipsec0", "txqueuelen", str(txqueuelen))
    # Rough length of the run, for the streams (they stop on their own): the rekeys take
    # about 0.2-1 s each on this machine, plus the gaps; stopped earlier is not a problem.
    # QUIET: seconds of the baseline spell without rekeys (a figure, not a check).
    seconds = quiet * 2 + rekeys * (gap + 1.5) + 5
    hosts_ns = (("gw", hosts.gw_ns), ("peer", hosts.peer_ns))
    drops_before = {n: drop_counters(ns) for n, ns in hosts_ns}
    esp_before = {d.config.name: d.call("stats")["esp"] for d in (gw, peer)}
    processes = _start_streams(hosts, workdir, seconds, udp_rate, tcp)
    started = time.monotonic()
    started_wall = started  # CLOCK_MONOTONIC, as the datagrams' stamps
    time.sleep(2.0)  # TCP past slow start
    # Baseline: retransmissions in a quiet spell (no rekey) of QUIET seconds.
    base0 = retrans_segs(hosts.peer_ns)
    time.sleep(quiet)
    baseline = retrans_segs(hosts.peer_ns) - base0
    records: list[dict[str, Any]] = []
    for index in range(rekeys):
        kind, who = KINDS[index % len(KINDS)]
        r0 = retrans_segs(hosts.peer_ns)
        t0 = time.monotonic() - started
        took = rekey_once(gw, peer, kind, who, settle_timeout)
        time.sleep(gap)
        r1 = retrans_segs(hosts.peer_ns)
        records.append(
            {"n": index + 1, "kind": kind, "by": who, "at_s": round(t0, 2),
             "settled_s": round(took, 3), "tcp_retrans": r1 - r0,
             "window_s": round(took + gap, 2)}
        )  # fmt: skip
        if progress:
            progress(records[-1])
    rekeys_done_at = time.monotonic()
    rekey_seconds = rekeys_done_at - started
    # The streams go on 2 s after the last rekey, then stop (the senders through the stop
    # file, so they still send their END markers; iperf3 on SIGINT prints its summary).
    time.sleep(2.0)
    (workdir / "stop").touch()
    if tcp and processes["iperf_client"].running():
        os.killpg(processes["iperf_client"].pid, signal.SIGINT)
    for name in ("udp_to_gw_send", "udp_to_peer_send", "udp_to_gw_recv", "udp_to_peer_recv"):
        _wait(processes[name], seconds + 150)
    udp = {}
    for name in ("udp_to_gw", "udp_to_peer"):
        path = workdir / f"{name}.json"
        if not path.exists():
            raise StormError(f"{name}: no report\n{processes[name + '_recv'].log_text()}")
        udp[name] = json.loads(path.read_text())
    tcp_figures: dict[str, Any] = {}
    if tcp:
        _wait(processes["iperf_client"], 60)
        _wait(processes["iperf_server"], 10)
        tcp_figures["mbits"] = _iperf_mbits(processes["iperf_client"].log_text())
    counts = {d.config.name: sa_counts(d)[:2] for d in (gw, peer)}
    esp_after = {d.config.name: d.call("stats")["esp"] for d in (gw, peer)}
    esp_drops = {
        name: {k: v - esp_before[name].get(k, 0) for k, v in after.items()
               if isinstance(v, int) and v != esp_before[name].get(k, 0)
               and "packets" not in k and "bytes" not in k}
        for name, after in esp_after.items()
    }  # fmt: skip
    drops_after = {n: drop_counters(ns) for n, ns in hosts_ns}
    drops = {
        host: {k: v - drops_before[host].get(k, 0) for k, v in after.items()
               if v != drops_before[host].get(k, 0)}
        for host, after in drops_after.items()
    }  # fmt: skip
    # When each lost datagram was sent, in seconds since the streams started, and whether
    # a rekey window (request to settled + gap) holds it.
    windows = [(r["at_s"], r["at_s"] + r["window_s"]) for r in records]
    lost_at = []
    for report in udp.values():
        for stamp in report["lost_near_ns"]:
            if stamp is None:
                continue
            at = stamp / 1e9 - started_wall
            lost_at.append((round(at, 2), any(a - 0.2 <= at <= b for a, b in windows)))
    daemon_healthy(gw)
    daemon_healthy(peer)
    retrans = [r["tcp_retrans"] for r in records]
    windows = [r["window_s"] for r in records]
    per_kind: dict[str, list[float]] = {}
    for record in records:
        per_kind.setdefault(f"{record['kind']}/{record['by']}", []).append(record["settled_s"])
    # Where each lost datagram was: the rekey whose window holds its send time.
    return {
        "rekeys": rekeys,
        "by_kind": {k: len(v) for k, v in per_kind.items()},
        "settled_s_median": {k: round(statistics.median(v), 3) for k, v in per_kind.items()},
        "settled_s_max": round(max(r["settled_s"] for r in records), 3) if records else None,
        "udp": udp,
        "udp_lost": sum(u["lost"] for u in udp.values()),
        "udp_sent": sum(u["sent"] for u in udp.values()),
        "tcp": tcp_figures,
        "tcp_retrans_per_rekey": {
            "median": statistics.median(retrans) if retrans else None,
            "max": max(retrans) if retrans else None,
            "total": sum(retrans),
            "mean_window_s": round(statistics.mean(windows), 2) if windows else None,
        },
        "tcp_retrans_quiet": {"segments": baseline, "seconds": quiet},
        "sa_counts_after": counts,
        "drops": drops,
        "daemon_esp_counters": esp_drops,
        "udp_lost_at_s_in_rekey_window": lost_at,
        "rekeys_ended_at_s": round(rekey_seconds, 1),
        "streams_s": round(seconds, 1),
        "rekey_phase_s": round(rekey_seconds, 1),
        "records": records,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.hardening.rekey_storm",
        description="Rekeys (Child and IKE, both initiators, collisions) under a full-speed "
        "TCP stream and numbered UDP streams between two aioipsec daemons (needs root).",
    )
    parser.add_argument("--rekeys", type=int, default=100)
    parser.add_argument("--gap", type=float, default=1.0, help="seconds between rekeys")
    parser.add_argument("--udp-rate", type=float, default=1000.0, help="datagrams/s each way")
    parser.add_argument("--no-tcp", action="store_true", help="no iperf3 stream")
    parser.add_argument("--txqueuelen", type=int, help="set the TUN devices' queue length")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="storm-", dir="/tmp"))
    try:
        with Lab("storm") as lab:
            hosts = build_hosts(lab, workdir)
            try:
                result = run_storm(
                    hosts, args.rekeys, gap=args.gap, udp_rate=args.udp_rate,
                    tcp=not args.no_tcp, txqueuelen=args.txqueuelen,
                    progress=lambda r: print(json.dumps(r), flush=True),
                )  # fmt: skip
            except StormError as exc:
                print(f"FAILED: {exc}", file=sys.stderr)
                return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    summary = {k: v for k, v in result.items() if k != "records"}
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    ok = result["udp_lost"] == 0 and all(c == (1, 1) for c in result["sa_counts_after"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
