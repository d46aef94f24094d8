"""IKE and ESP on the wire: the UDP 500/4500 and raw ESP sockets bound and read, IKE
messages sent from the right socket (RFC 7296 sec. 2.23), port 4500 demultiplexed
(RFC 3948 sec. 2.2), NAT keepalives (RFC 3948 sec. 2.3)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from typing import Any

import structlog

from aioipsec.daemon.state import DaemonState, StartupError
from aioipsec.daemon.stream import ike_message_record
from aioipsec.doctor import describe_port_holders
from aioipsec.runtime.pmtu import PathMtu, dont_fragment, fragments_allowed, open_no_df_twins
from aioipsec.runtime.sockets import DrainingSocket, IkePort500, RawEspSocket, open_udp_socket
from nat_t.demux import Udp4500Kind, classify
from nat_t.keepalive import KeepaliveTimer

log = structlog.get_logger("aioipsec.daemon")

NON_ESP_MARKER = b"\x00\x00\x00\x00"  # RFC 3948 sec. 2.2


class IkeTransport(DaemonState):
    """The daemon's sockets: binding, receiving, sending IKE, NAT keepalives."""

    async def _bind_ports(self) -> list[tuple[socket.AddressFamily, IkePort500, Any]]:
        """Bind UDP 500 (asyncio-dgram) and 4500 (plain socket) for IPv4 and IPv6."""
        families = [("0.0.0.0", socket.AF_INET)]
        if socket.has_ipv6 and _ipv6_enabled():
            families.append(("::", socket.AF_INET6))
        bound = []
        for host, family in families:
            with _port_in_use(host, self.ike_port, "ike_port"):
                port500 = await IkePort500.bind(host, self.ike_port)
            self._cleanups.append(port500.close)
            with _port_in_use(host, self.nat_t_port, "nat_t_port"):
                udp_socket = open_udp_socket(host, self.nat_t_port)
            self._cleanups.append(udp_socket.close)
            bound.append((family, port500, udp_socket))
        return bound

    def _start_sockets(self, bound: list[tuple[socket.AddressFamily, IkePort500, Any]]) -> None:
        """Start reading the bound ports, and the raw ESP sockets."""
        assert self.datapath is not None
        for family, port500, udp_socket in bound:
            self.port500.append(port500)
            self._tasks.append(
                self.loop.create_task(
                    port500.receive_forever(self._received_on_500), name=f"ike500-{family.name}"
                )
            )
            udp = DrainingSocket(
                udp_socket,
                self._received_on_4500,
                f"udp{self.nat_t_port}-{'v6' if family == socket.AF_INET6 else 'v4'}",
            )
            udp.start(self.loop)
            self.port4500.append(udp)
            self._cleanups.append(udp.close)
            raw = RawEspSocket(family, self.datapath.esp_received_raw)
            raw.start(self.loop)
            self.raw_esp.append(raw)
            self._cleanups.append(raw.close)
        self.datapath.set_sockets(self.port4500, self.raw_esp)
        # copy_df: DF on the outer packets, a send-only twin for those without; the tunnel
        # MTU follows the path MTU.
        self.pmtu = PathMtu(self.datapath.table, self.datapath.update_tun_mtu)
        for outer in (*self.port4500, *self.raw_esp):
            dont_fragment(outer.sock)
            outer.on_too_big = self.pmtu.too_big
        open_no_df_twins((*self.port4500, *self.raw_esp))
        self._tasks.append(self.loop.create_task(self.pmtu.run(), name="path-mtu"))

    def _source_address(self, remote_host: str) -> str | None:
        """The address our IKE sockets (bound to the wildcard) send from to reach
        REMOTE_HOST: the engine hashes it into NAT_DETECTION_SOURCE_IP (RFC 7296 sec. 2.23)
        whatever local_addrs says. None when no route leads there."""
        local = self.local_addresses.local_for(remote_host)
        return None if local in ("0.0.0.0", "::") else local

    def _received_on_500(
        self, data: memoryview, remote: tuple[str, int], destination: str | None = None
    ) -> None:
        assert self.driver is not None
        # The address the request was sent to (IP_PKTINFO), which NAT detection hashes and
        # our answers leave from; the routing table's choice only when the kernel gave none.
        local = (destination or self.local_addresses.local_for(remote[0]), self.ike_port)
        self.counters.message(data, incoming=True)
        if self._subscribers:
            self._publish(ike_message_record(bytes(data), "in", local, remote))
        self.driver.feed(bytes(data), remote, local)

    def _received_on_4500(self, data: memoryview, remote: tuple[str, int]) -> None:
        """Port 4500 demultiplexing, RFC 3948 sec. 2.2 / 2.3."""
        assert self.driver is not None and self.datapath is not None
        kind = classify(data)
        if kind is Udp4500Kind.ESP:
            self.datapath.esp_received_udp(data, remote)
        elif kind is Udp4500Kind.IKE:
            local = (self.local_addresses.local_for(remote[0]), self.nat_t_port)
            self.counters.message(data[4:], incoming=True)
            if self._subscribers:
                self._publish(ike_message_record(bytes(data[4:]), "in", local, remote))
            self.driver.feed(bytes(data[4:]), remote, local)
        elif kind is Udp4500Kind.KEEPALIVE:
            self.datapath.keepalives_in += 1
        else:
            self.datapath.esp_drops += 1

    def _send_ike(self, data: bytes, local: tuple[str, int], remote: tuple[str, int]) -> None:
        self.counters.message(data, incoming=False)
        if self._subscribers:
            self._publish(ike_message_record(data, "out", local, remote))
        family = socket.AF_INET6 if ":" in remote[0] else socket.AF_INET
        # The local port decides the socket (a NAT may map port 500 to anything, RFC 7296
        # sec. 2.23): from 4500 with the non-ESP marker, from 500 without.
        if local[1] == self.nat_t_port:
            for udp in self.port4500:
                if udp.sock.family == family:
                    with fragments_allowed(udp.sock):  # DF is for ESP (runtime/pmtu.py)
                        udp.sendto(NON_ESP_MARKER + data, remote)
                    return
        else:
            source = None if local[0] in ("0.0.0.0", "::", "%any") else local[0]
            for port500 in self.port500:
                if port500.family == family:
                    port500.sendto(data, remote, source)
                    return
        log.warning("no socket to send an IKE message", remote=remote)

    async def _keepalive(self, ike_sa_id: int) -> None:
        """NAT keepalives (RFC 3948 sec. 2.3) while a NAT is in front of us, as their own
        task. ESP sent to the peer refreshes the NAT mapping too: the SA's packet counter is
        read once per interval (nothing is added to the per-packet path)."""
        assert self.datapath is not None
        timer = KeepaliveTimer(self.loop.time(), self.keepalive_interval)
        last_packets = -1
        while True:
            due = timer.next_due()
            await asyncio.sleep(max(0.0, (due or self.loop.time()) - self.loop.time()))
            state = self.ike_sas.get(ike_sa_id)
            if state is None:
                return
            packets = self.datapath.packets_out_of(ike_sa_id)
            if packets != last_packets and last_packets >= 0:
                timer.packet_sent(self.loop.time())
            last_packets = packets
            keepalive = timer.poll(self.loop.time())
            if keepalive is None:
                continue
            remote = self.datapath.peer_address(ike_sa_id) or state.established.remote_addr
            family = socket.AF_INET6 if ":" in remote[0] else socket.AF_INET
            for udp in self.port4500:
                if udp.sock.family == family:
                    udp.sendto(keepalive, remote)
                    self.datapath.keepalives_out += 1


@contextlib.contextmanager
def _port_in_use(host: str, port: int, setting: str) -> Any:
    """Turn EADDRINUSE into a StartupError that names the process holding the port (as
    ``aioipsec doctor`` does) and what to do."""
    try:
        yield
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise

        raise StartupError(
            f"UDP {host} port {port} is already in use{describe_port_holders(port)}: stop "
            f"that IKE daemon, or set {setting} in [daemon] to another port"
        ) from None


def _ipv6_enabled() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False
