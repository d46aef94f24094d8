"""A cluster in network namespaces: the end-to-end proof of docs/cluster.md and
``make demo-cluster``.

Three aioipsec gateways (10.78.0.1-3 outside, 10.79.0.1-3 on the protected LAN) share one
Redis (in the router's namespace, 10.78.0.254:6379) and one LAN with a server
(10.79.0.100). Road-warrior clients (10.78.0.11...) are aioipsec daemons, and one is
strongSwan's charon; each knows only gateway 1 and asks for a virtual IP (``vips =
0.0.0.0``). The gateways share one pool on the LAN's subnet (:data:`POOL`), its leases in
Redis, and answer ARP for their clients' VIPs on the LAN (``proxy_arp_interface``), so
the server reaches a client with no route to the pool; a gateway that takes a client
over announces the VIP (gratuitous ARP). Clients use dpd_action = restart.

``python -m aioipsec.cluster.lab`` (``make demo-cluster``) connects the clients, starts a
TCP transfer from one client to the server and pings that client's VIP from the server,
drains the client's gateway while printing the IKE SAs per gateway once a second, checks
that every byte arrived (SHA-256), that the client kept its VIP and how many pings were
lost, and that the server's neighbour entry for the VIP now holds the new gateway's MAC;
then SIGKILLs a gateway and prints how long its clients take to come back through DPD;
last, a client leaves and the server can no longer reach its VIP.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aioipsec.controlclient import ControlError
from aioipsec.interop.charon import Charon
from aioipsec.interop.ours import AioipsecPeer
from aioipsec.interop.pskconf import psk_conf, psk_connection
from aioipsec.netns import BackgroundProcess, Lab, Namespace

GATEWAYS = ("10.78.0.1", "10.78.0.2", "10.78.0.3")
REDIS = "10.78.0.254"
SERVER = "10.79.0.100"
GATEWAY_ID = "vpn.example.net"
PSK = "cluster lab pre-shared key, long enough for the policy"
PORT = 5001
POOL = "10.79.0.32-10.79.0.95"  # on the LAN's subnet: the server reaches VIPs by proxy ARP

SINK = r"""
import hashlib, socket, sys
server = socket.socket(); server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((sys.argv[1], int(sys.argv[2]))); server.listen(1)
print("listening", flush=True)
conn, peer = server.accept(); digest = hashlib.sha256(); total = 0
while True:
    data = conn.recv(65536)
    if not data:
        break
    digest.update(data); total += len(data)
print(f"received {total} {digest.hexdigest()}", flush=True)
"""

SOURCE = r"""
import hashlib, random, socket, sys, time
source, server = sys.argv[1], sys.argv[2]
port, total, seconds = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
generator = random.Random(15); digest = hashlib.sha256(); sent = 0; chunk = 16384
sock = socket.create_connection((server, port), timeout=60, source_address=(source, 0))
start = time.monotonic()
while sent < total:
    data = generator.randbytes(min(chunk, total - sent))
    sock.sendall(data); digest.update(data); sent += len(data)
    ahead = sent / total * seconds - (time.monotonic() - start)
    if ahead > 0:
        time.sleep(ahead)
sock.shutdown(socket.SHUT_WR); sock.recv(1); sock.close()
print(f"sent {sent} {digest.hexdigest()}", flush=True)
"""


def client_conf(address: str) -> str:
    connection = psk_connection(local=address, remote=GATEWAYS[0], local_id=f"client-{address}",
                                remote_id=GATEWAY_ID, remote_ts=f"{SERVER}/32", vips="0.0.0.0",
                                dpd_delay="2s", dpd_action="restart")  # fmt: skip
    return psk_conf({"rw": connection}, psk=PSK, ids=[GATEWAY_ID])


def gateway_conf(address: str) -> str:
    """One connection for every client: the remote selector is the client's lease."""
    connection = psk_connection(local=address, remote="%any", local_id=GATEWAY_ID,
                                remote_id="%any", local_ts=f"{SERVER}/32", pools="lan")  # fmt: skip
    return psk_conf({"rw": connection}, psk=PSK, ids=[GATEWAY_ID], pools={"lan": {"addrs": POOL}})


class Daemon(AioipsecPeer):
    """Our daemon, logging at info level without key tables."""

    def daemon_argv(self) -> list[str]:
        # No key tables and info logging: a lab run, not a debugging session.
        argv = super().daemon_argv()
        cut = argv.index("--save-keys")
        kept = [*argv[:cut], *argv[cut + 2 :]][:-2]  # without --log-level debug
        return [*kept, "--log-level", "info"]


@dataclass
class Client:
    name: str
    address: str
    peer: Any  # Daemon or Charon
    inner: str = ""  # its virtual IP, once connected

    def vip(self) -> str | None:
        """The virtual IP of its established IKE SA, or None."""
        try:
            sas = self.peer.list_sas()
        except Exception:  # the daemon busy or restarting
            return None
        for sa in sas.values():
            if sa.get("state") != "ESTABLISHED":
                continue
            if sa.get("local-vips"):  # charon's listing
                return str(sa["local-vips"][0])
            for child in sa.get("child-sas", {}).values():  # ours: the narrowed selector
                if child.get("local-ts"):
                    return str(child["local-ts"][0]).split("/")[0]
        return None

    def gateway(self) -> str | None:
        """The gateway of its one established IKE SA with a Child SA, or None."""
        try:
            sas = self.peer.list_sas()
        except Exception:  # the daemon busy or restarting: not up
            return None
        up = [s for s in sas.values() if s.get("state") == "ESTABLISHED" and s.get("child-sas")]
        return str(up[0]["remote-host"]) if len(up) == 1 else None


@dataclass
class ClusterLab:
    lab: Lab
    workdir: Path
    router: Namespace
    server: Namespace
    gateways: dict[str, Daemon] = field(default_factory=dict)
    clients: list[Client] = field(default_factory=list)
    redis: BackgroundProcess | None = None
    log: Callable[[str], None] = print

    @classmethod
    def build(cls, lab: Lab, workdir: Path, log: Callable[[str], None] = print) -> ClusterLab:
        router = lab.namespace("n")
        router.enable_forwarding()
        # A bridge takes the lowest MAC of its ports unless it has its own: as veths joined,
        # it changed, and a gateway whose entry for Redis held the old MAC (kept REACHABLE
        # by its TCP traffic) lost Redis for good. Fixed MACs for both bridges.
        router.ip("link", "add", "br0", "address", "02:00:00:78:00:fe", "type", "bridge")
        router.ip("address", "add", f"{REDIS}/24", "dev", "br0")
        router.link_up("br0")
        server = lab.namespace("s")
        server.ip("link", "add", "lan0", "address", "02:00:00:79:00:64", "type", "bridge")
        server.ip("address", "add", f"{SERVER}/24", "dev", "lan0")
        server.link_up("lan0")
        # The server's neighbour timers stay the kernel's: a VIP's entry moves to the new
        # gateway's MAC because that gateway announces it (gratuitous ARP), not by expiry.
        return cls(lab, workdir, router, server, log=log)

    def _outside(self, namespace: Namespace, address: str, role: str) -> None:
        _, router_end = self.lab.veth(namespace, f"{address}/24", self.router, None,
                                      right_name=f"o-{role}")  # fmt: skip
        self.router.ip("link", "set", router_end, "master", "br0")

    def start_redis(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is missing: make debian-deps installs it")
        self.redis = self.lab.start(
            self.router,
            [binary, "--bind", REDIS, "--port", "6379", "--protected-mode", "no",
             "--save", "", "--appendonly", "no", "--dir", str(self.workdir)],
            log=self.workdir / "redis.log",
        )  # fmt: skip
        if not self.redis.wait_for_log("Ready to accept connections", timeout=10):
            raise RuntimeError(f"redis-server did not start: {self.redis.log_text()[-500:]}")

    def add_gateway(self, index: int, policy: str = "least-loaded") -> Daemon:
        address = GATEWAYS[index]
        namespace = self.lab.namespace(f"g{index + 1}")
        self._outside(namespace, address, f"g{index + 1}")
        lan = f"10.79.0.{index + 1}"
        self.lab.veth(namespace, f"{lan}/24", self.server, None,
                      left_name="lan", right_name=f"l-g{index + 1}")  # fmt: skip
        self.server.ip("link", "set", f"l-g{index + 1}", "master", "lan0")
        namespace.enable_forwarding()
        for key in ("net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.lan.rp_filter=0"):
            namespace.run("sysctl", "-q", "-w", key)
        extra = (
            'proxy_arp_interface = "lan"\n'  # [daemon]: the clients' VIPs answered on the LAN
            "\n[cluster]\n"
            f'name = "lab"\nmember = "{address}"\nstore = "redis://{REDIS}:6379/0"\n'
            f'policy = "{policy}"\nheartbeat = "0.5s"\nttl = "2s"\ndrain_rate = 20\n'
        )
        daemon = Daemon(self.lab, namespace, self.workdir / f"g{index + 1}", extra_toml=extra)
        daemon.load(gateway_conf(address))
        self.gateways[address] = daemon
        return daemon

    def wait_spares(self, timeout: float = 15.0) -> None:
        """Until every gateway holds addresses reserved in Redis: a new store (or one that
        restarted empty) reserves nothing for its grace period (aioipsec/cluster/leases.py)."""
        deadline = time.monotonic() + timeout
        waiting = list(self.gateways)
        while waiting and time.monotonic() < deadline:
            waiting = [
                gateway
                for gateway, daemon in self.gateways.items()
                if daemon.process is not None and not daemon.call("pools")[0].get("spares")
            ]
            if waiting:
                time.sleep(0.2)
        if waiting:
            raise AssertionError(f"no address reserved in Redis for {waiting} in {timeout} s")

    def add_client(self, index: int, *, charon: bool = False) -> Client:
        address = f"10.78.0.{11 + index}"
        name = f"c{index + 1}"
        namespace = self.lab.namespace(name)
        self._outside(namespace, address, name)
        self.wait_spares()
        conf = client_conf(address)
        peer: Any
        if charon:
            peer = Charon(self.lab, namespace, self.workdir / name)
            peer.start()
            peer.load(conf)
            peer.swanctl("--initiate", "--child", "net", "--timeout", "20", check=False,
                         timeout=25)  # fmt: skip
        else:
            peer = Daemon(self.lab, namespace, self.workdir / name)
            peer.load(conf)
            peer.call("initiate", ike="rw", child="net", timeout=25.0)
        client = Client(name, address, peer)
        client.inner = client.vip() or ""
        self.clients.append(client)
        return client

    def lan_mac(self, gateway: str) -> str:
        return (
            self.gateways[gateway].namespace.run("cat", "/sys/class/net/lan/address").stdout.strip()
        )

    def server_neighbour(self, address: str) -> str | None:
        """The server's neighbour entry for ``address``: its MAC, or None."""
        out = self.server.run("ip", "-j", "neigh", "show", "to", address, "dev", "lan0").stdout
        entries = json.loads(out or "[]")
        return str(entries[0]["lladdr"]) if entries and "lladdr" in entries[0] else None

    def ping(self, address: str) -> Any:
        """Pings from the server to ``address`` every 0.1 s until stopped (SIGINT)."""
        argv = ["ping", "-n", "-D", "-O", "-i", "0.1", "-W", "1", address]
        return self.lab.start(self.server, argv, log=self.workdir / f"ping-{address}.log")

    def spread(self) -> dict[str, int]:
        counts = dict.fromkeys(self.gateways, 0)
        for client in self.clients:
            gateway = client.gateway()
            if gateway in counts:
                counts[gateway] += 1
        return counts

    def wait_all_up(self, timeout: float, avoid: str | None = None) -> float:
        """Seconds until every client is up at one gateway (not ``avoid``)."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            where = [c.gateway() for c in self.clients]
            if all(g is not None and g != avoid for g in where):
                return time.monotonic() - start
            time.sleep(0.25)
        raise AssertionError(f"clients not all up within {timeout} s: {self.describe()}")

    def describe(self) -> str:
        return ", ".join(f"{c.name}@{c.gateway()}" for c in self.clients)

    def transfer(self, client: Client, total: int, seconds: float) -> tuple[Any, Any]:
        """Start a paced TCP transfer of ``total`` octets from ``client`` to the server."""
        sink = self.lab.start(self.server, [sys.executable, "-c", SINK, SERVER, str(PORT)],
                              log=self.workdir / "sink.log")  # fmt: skip
        if not sink.wait_for_log("listening", timeout=10):
            raise RuntimeError("the TCP sink did not start")
        namespace = client.peer.namespace
        source = self.lab.start(
            namespace,
            [sys.executable, "-c", SOURCE, client.inner, SERVER, str(PORT), str(total),
             str(seconds)],
            log=self.workdir / "source.log",
        )  # fmt: skip
        return sink, source


@dataclass
class DrainResult:
    drained: str
    drain_seconds: float
    sent: str
    received: str
    spread_before: dict[str, int]
    spread_after: dict[str, int]
    vip_before: str = ""
    vip_after: str | None = None
    pings_sent: int = 0
    pings_lost: int = -1
    neighbour_mac: str | None = None  # the server's entry for the VIP after the move
    new_gateway_mac: str = ""


def ping_counts(text: str) -> tuple[int, int]:
    """(transmitted, received) from ping's summary."""
    found = re.search(r"(\d+) packets transmitted, (\d+) received", text)
    return (int(found[1]), int(found[2])) if found else (0, 0)


def drain_with_transfer(
    cluster: ClusterLab, total: int = 6 << 20, seconds: float = 8.0, ticker: bool = False
) -> DrainResult:
    """The transfer client's gateway is drained while the transfer runs."""
    mover = cluster.clients[0]
    drained = mover.gateway()
    assert drained is not None, cluster.describe()
    before = cluster.spread()
    if not cluster.server.wait_reachable(mover.inner, timeout=10):
        raise AssertionError(f"the server cannot reach {mover.name}'s VIP {mover.inner}")
    pinger = cluster.ping(mover.inner)
    sink, source = cluster.transfer(mover, total, seconds)
    time.sleep(seconds / 4)
    # The drained gateway refuses while it sees no live member to send clients to; on a
    # loaded machine a member's heartbeat can be a moment late, so ask again for a while.
    deadline = time.monotonic() + 15
    while True:
        try:
            answer = cluster.gateways[drained].call("drain")
            break
        except ControlError as error:
            if "no other member" not in str(error) or time.monotonic() > deadline:
                raise
            cluster.log(f"drain {drained} refused ({error}); asking again")
            time.sleep(0.5)
    cluster.log(f"drain {drained}: {answer['message']}")
    start = time.monotonic()
    while time.monotonic() - start < 60:
        if ticker:
            cluster.log(f"  {time.monotonic() - start:5.1f} s  IKE SAs per gateway: "
                        f"{cluster.spread()}")  # fmt: skip
        if all(c.gateway() not in (None, drained) for c in cluster.clients):
            break
        time.sleep(1.0 if ticker else 0.25)
    drain_seconds = time.monotonic() - start
    for process in (source, sink):
        deadline = time.monotonic() + seconds + 60
        while process.running() and time.monotonic() < deadline:
            time.sleep(0.2)
    sent = source.log_text().strip().splitlines()[-1:] or ["(nothing)"]
    received = sink.log_text().strip().splitlines()[-1:] or ["(nothing)"]
    pinger.stop(sig=signal.SIGINT)
    transmitted, answered = ping_counts(pinger.log_text())
    now_at = mover.gateway()
    return DrainResult(drained, drain_seconds, sent[0], received[0], before, cluster.spread(),
                       vip_before=mover.inner, vip_after=mover.vip(), pings_sent=transmitted,
                       pings_lost=transmitted - answered,
                       neighbour_mac=cluster.server_neighbour(mover.inner),
                       new_gateway_mac=cluster.lan_mac(now_at) if now_at else "")  # fmt: skip


def kill_and_recover(cluster: ClusterLab, timeout: float = 60.0) -> tuple[str, float, list[str]]:
    """SIGKILL a gateway (not the entry gateway 1; preferably without charon's client) and
    time its clients' return. Returns (gateway, seconds, names of its clients)."""
    where = {c.name: c.gateway() for c in cluster.clients}
    charon_at = {where[c.name] for c in cluster.clients if isinstance(c.peer, Charon)}
    candidates = [g for g in GATEWAYS[1:] if any(v == g for v in where.values())]
    candidates.sort(key=lambda g: g in charon_at)
    victim = candidates[0]
    orphans = [name for name, g in where.items() if g == victim]
    process = cluster.gateways[victim].process
    assert process is not None
    process.stop(sig=signal.SIGKILL)
    cluster.gateways[victim].process = None
    cluster.log(f"SIGKILL {victim}; its clients: {', '.join(orphans)}")
    start = time.monotonic()
    cluster.wait_all_up(timeout, avoid=victim)
    return victim, time.monotonic() - start, orphans


def client_leaves(cluster: ClusterLab, timeout: float = 20.0) -> str:
    """The transfer client terminates: its gateway drops the proxy entry, the lease goes
    offline in Redis, and the server's pings to the VIP stop being answered. Then a
    gateway serving clients stops (SIGTERM) and leaves no proxy entry behind."""
    mover = cluster.clients[0]
    gateway = mover.gateway()
    assert gateway is not None, cluster.describe()
    assert cluster.server.wait_reachable(mover.inner, timeout=10), mover
    mover.peer.terminate("rw")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pools = cluster.gateways[gateway].call("pools")
        leases = {x["address"]: x for x in pools[0].get("leases", [])}
        proxied = cluster.gateways[gateway].namespace.run("ip", "neigh", "show", "proxy").stdout
        if leases.get(mover.inner, {}).get("status") == "offline" and mover.inner not in proxied:
            break
        time.sleep(0.25)
    else:
        raise AssertionError(f"{mover.inner} still leased online or proxied at {gateway}")
    answered = cluster.server.run("ping", "-c", "3", "-W", "1", mover.inner, check=False)
    assert answered.returncode != 0, f"{mover.inner} still answers after the client left"
    # A gateway that stops (SIGTERM) leaves no proxy entry behind, though it serves clients.
    serving = next(g for g in GATEWAYS if cluster.gateways[g].process is not None
                   and cluster.spread().get(g))  # fmt: skip
    cluster.gateways[serving].stop()
    left = cluster.gateways[serving].namespace.run("ip", "neigh", "show", "proxy").stdout
    assert not left.strip(), f"{serving} left proxy entries at exit: {left}"
    return (
        f"{mover.name} left: {mover.inner} offline in the cluster's leases, unreachable; "
        f"{serving} stopped with clients: no proxy entry left"
    )


def run(workdir: Path, *, clients: int = 4, ticker: bool = False,
        log: Callable[[str], None] = print) -> dict[str, Any]:  # fmt: skip
    """The whole proof; returns its figures (raises AssertionError when a check fails)."""
    with Lab("cl") as lab:
        cluster = ClusterLab.build(lab, workdir, log)
        cluster.start_redis()
        for index in range(3):
            cluster.add_gateway(index)
        for gateway in cluster.gateways.values():
            gateway.call("stats")
        time.sleep(1.0)  # every member has published once
        for index in range(clients):
            cluster.add_client(index, charon=index == clients - 1)
            time.sleep(0.6)  # the load of the last placement is published
        cluster.wait_all_up(30)
        log(f"clients up: {cluster.describe()}  spread {cluster.spread()}")
        vips = {c.name: c.inner for c in cluster.clients}
        assert "" not in vips.values() and len(set(vips.values())) == clients, vips
        result = drain_with_transfer(cluster, ticker=ticker)
        log(f"drained {result.drained} in {result.drain_seconds:.1f} s: {result.spread_after}")
        log(f"transfer: {result.sent} / {result.received}")
        log(f"VIP {result.vip_before} -> {result.vip_after}: {result.pings_lost} of "
            f"{result.pings_sent} pings from the server lost; its neighbour entry "
            f"{result.neighbour_mac} (new gateway's LAN MAC {result.new_gateway_mac})")  # fmt: skip
        assert result.vip_after == result.vip_before, result
        assert result.neighbour_mac == result.new_gateway_mac, result
        sent_total, sent_hash = result.sent.split()[1:3]
        received_total, received_hash = result.received.split()[1:3]
        assert (sent_total, sent_hash) == (received_total, received_hash), result
        assert result.spread_after[result.drained] == 0, result
        cluster.gateways[result.drained].call("drain", cancel=True)
        time.sleep(1.0)
        victim, recovery, orphans = kill_and_recover(cluster)
        log(f"clients of {victim} back after {recovery:.1f} s: {cluster.describe()}")
        # Every client has its first VIP still: moved by the drain, or reconnected after the
        # SIGKILL (the lease table in Redis is bound to the identity, not to a member).
        changed = {c.name: (vips[c.name], c.vip()) for c in cluster.clients
                   if c.vip() != vips[c.name]}  # fmt: skip
        log(f"clients whose VIP changed: {changed or 'none'}")
        leaves = client_leaves(cluster)
        log(leaves)
        return {
            "drained": result.drained,
            "drain_seconds": round(result.drain_seconds, 1),
            "bytes": int(sent_total),
            "bytes_lost": int(sent_total) - int(received_total),
            "sha256_equal": sent_hash == received_hash,
            "killed": victim,
            "orphans": orphans,
            "recovery_seconds": round(recovery, 1),
            "vip_kept": result.vip_after == result.vip_before,
            "vips_changed": changed,
            "pings": result.pings_sent,
            "pings_lost": result.pings_lost,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aioipsec.cluster.lab",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--clients", type=int, default=4, help="road warriors (the last: charon)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    from aioipsec.netns import ensure_root

    ensure_root()
    workdir = Path(tempfile.mkdtemp(prefix="aioipsec-cluster-", dir="/tmp"))
    try:
        figures = run(workdir, clients=args.clients, ticker=True)
    except AssertionError as error:
        print(f"FAILED: {error}\n(logs kept in {workdir})", file=sys.stderr)
        return 1
    print("figures:", figures)
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
