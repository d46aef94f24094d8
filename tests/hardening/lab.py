"""The hardening lab: our daemon ("gw") in a namespace, a legitimate aioipsec peer ("peer")
and a hostile host ("evil") on a second link, all real sockets.

    peer 192.168.70.1 ==veth== 192.168.70.2 gw 192.168.71.2 ==veth== 192.168.71.1 evil
    (10.1.0.1 inside)          (10.2.0.1 inside)                      (10.3.0.1 inside)

gw runs ``python -m aioipsec.daemon`` with two connections: ``legit`` for peer and ``probe``
for evil. evil speaks IKE through :class:`Prober`: our sans-I/O engine as the client, its
datagrams sent over a real UDP socket in evil's namespace, with a hook that may change,
drop, duplicate or replace each one: that is how hostile inputs reach the daemon with
valid keys (past the ICV). Spoofed floods come from raw sockets in evil (source addresses
in 198.18.0.0/15 that gw routes back towards evil, where they die).
"""

from __future__ import annotations

import json
import random
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aioipsec.netns import Lab, Namespace
from ikev2.config import AuthConfig, ChildConfig, IkeConfig
from ikev2.dispatcher import Dispatcher
from ikev2.events import ChildSaEstablished, Event, IkeSaEstablished
from tests.e2e.helpers import OurDaemon, assert_ping

REPO_ROOT = Path(__file__).resolve().parents[2]
PSK = "hardening-secret-not-for-production-0123456789"
PROBE_PSK = "probe-secret-not-for-production-0123456789"
PEER, GW_PEER_SIDE = "192.168.70.1", "192.168.70.2"
EVIL, GW_EVIL_SIDE = "192.168.71.1", "192.168.71.2"
PEER_INNER, GW_INNER, EVIL_INNER = "10.1.0.1", "10.2.0.1", "10.3.0.1"
SPOOF_NET = "198.18.0.0/15"


def _toml_connection(
    name: str,
    local: str,
    remote: str,
    local_id: str,
    remote_id: str,
    local_ts: str,
    remote_ts: str,
    psk: str,
    *,
    start_action: str = "none",
    connection: dict[str, Any] | None = None,
    child: dict[str, Any] | None = None,
) -> str:
    connection_lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in (connection or {}).items())
    child_lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in (child or {}).items())
    return f"""
[connections.{name}]
local_addrs = ["{local}"]
remote_addrs = ["{remote}"]
proposals = ["aes256gcm16-prfsha256-x25519"]
{connection_lines}
[connections.{name}.local]
auth = "psk"
id = "{local_id}"

[connections.{name}.remote]
auth = "psk"
id = "{remote_id}"

[connections.{name}.children.net]
local_ts = ["{local_ts}"]
remote_ts = ["{remote_ts}"]
esp_proposals = ["aes256gcm16"]
start_action = "{start_action}"
{child_lines}
[secrets.ike-{name}]
id-local = "{local_id}"
id-remote = "{remote_id}"
secret = "{psk}"
"""


def gw_config(
    workdir: Path,
    *,
    legit_connection: dict[str, Any] | None = None,
    legit_child: dict[str, Any] | None = None,
    daemon: dict[str, Any] | None = None,
    roadwarrior: bool = False,
    start_action: str = "none",
) -> Path:
    daemon_lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in (daemon or {}).items())
    text = f"""# tests/hardening: the daemon under test
[daemon]
control_socket = "{workdir / "control.sock"}"
tun_name = "ipsec0"
{daemon_lines}"""
    text += _toml_connection(
        "legit", GW_PEER_SIDE, PEER, "gw.example", "peer.example", "10.2.0.0/24",
        "10.1.0.0/24", PSK, connection=legit_connection, child=legit_child,
        start_action=start_action,
    )  # fmt: skip
    text += _toml_connection(
        "probe", GW_EVIL_SIDE, EVIL, "gw.example", "probe.example", "10.2.0.0/24",
        "10.3.0.0/24", PROBE_PSK,
    )  # fmt: skip
    if roadwarrior:
        # Anyone may start IKE_SA_INIT here (a remote-access gateway): what floods aim at.
        text += _toml_connection(
            "rw", GW_EVIL_SIDE, "%any", "gw.example", "rw.example", "10.2.0.0/24",
            "10.4.0.0/24", PROBE_PSK,
        )  # fmt: skip
    path = workdir / "gw.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


def peer_config(
    workdir: Path,
    *,
    connection: dict[str, Any] | None = None,
    child: dict[str, Any] | None = None,
    start_action: str = "none",
    daemon: dict[str, Any] | None = None,
) -> Path:
    daemon_lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in (daemon or {}).items())
    text = f"""# tests/hardening: the legitimate peer
[daemon]
control_socket = "{workdir / "control.sock"}"
tun_name = "ipsec0"
{daemon_lines}"""
    text += _toml_connection(
        "legit", PEER, GW_PEER_SIDE, "peer.example", "gw.example", "10.1.0.0/24",
        "10.2.0.0/24", PSK, start_action=start_action, connection=connection, child=child,
    )  # fmt: skip
    path = workdir / "peer.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


@dataclass
class Hosts:
    lab: Lab
    workdir: Path
    gw_ns: Namespace
    peer_ns: Namespace
    evil_ns: Namespace
    gw_peer_dev: str
    peer_dev: str
    gw_evil_dev: str
    evil_dev: str
    daemons: list[OurDaemon] = field(default_factory=list)

    def daemon(self, namespace: Namespace, config: Path, name: str) -> OurDaemon:
        directory = config.parent
        daemon = OurDaemon(self.lab, namespace, config, directory)
        daemon.start()
        self.daemons.append(daemon)
        return daemon

    def gw(self, **options: Any) -> OurDaemon:
        directory = self.workdir / "gw"
        directory.mkdir(exist_ok=True)
        return self.daemon(self.gw_ns, gw_config(directory, **options), "gw")

    def peer(self, **options: Any) -> OurDaemon:
        directory = self.workdir / "peer"
        directory.mkdir(exist_ok=True)
        return self.daemon(self.peer_ns, peer_config(directory, **options), "peer")


def build_hosts(lab: Lab, workdir: Path) -> Hosts:
    gw_ns, peer_ns, evil_ns = lab.namespace("gw"), lab.namespace("peer"), lab.namespace("evil")
    peer_dev, gw_peer_dev = lab.veth(peer_ns, f"{PEER}/24", gw_ns, f"{GW_PEER_SIDE}/24")
    evil_dev, gw_evil_dev = lab.veth(evil_ns, f"{EVIL}/24", gw_ns, f"{GW_EVIL_SIDE}/24")
    peer_ns.add_address("lo", f"{PEER_INNER}/32")
    gw_ns.add_address("lo", f"{GW_INNER}/32")
    evil_ns.add_address("lo", f"{EVIL_INNER}/32")
    # Answers to spoofed sources go back towards evil, which does not forward: they die there.
    gw_ns.ip("route", "add", SPOOF_NET, "via", EVIL)
    return Hosts(lab, workdir, gw_ns, peer_ns, evil_ns, gw_peer_dev, peer_dev, gw_evil_dev,
                 evil_dev)  # fmt: skip


# --------------------------------------------------------------------------- the prober

Hook = Callable[[bytes], list[bytes]]


def probe_config(**overrides: Any) -> IkeConfig:
    config = IkeConfig(
        name="probe",
        local_addrs=[EVIL],
        remote_addrs=[GW_EVIL_SIDE],
        local=AuthConfig(auth="psk", id="probe.example"),
        remote=AuthConfig(auth="psk", id="gw.example"),
        children=[ChildConfig(name="net", local_ts=["10.3.0.0/24"], remote_ts=["10.2.0.0/24"])],
        retransmit_timeout=1.0,
        retransmit_tries=3,
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


class Prober:
    """Our engine as a client in evil's namespace, over a real UDP socket to the daemon.

    ``hook(datagram) -> datagrams`` sees every datagram before it leaves (change, drop,
    duplicate); ``received`` keeps every datagram the daemon sent back."""

    def __init__(self, namespace: Namespace, config: IkeConfig | None = None, port: int = 500):
        self.config = config or probe_config(local_port=port)
        self.port = port
        with namespace.entered():
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind((EVIL, port))
        self.local = (EVIL, port)
        self.remote = (GW_EVIL_SIDE, 500)
        self.dispatcher = Dispatcher(
            [self.config], lambda local, remote: PROBE_PSK.encode(), rng=random.randbytes
        )
        self.events: list[Event] = []
        self.received: list[bytes] = []
        self.hook: Hook | None = None
        # Received datagrams for which this returns True are not given to the engine
        # (a loss on the way back, decided per datagram).
        self.lose_received: Callable[[bytes], bool] | None = None

    def close(self) -> None:
        self.sock.close()

    def send_raw(self, data: bytes, port: int = 500) -> None:
        self.sock.sendto(data, (GW_EVIL_SIDE, port))

    def receive(self, timeout: float) -> list[bytes]:
        """Datagrams from the daemon within TIMEOUT seconds (also kept in ``received``)."""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.sock.settimeout(remaining)
            try:
                data, _ = self.sock.recvfrom(65535)
            except TimeoutError:
                break
            if self.port == 4500:
                data = data[4:] if data[:4] == b"\0\0\0\0" else data
            out.append(data)
        self.received += out
        return out

    def run(self, until: Callable[[], bool], timeout: float = 15.0, feed: bool = True) -> bool:
        """Drive the engine (sends, receives, timers) until UNTIL() or TIMEOUT."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = time.monotonic()
            timer = self.dispatcher.get_timer()
            if timer is not None and timer <= now:
                self.dispatcher.handle_timer(now)
            for datagram in self.dispatcher.datagrams_to_send(now):
                out = [datagram.data] if self.hook is None else self.hook(datagram.data)
                for data in out:
                    if datagram.remote_addr[1] == 4500 and self.port == 4500:
                        data = b"\0\0\0\0" + data
                    self.sock.sendto(data, self.remote)
            while (event := self.dispatcher.next_event()) is not None:
                self.events.append(event)
            if until():
                return True
            self.sock.settimeout(0.05)
            try:
                data, remote = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            self.received.append(data)
            if self.lose_received is not None and self.lose_received(data):
                continue
            if feed:
                if self.port == 4500:
                    data = data[4:]
                self.dispatcher.receive_datagram(data, remote, self.local, time.monotonic())
        return until()

    def initiate(self) -> int:
        return self.dispatcher.initiate("probe", "net", now=time.monotonic())

    def established(self) -> bool:
        return any(isinstance(e, ChildSaEstablished) for e in self.events)

    def establish(self, timeout: float = 15.0) -> tuple[int, ChildSaEstablished]:
        ike_sa_id = self.initiate()
        assert self.run(self.established, timeout), "the prober could not establish"
        child = next(e for e in self.events if isinstance(e, ChildSaEstablished))
        ike = next(e for e in self.events if isinstance(e, IkeSaEstablished))
        assert ike.ike_sa_id == ike_sa_id
        return ike_sa_id, child


def init_request(namespace: Namespace) -> bytes:
    """The IKE_SA_INIT request our engine sends for the probe connection (not sent): the
    template of the floods and of the half-open attacker."""
    prober = Prober(namespace)
    captured: list[bytes] = []
    prober.hook = lambda data: captured.append(data) or []
    prober.initiate()
    prober.run(lambda: bool(captured), timeout=5)
    prober.close()
    return captured[0]


def raw_socket(namespace: Namespace, protocol: int) -> socket.socket:
    with namespace.entered():
        return socket.socket(socket.AF_INET, socket.SOCK_RAW, protocol)


def spoofed_udp(source: str, destination: str, sport: int, dport: int, payload: bytes) -> bytes:
    """An IPv4/UDP packet from any source (for an IP_HDRINCL raw socket); the kernel fills
    the IP checksum, UDP checksum 0 (allowed for IPv4, RFC 768)."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
        socket.inet_aton(source), socket.inet_aton(destination),
    )  # fmt: skip
    return header + udp


def daemon_healthy(daemon: OurDaemon) -> dict[str, Any]:
    """The daemon still runs, answers its control socket and logged no internal error."""
    assert daemon.process is not None and daemon.process.running(), daemon.log_tail()
    stats = daemon.call("stats")
    text = daemon.log_text()
    for needle in ("engine failed", "Traceback", "event handler failed"):
        assert needle not in text, f"{needle!r} in the daemon's log:\n{daemon.log_tail(80)}"
    return stats


def rss_kib(daemon: OurDaemon) -> int:
    """Resident memory of the daemon's Python process (the child of ``ip netns exec``)."""
    assert daemon.process is not None
    pid = daemon.process.pid
    for _ in range(3):
        status = Path(f"/proc/{pid}/status").read_text()
        if "python" in Path(f"/proc/{pid}/comm").read_text():
            break
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if not children:
            break
        pid = int(children[0])
    status = Path(f"/proc/{pid}/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def daemon_pid(daemon: OurDaemon) -> int:
    assert daemon.process is not None
    pid = daemon.process.pid
    for _ in range(3):
        if "python" in Path(f"/proc/{pid}/comm").read_text():
            return pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if not children:
            break
        pid = int(children[0])
    return pid


def initiate(daemon: OurDaemon, wait: float) -> dict[str, Any]:
    """``initiate`` with the daemon-side wait set (the e2e helper's ``timeout`` is the socket's)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(wait + 15)
        sock.connect(str(daemon.control_socket))
        request = {"command": "initiate", "args": {"child": "net", "timeout": wait}}
        sock.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    response = json.loads(data)
    assert response.get("ok"), f"initiate failed: {response}\n{daemon.log_tail()}"
    return response["result"]


def tunnel_up(hosts: Hosts) -> tuple[OurDaemon, OurDaemon]:
    """Start both daemons, the peer initiates ``legit``: both list the Child SA and a ping
    crosses the tunnel. Returns (gateway, peer)."""
    gw = hosts.gw()
    peer = hosts.peer()
    peer.call("initiate", child="net", timeout=30)
    peer.wait_for_child("legit")
    gw.wait_for_child("legit")
    assert_ping(hosts.peer_ns, PEER_INNER, GW_INNER, count=2)
    return gw, peer
