"""Data-plane measurements through one tunnel between two network namespaces.

One *stack* is a pair of implementations (or none, for the plain veth ceiling)::

    strongswan   charon + kernel-libipsec  <->  charon + kernel-libipsec   (the baseline)
    aioipsec     aioipsec daemon           <->  aioipsec daemon  (``workers = 1``: one process)
    aioipsec-w2  the same with ``[daemon] workers = 2`` (an encrypt worker process each)
    mixed        aioipsec daemon           <->  charon + kernel-libipsec
    wireguard-go wireguard-go              <->  wireguard-go  (Debian's userspace WireGuard)
    plain        no IPsec: the inner subnets routed over the veth (the ceiling)

:func:`measure_stack` builds the topology of the interop harness (initiator and responder
joined by a veth, inner addresses 10.1.0.1 and 10.2.0.1 on loopback), establishes the tunnel
(IKE aes256gcm16-prfsha256-x25519, PSK, ESP aes256gcm16, always UDP-encapsulated on port 4500
as kernel-libipsec does, inner MTU 1400) and measures from the initiator's side:

* iperf3 TCP, 1 and 4 streams, each direction (``-R`` is responder -> initiator);
* UDP packet rate for 1400- and 64-octet IP packets: :mod:`bench.udpgen` (UDP GSO sender,
  GRO receiver: it saturates the tunnels, unlike iperf3's one ``send`` per datagram) at
  doubling rates until the loss passes ``loss_limit_percent`` or the sender cannot offer
  more, then halving the interval between the last rate within the limit and the first
  above it: the highest received rate with loss at or below the limit;
* ping RTT idle, and under load (during the 1-stream TCP run);
* CPU seconds per GB moved, for each daemon, from ``/proc/PID/stat`` (utime + stime of every
  process in the daemon's process group, so a helper process would be counted too).

Everything the run needs is torn down by the :class:`~aioipsec.netns.Lab`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aioipsec.interop.ours import AioipsecPeer
from aioipsec.interop.peers import InteropPeer, make_peer, swanctl_conf
from aioipsec.interop.scenario import Implementation, Scenario, Side, Topology
from aioipsec.interop.topology import build_topology
from aioipsec.netns import BackgroundProcess, Lab, Namespace

STACKS: dict[str, tuple[Implementation, Implementation] | None] = {
    "strongswan": ("charon", "charon"),
    "aioipsec": ("aioipsec", "aioipsec"),
    "aioipsec-w2": ("aioipsec", "aioipsec"),  # [daemon] workers = 2 on both ends
    "mixed": ("aioipsec", "charon"),
    "wireguard-go": None,  # not IKE: set up by Tunnel._wireguard
    "plain": None,
}
# One interface name per side: every namespace sees /var/run/wireguard/NAME.sock (the
# namespaces share the file system), so two "wg0" would collide.
WIREGUARD_NAMES = {"initiator": "wgi", "responder": "wgr"}
WIREGUARD_PORT = 51820
INNER_MTU = 1400
# [daemon] workers of our daemons per stack (aioipsec.runtime.workers); others: the default.
WORKERS = {"aioipsec-w2": 2}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_RTT = re.compile(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms")
_RECEIVED = re.compile(r"(\d+) packets transmitted, (\d+) received")


@dataclass
class Settings:
    """How long and how hard to measure (the smoke test uses tiny values)."""

    tcp_seconds: float = 5.0  # iperf3 takes whole seconds (0 would mean "forever")
    tcp_streams: tuple[int, ...] = (1, 4)
    udp_packet_sizes: tuple[int, ...] = (1400, 64)  # IP packet sizes
    udp_step_seconds: float = 1.5
    udp_start_pps: int = 20000
    udp_growth: float = 2.0
    udp_max_steps: int = 9
    loss_limit_percent: float = 0.1
    ping_count: int = 20
    ping_interval: float = 0.05
    daemon_log_level: str = "warning"
    # Run our daemons from this source tree (an exported commit) instead of the checkout:
    # bench.ab compares two versions this way.
    source_tree: str | None = None


@dataclass
class TcpResult:
    streams: int
    reverse: bool  # True: responder -> initiator (iperf3 -R)
    mbit_per_s: float
    retransmits: int | None
    bytes: int
    cpu_initiator_s: float | None
    cpu_responder_s: float | None
    # Busy share of all the machine's cores during the run (/proc/stat): how much room
    # was left for another process (a data-plane worker) to use.
    machine_busy: float | None = None
    # CPU seconds per process of each side's daemon, by role (daemon, worker, ...).
    cpu_processes: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def direction(self) -> str:
        return "r->i" if self.reverse else "i->r"

    def cpu_seconds_per_gb(self, side: Side) -> float | None:
        cpu = self.cpu_initiator_s if side == "initiator" else self.cpu_responder_s
        if cpu is None or self.bytes <= 0:
            return None
        return cpu / (self.bytes / 1e9)


@dataclass
class UdpStep:
    offered_pps: int
    received_pps: float
    lost_percent: float
    sent_pps: float | None = None  # what the generator managed to offer


REPO = Path(__file__).resolve().parent.parent


@dataclass
class UdpResult:
    packet_size: int
    best_pps: float  # highest received rate of a step with loss <= the limit (0: none)
    steps: list[UdpStep] = field(default_factory=list)
    generator_limited: bool = False  # the sender could not offer more (not the tunnel)


@dataclass
class StackRun:
    """Everything one stack measured in one round."""

    stack: str
    round: int
    tcp: list[TcpResult] = field(default_factory=list)
    udp: list[UdpResult] = field(default_factory=list)
    ping_idle_ms: float | None = None
    ping_load_ms: float | None = None
    ping_load_lost: int = 0
    establish_seconds: float | None = None
    tun_mtu: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    started_at: float = 0.0

    def tcp_mbit(self, streams: int, reverse: bool) -> float | None:
        for result in self.tcp:
            if result.streams == streams and result.reverse == reverse:
                return result.mbit_per_s
        return None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StackRun:
        run = cls(**{k: v for k, v in data.items() if k not in ("tcp", "udp")})
        run.tcp = [TcpResult(**t) for t in data.get("tcp", [])]
        run.udp = [
            UdpResult(
                u["packet_size"],
                u["best_pps"],
                [UdpStep(**s) for s in u.get("steps", [])],
                u.get("generator_limited", False),
            )
            for u in data.get("udp", [])
        ]
        return run


# --- CPU accounting ---------------------------------------------------------------------------


def machine_cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores from /proc/stat's first line."""
    with open("/proc/stat") as stat_file:
        values = [int(v) for v in stat_file.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already in user
    return total - idle, total


def group_processes(pgid: int) -> Iterator[tuple[str, bytes, list[bytes]]]:
    """(pid, /proc/PID/stat, its fields from field 3 on) of every live process in process
    group PGID."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat_file:
                stat = stat_file.read()
        except OSError:
            continue
        # The command name (field 2) may contain spaces: split after its closing parenthesis.
        fields = stat[stat.rindex(b")") + 2 :].split()
        # fields[0] is field 3 (state): pgrp is field 5.
        if int(fields[2]) == pgid:
            yield entry, stat, fields


def process_group_cpu_seconds(pgid: int) -> float:
    """utime + stime (fields 14/15) of every live process in process group PGID (all
    threads included)."""
    ticks = sum(int(fields[11]) + int(fields[12]) for _, _, fields in group_processes(pgid))
    return ticks / CLOCK_TICKS


def process_group_cpu_by_role(pgid: int) -> dict[str, float]:
    """utime + stime of each process of process group PGID, by role: our daemon, its
    encrypt worker (``aioipsec.runtime.workers``), or the command's name (charon...)."""
    seconds: dict[str, float] = {}
    for pid, stat, fields in group_processes(pgid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline_file:
                cmdline = cmdline_file.read()
        except OSError:
            continue
        if b"aioipsec.runtime.workers" in cmdline:
            role = "worker"
        elif b"aioipsec" in cmdline:
            role = "daemon"
        else:
            role = stat[stat.index(b"(") + 1 : stat.rindex(b")")].decode(errors="replace")
        ticks = int(fields[11]) + int(fields[12])
        seconds[role] = seconds.get(role, 0.0) + ticks / CLOCK_TICKS
    return seconds


# --- peers ------------------------------------------------------------------------------------


class QuietAioipsecPeer(AioipsecPeer):
    """Our daemon as the interop harness starts it, but logging at LOG_LEVEL (the harness's
    peer logs at debug level, which a benchmark should not pay for)."""

    def __init__(
        self, lab: Lab, namespace: Namespace, workdir: Path, log_level: str,
        source_tree: str | None = None, workers: int | None = None,
    ) -> None:  # fmt: skip
        super().__init__(lab, namespace, workdir)
        self.log_level = log_level
        self.source_tree = source_tree
        self.workers = workers

    def daemon_table(self) -> str:
        return (
            "# written by bench.netbench\n"
            "[daemon]\n"
            f'control_socket = "{self.control_socket}"\n'
            'tun_name = "ipsec0"\n'
            + (f"workers = {self.workers}\n" if self.workers is not None else "")
        )

    def daemon_argv(self) -> list[str]:
        start = [sys.executable, "-m", "aioipsec.daemon"]
        if self.source_tree is not None:
            # The checkout is installed in editable mode: its import finder would win over
            # PYTHONPATH, so it is taken out before the tree is put first.
            start = [sys.executable, "-c", _FROM_TREE, self.source_tree]
        return [
            *start,
            "-c",
            str(self.toml_path),
            "--swanctl-conf",
            str(self.swanctl_path),
            "--log-level",
            self.log_level,
        ]


_FROM_TREE = (
    "import runpy, sys; "
    "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f)]; "
    "sys.path.insert(0, sys.argv.pop(1)); "
    "runpy.run_module('aioipsec.daemon', run_name='__main__', alter_sys=True)"
)


def peer_process(peer: InteropPeer) -> BackgroundProcess | None:
    """The daemon process of PEER (charon's or ours)."""
    if isinstance(peer, AioipsecPeer):
        return peer.process
    charon = getattr(peer, "charon", None)
    return charon.process if charon is not None else None


# --- measurements -----------------------------------------------------------------------------


class Tunnel:
    """Two namespaces joined by a veth, with (or, for ``plain``, without) a tunnel."""

    def __init__(self, lab: Lab, stack: str, workdir: Path, settings: Settings) -> None:
        if stack not in STACKS:
            raise ValueError(f"unknown stack {stack!r} (one of {', '.join(STACKS)})")
        self.lab = lab
        self.stack = stack
        self.workdir = workdir
        self.settings = settings
        implementations = STACKS[stack] or ("charon", "charon")
        self.scenario = Scenario(
            name="bench",
            initiator=implementations[0],
            responder=implementations[1],
            encap=True,  # kernel-libipsec always encapsulates: so do we, for a fair race
        )
        self.topology: Topology = build_topology(lab, self.scenario)
        self.peers: dict[Side, InteropPeer] = {}
        self.pgids: dict[Side, int] = {}
        self.establish_seconds: float | None = None

    @property
    def initiator_inner(self) -> str:
        return self.scenario.inner_address("initiator")

    @property
    def responder_inner(self) -> str:
        return self.scenario.inner_address("responder")

    def up(self) -> None:
        if self.stack == "wireguard-go":
            self._wireguard()
            return
        if STACKS[self.stack] is None:
            self._plain_routes()
            return
        for side in ("initiator", "responder"):
            namespace = self.topology.namespace(side)
            workdir = self.workdir / side
            peer: InteropPeer
            if self.scenario.implementation(side) == "aioipsec":
                peer = QuietAioipsecPeer(
                    self.lab, namespace, workdir, self.settings.daemon_log_level,
                    self.settings.source_tree, WORKERS.get(self.stack),
                )  # fmt: skip
            else:
                peer = make_peer(self.lab, namespace, workdir, self.scenario, side)
            peer.start()
            peer.load(swanctl_conf(self.scenario, self.topology, side))
            self.peers[side] = peer
            process = peer_process(peer)
            if process is not None:
                self.pgids[side] = process.pid
        name = self.scenario.connection_name
        started = time.monotonic()
        self.peers["initiator"].initiate(name, name)
        deadline = started + 30.0
        while time.monotonic() < deadline:
            if all(_installed(peer.list_sas(), name) for peer in self.peers.values()):
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(
                f"{self.stack}: tunnel not established in 30 s\n"
                + "\n".join(f"--- {s} ---\n{p.log_tail(30)}" for s, p in self.peers.items())
            )
        self.establish_seconds = time.monotonic() - started
        # The inner MTU of the comparison is kernel-libipsec's 1400 on every TUN device.
        sides: tuple[Side, Side] = ("initiator", "responder")
        for side in sides:
            self.topology.namespace(side).ip("link", "set", "dev", "ipsec0", "mtu", str(INNER_MTU))
        self._wait_ping()

    def _plain_routes(self) -> None:
        topology = self.topology
        topology.initiator.ip(
            "route", "add", self.scenario.responder_subnet, "via", topology.responder_outer,
            "mtu", str(INNER_MTU),
        )  # fmt: skip
        topology.responder.ip(
            "route", "add", self.scenario.initiator_subnet, "via", topology.initiator_outer,
            "mtu", str(INNER_MTU),
        )  # fmt: skip
        self._wait_ping()

    def _wireguard(self) -> None:
        """One wireguard-go per namespace (foreground, so the Lab stops it), keys made by
        ``wg``, the peer's inner subnet routed into the interface; inner MTU as the others."""
        for tool in ("wireguard-go", "wg"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"{tool} is not installed (make debian-deps installs it)")
        sides: tuple[Side, Side] = ("initiator", "responder")
        keys: dict[str, tuple[Path, str]] = {}
        self.workdir.mkdir(parents=True, exist_ok=True)
        for side in sides:
            private = subprocess.run(
                ["wg", "genkey"], capture_output=True, text=True, check=True
            ).stdout.strip()
            public = subprocess.run(
                ["wg", "pubkey"], input=private, capture_output=True, text=True, check=True
            ).stdout.strip()
            path = self.workdir / f"wireguard-{side}.key"
            path.write_text(private + "\n")
            path.chmod(0o600)
            keys[side] = (path, public)
        outer = {"initiator": self.topology.initiator_outer,
                 "responder": self.topology.responder_outer}  # fmt: skip
        subnet = {"initiator": self.scenario.initiator_subnet,
                  "responder": self.scenario.responder_subnet}  # fmt: skip
        started = time.monotonic()
        for side in sides:
            namespace = self.topology.namespace(side)
            name = WIREGUARD_NAMES[side]
            process = self.lab.start(
                namespace, ["wireguard-go", "-f", name],
                log=self.workdir / f"wireguard-go-{side}.log",
            )  # fmt: skip
            self.pgids[side] = process.pid
            for _ in range(100):
                if namespace.ip("link", "show", name, check=False).returncode == 0:
                    break
                time.sleep(0.05)
            else:
                raise RuntimeError(f"wireguard-go made no interface {name}")
            other: Side = "responder" if side == "initiator" else "initiator"
            namespace.run(
                "wg", "set", name, "private-key", str(keys[side][0]),
                "listen-port", str(WIREGUARD_PORT), "peer", keys[other][1],
                "allowed-ips", subnet[other], "endpoint", f"{outer[other]}:{WIREGUARD_PORT}",
            )  # fmt: skip
            namespace.ip("link", "set", "dev", name, "mtu", str(INNER_MTU), "up")
            namespace.ip("route", "add", subnet[other], "dev", name)
        self._wait_ping()
        self.establish_seconds = time.monotonic() - started

    def tun_device(self, side: Side) -> str:
        return WIREGUARD_NAMES[side] if self.stack == "wireguard-go" else "ipsec0"

    def _wait_ping(self) -> None:
        for _ in range(20):
            result = self.topology.initiator.run(
                "ping", "-c1", "-W1", "-I", self.initiator_inner, self.responder_inner,
                check=False,
            )  # fmt: skip
            if result.returncode == 0:
                return
        raise RuntimeError(f"{self.stack}: no ping through the tunnel")

    def tun_mtus(self) -> dict[str, int]:
        mtus: dict[str, int] = {}
        sides: tuple[Side, Side] = ("initiator", "responder")
        for side in sides:
            namespace = self.topology.namespace(side)
            device = self.tun_device(side)
            out = namespace.run("cat", f"/sys/class/net/{device}/mtu", check=False).stdout.strip()
            if out.isdigit():
                mtus[side] = int(out)
        return mtus

    def cpu_seconds(self) -> dict[str, float]:
        return {side: process_group_cpu_seconds(pgid) for side, pgid in self.pgids.items()}

    def cpu_by_role(self) -> dict[str, dict[str, float]]:
        return {side: process_group_cpu_by_role(pgid) for side, pgid in self.pgids.items()}

    # --- iperf3 --------------------------------------------------------------------------------

    @contextmanager
    def iperf_server(self) -> Iterator[None]:
        process = self.lab.start(
            self.topology.responder,
            ["iperf3", "-s", "-B", self.responder_inner],
            log=self.workdir / f"iperf3-server-{time.monotonic_ns()}.log",
        )
        try:
            for _ in range(50):
                result = self.topology.responder.run("ss", "-ltnH", "sport = :5201", check=False)
                if result.stdout.strip():
                    break
                time.sleep(0.05)
            yield
        finally:
            process.stop()

    def _iperf(self, *args: str, seconds: float) -> dict[str, Any]:
        argv = [
            "iperf3", "-c", self.responder_inner, "-B", self.initiator_inner, "-J",
            "-t", str(max(1, round(seconds))), *args,
        ]  # fmt: skip
        result = self.topology.initiator.run(*argv, check=False, timeout=seconds + 40)
        try:
            data = json.loads(result.stdout)
        except json.JSONDecodeError:
            return {"error": (result.stderr or result.stdout).strip()[:300]}
        return data

    def tcp(self, streams: int, reverse: bool) -> TcpResult:
        before = self.cpu_seconds()
        roles_before = self.cpu_by_role()
        busy_before, total_before = machine_cpu_ticks()
        args = ["-P", str(streams)] + (["-R"] if reverse else [])
        data = self._iperf(*args, seconds=self.settings.tcp_seconds)
        after = self.cpu_seconds()
        roles_after = self.cpu_by_role()
        busy_after, total_after = machine_cpu_ticks()
        if "error" in data:
            raise RuntimeError(f"iperf3 TCP {args}: {data['error']}")
        end = data["end"]
        received = end["sum_received"]
        cpu = {side: after[side] - before[side] for side in after}
        return TcpResult(
            streams=streams,
            reverse=reverse,
            mbit_per_s=received["bits_per_second"] / 1e6,
            retransmits=end.get("sum_sent", {}).get("retransmits"),
            bytes=int(received["bytes"]),
            cpu_initiator_s=cpu.get("initiator"),
            cpu_responder_s=cpu.get("responder"),
            machine_busy=(busy_after - busy_before) / max(1, total_after - total_before),
            cpu_processes={
                side: {
                    role: seconds - roles_before.get(side, {}).get(role, 0.0)
                    for role, seconds in roles.items()
                }
                for side, roles in roles_after.items()
            },
        )

    def _udpgen(self, namespace: Namespace, *args: str) -> list[str]:
        return namespace.exec_argv([sys.executable, "-m", "bench.udpgen", *args])

    def udp_step(self, packet_size: int, pps: int) -> UdpStep:
        """bench.udpgen at PPS for udp_step_seconds: the receiver in the responder's
        namespace counts until 0.5 s pass without a datagram."""
        seconds = self.settings.udp_step_seconds
        environment = {**os.environ, "PYTHONPATH": str(REPO)}
        receiver = subprocess.Popen(
            self._udpgen(self.topology.responder, "receive", "--bind", self.responder_inner,
                         "--idle", "0.5", "--limit", str(seconds + 30)),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment,
        )  # fmt: skip
        try:
            assert receiver.stdout is not None
            receiver.stdout.readline()  # {"listening": true}
            sent = subprocess.run(
                self._udpgen(self.topology.initiator, "send", "--dst", self.responder_inner,
                             "--src", self.initiator_inner, "--size", str(packet_size),
                             "--pps", str(pps), "--seconds", str(seconds)),
                capture_output=True, text=True, env=environment, timeout=seconds + 30,
                check=False,
            )  # fmt: skip
            out, err = receiver.communicate(timeout=seconds + 40)
        finally:
            if receiver.poll() is None:
                receiver.kill()
        try:
            offered = json.loads(sent.stdout.strip().splitlines()[-1])
            counted = json.loads(out.strip().splitlines()[-1])
        except (json.JSONDecodeError, IndexError):
            raise RuntimeError(
                f"udpgen {packet_size} B at {pps} pps: {(sent.stderr + err).strip()[-300:]}"
            ) from None
        total = offered["sent"]
        elapsed = offered["seconds"] or seconds
        received = min(counted["received"], total)
        return UdpStep(
            offered_pps=pps,
            received_pps=received / elapsed,
            lost_percent=100.0 * (total - received) / total if total else 100.0,
            sent_pps=total / elapsed,
        )

    def udp_sweep(self, packet_size: int) -> UdpResult:
        """Doubling rates until the loss passes the limit, then bisection between the last
        good and the first bad rate (to 5 %); stops early when the sender cannot offer the
        rate asked (then the figure is the generator's, and says so)."""
        settings = self.settings
        result = UdpResult(packet_size, 0.0)
        good, bad = 0.0, 0.0
        pps = float(settings.udp_start_pps)
        for _ in range(settings.udp_max_steps):
            step = self.udp_step(packet_size, int(pps))
            result.steps.append(step)
            if step.lost_percent <= settings.loss_limit_percent:
                result.best_pps = max(result.best_pps, step.received_pps)
                good = pps
                if step.sent_pps is not None and step.sent_pps < 0.9 * pps:
                    result.generator_limited = True
                    break
            else:
                bad = pps
            if not bad:
                pps *= settings.udp_growth
            elif bad - good <= 0.05 * bad:
                break
            else:
                pps = (good + bad) / 2
        return result

    # --- ping ----------------------------------------------------------------------------------

    def ping_argv(self, count: int, interval: float) -> list[str]:
        return self.topology.initiator.exec_argv(
            ["ping", "-q", "-c", str(count), "-i", f"{interval:g}", "-W", "2",
             "-I", self.initiator_inner, self.responder_inner]
        )  # fmt: skip

    def ping_idle(self) -> float | None:
        settings = self.settings
        result = subprocess.run(
            self.ping_argv(settings.ping_count, settings.ping_interval),
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        return _ping_avg(result.stdout)[0]

    def tcp_with_ping(self, streams: int, reverse: bool) -> tuple[TcpResult, float | None, int]:
        """A TCP run with a ping every 0.1 s beside it: RTT under load and pings lost."""
        count = max(1, int(self.settings.tcp_seconds / 0.1) - 5)
        ping = subprocess.Popen(
            self.ping_argv(count, 0.1), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        try:
            tcp = self.tcp(streams, reverse)
        finally:
            out, _ = ping.communicate(timeout=self.settings.tcp_seconds + 30)
        avg, sent, received = _ping_avg(out)
        return tcp, avg, sent - received


def _installed(sas: dict[str, Any], name: str) -> bool:
    ike = sas.get(name, {})
    return ike.get("state") == "ESTABLISHED" and any(
        child.get("state") == "INSTALLED" for child in ike.get("child-sas", {}).values()
    )


def _ping_avg(output: str) -> tuple[float | None, int, int]:
    rtt = _RTT.search(output)
    counts = _RECEIVED.search(output)
    sent, received = (int(counts.group(1)), int(counts.group(2))) if counts else (0, 0)
    return (float(rtt.group(2)) if rtt else None), sent, received


def measure_stack(stack: str, round_number: int, workdir: Path, settings: Settings) -> StackRun:
    """Build STACK in fresh namespaces, measure everything, tear it down."""
    run = StackRun(stack=stack, round=round_number, started_at=time.time())
    workdir.mkdir(parents=True, exist_ok=True)
    with Lab(f"b{round_number}{stack[:2]}") as lab:
        tunnel = Tunnel(lab, stack, workdir, settings)
        try:
            tunnel.up()
        except Exception as exc:
            run.problems.append(f"set-up: {exc}")
            return run
        run.establish_seconds = tunnel.establish_seconds
        run.tun_mtu = tunnel.tun_mtus()
        run.ping_idle_ms = tunnel.ping_idle()
        with tunnel.iperf_server():
            for streams in settings.tcp_streams:
                for reverse in (False, True):
                    try:
                        if streams == 1 and not reverse:
                            result, rtt, lost = tunnel.tcp_with_ping(streams, reverse)
                            run.ping_load_ms, run.ping_load_lost = rtt, lost
                        else:
                            result = tunnel.tcp(streams, reverse)
                        run.tcp.append(result)
                    except Exception as exc:
                        run.problems.append(f"tcp {streams} {reverse}: {exc}")
            for size in settings.udp_packet_sizes:
                try:
                    run.udp.append(tunnel.udp_sweep(size))
                except Exception as exc:
                    run.problems.append(f"udp {size}: {exc}")
        for side, peer in tunnel.peers.items():
            process = peer_process(peer)
            if process is not None and not process.running():
                run.problems.append(f"{side} daemon died: {peer.log_tail(20)}")
    return run
