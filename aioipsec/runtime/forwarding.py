"""Forwarding: the per-packet functions of the data path, TUN -> ESP -> socket and back.

Outbound (:meth:`Forwarder.tun_readable`, ``loop.add_reader`` on the TUN descriptor,
drained until empty, at most 256 reads a turn):
    read one inner packet (or a TSO super packet, cut into segments by
    ``tun.offload.segment_fast``: :meth:`Forwarder.enable_tso`) ->
    :meth:`ChildTable.outbound` (``Spd.decide``: the first matching policy, then ONE
    dictionary lookup, reqid -> :class:`ChildEntry`, which holds everything the packet
    needs) -> :meth:`Forwarder.send_protected`: too big for the
    tunnel and DF set? answer ICMP "fragmentation needed" / "packet too big" with the
    tunnel MTU into the TUN (RFC 1191, RFC 4443, RFC 4301 sec. 8) -> ``EspSa.encrypt_into``
    -> UDP 4500 (ESP-in-UDP, RFC 3948) through the :class:`GsoBatch`, or the raw
    protocol-50 socket. A packet matching a policy with no SA yet (``start_action =
    trap``, or an SA that went away) is held by the SPD (bounded, a few seconds) and an
    ``Acquire`` starts the negotiation: it is sent once the SA is there, never in clear.

Inbound (:meth:`Forwarder.esp_received_udp` / ``esp_received_raw``, called by the socket
readers for every ESP datagram):
    SPI -> ``ChildTable.by_spi_in`` (one lookup: SA, peer tracker, names) ->
    ``EspSa.decrypt_into`` (ICV, anti-replay, padding, and the policy check of the inner
    packet against the SA's selectors, RFC 4301 sec. 5.2) -> ``os.write`` to the TUN. An
    authenticated packet from a new outer address/port is a NAT mapping change: outbound
    traffic follows it (RFC 3948 sec. 3.5 / RFC 7296 sec. 2.23).

Events the SAs and the SPD queue on the way (lifetimes, acquires) are handed to
:meth:`ChildTable.handle_events` at the end of each call.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from aioipsec.log import RateLimitedLogger
from esp.errors import EspDrop
from esp.sa import EspSa
from tun.fragment import fragment_ipv4
from tun.icmp import build_too_big, needs_frag_needed
from tun.offload import (
    PLAIN_HEADER,
    TUN_F_CSUM,
    TUN_F_TSO4,
    TUN_F_TSO6,
    TUN_F_USO4,
    TUN_F_USO6,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VNET_HDR_SIZE,
    OffloadError,
    coalesce,
    complete_checksum,
    load_numpy,
    segment_fast,
    set_offload,
)

from .children import ChildEntry, ChildTable
from .sockets import (
    ESP_MIN_LENGTH,
    GSO_MAX_BYTES,
    GSO_MAX_SEGMENTS,
    DrainingSocket,
    RawEspSocket,
)

log = structlog.get_logger("aioipsec.datapath")

Address = tuple[str, int]
BUFFER_SIZE = 65536 + 512
_unpack_spi = struct.Struct("!I").unpack_from


@dataclass
class ForwardingCounters:
    """What is not counted per SA (the SAD/SPD count unknown SPIs, held packets...)."""

    esp_drops: int = 0
    bypass_dropped: int = 0
    too_big_sent: int = 0
    fragmented: int = 0  # inner IPv4 packets without DF cut to the tunnel MTU
    keepalives_in: int = 0
    keepalives_out: int = 0
    nat_mapping_changes: int = 0
    send_failures: int = 0
    offload_errors: int = 0  # reads from the TUN whose virtio header did not fit the packet


class GsoBatch:
    """ESP packets for one socket and peer laid end to end in one buffer, sent with one
    ``sendmsg`` and ``UDP_SEGMENT`` (UDP GSO) instead of one ``sendto`` each.

    A bulk TCP flow hands us runs of equal-sized packets: their ESP packets are
    equal-sized too. GSO allows only the last segment to be shorter, so a batch ends at a
    change of socket or peer, at a shorter packet, before a longer one, and at GSO's
    limits (segments, octets). ``buffer[start:end]`` holds ``count`` packets, all
    ``segment`` octets long but the last.
    """

    def __init__(self) -> None:
        self.buffer = bytearray(GSO_MAX_BYTES + BUFFER_SIZE)
        self.view = memoryview(self.buffer)
        self.socket: DrainingSocket | None = None
        self.address: Address = ("", 0)
        self.start = 0
        self.end = 0
        self.segment = 0
        self.count = 0

    def add(
        self, sock: DrainingSocket, address: Address, sa: EspSa, packet: memoryview | bytearray
    ) -> None:
        """Encrypt PACKET with SA into the batch (``EspDrop`` passes through: nothing
        added); send what must leave before or because of it."""
        if self.count and (
            sock is not self.socket
            or address != self.address
            or self.end + BUFFER_SIZE > len(self.buffer)
        ):
            self.flush()
        start = self.end
        length = sa.encrypt_into(packet, self.buffer, start)
        if not self.count:
            self.socket, self.address = sock, address
            self.start, self.segment = start, length
        elif length > self.segment:
            # Longer than the batch's segments: what came before leaves now; this packet
            # starts the next batch where it lies.
            sock.send_segments(self.view[self.start : start], self.segment, self.count, address)
            self.start, self.segment, self.count = start, length, 0
        self.end = start + length
        self.count += 1
        if (
            length < self.segment
            or self.count >= GSO_MAX_SEGMENTS
            or self.end - self.start + self.segment > GSO_MAX_BYTES
        ):
            self.flush()

    def flush(self) -> None:
        if self.count and self.socket is not None:
            self.socket.send_segments(
                self.view[self.start : self.end], self.segment, self.count, self.address
            )
        self.start = self.end = self.count = 0
        self.socket = None


class Forwarder:
    """The hot functions; ``clock()`` is the daemon's time base (``engine.now``)."""

    def __init__(
        self,
        tun: Any,
        table: ChildTable,
        clock: Callable[[], float],
        *,
        on_peer_moved: Callable[[int, Address], None] | None = None,
    ) -> None:
        self.tun = tun
        self.table = table
        self._clock = clock
        # (ike_sa_id, new address) after authenticated ESP from a new NAT mapping: the
        # daemon tells the engine, so that IKE follows too (RFC 7296 sec. 2.23).
        self._on_peer_moved = on_peer_moved
        self.counters = ForwardingCounters()
        self.udp: list[DrainingSocket] = []
        self.raw: list[RawEspSocket] = []
        # The socket for a peer by (UDP encapsulation?, IPv6?): see set_sockets.
        self._sockets: dict[tuple[bool, bool], DrainingSocket] = {}
        # The TUN descriptor, looked up once (TunDevice.fileno is a Python call).
        self._tun_fd = tun.fileno()
        # A TUN device with IFF_VNET_HDR (tun.offload): every packet read or written has a
        # virtio_net_hdr first. We read TCP super packets once enable_tso has run (else plain
        # packets) and write decrypted TCP segments coalesced into GSO super packets, one
        # write and one pass of the kernel's receive path for a run of a flow instead of
        # one per segment. The run ends with the socket's drain loop
        # (``flush_tun``), so a packet that arrives alone is written at once.
        self._vnet = bool(getattr(tun, "vnet_hdr", False))
        self._read_offset = VNET_HDR_SIZE if self._vnet else 0
        # Reads with NEEDS_CSUM in their virtio header (TSO super packets, or packets whose
        # checksum the kernel left to us) go to _send_offloaded; 0 without a virtio header
        # (the first octet is then the IP version, never tested).
        self._needs_csum = VIRTIO_NET_HDR_F_NEEDS_CSUM if self._vnet else 0
        # A super packet's segments skip send_protected's per-packet decisions
        # (_send_segments), unless a subclass sends differently (SteeredForwarder hands
        # the packets of another worker's SAs over): then each goes through its own.
        self._segments_direct = type(self).send_protected is Forwarder.send_protected
        self._to_tun: list[memoryview] = []
        self._tun_buffers = [bytearray(BUFFER_SIZE)]  # os.readv's list, made once
        self.batch = GsoBatch()
        self._tun_view = memoryview(self._tun_buffers[0])
        self._out_buffer = bytearray(BUFFER_SIZE)
        self._out_view = memoryview(self._out_buffer)
        self._in_buffer = bytearray(BUFFER_SIZE)
        # Per-packet problems are logged at most once per 10 s per (SPI, reason).
        self._drop_log = RateLimitedLogger(log, interval=10.0)

    def set_sockets(self, udp: list[DrainingSocket], raw: list[RawEspSocket]) -> None:
        """The sockets ESP leaves by. ESP arriving on the UDP ones (port 4500) comes
        straight to :meth:`esp_received_udp` (``DrainingSocket.esp_handler``), not through
        the daemon's demultiplexer, which keeps IKE and keepalives."""
        self.udp, self.raw = udp, raw
        for sock in udp:
            sock.esp_handler = self.esp_received_udp
        if self._vnet:
            for sock in [*udp, *raw]:
                sock.drained = self.flush_tun
        # One dictionary lookup per packet instead of a scan that reads ``sock.family``
        # (a Python property converting to an IntEnum: ~2 % of the sender's time).
        self._sockets = {}
        for encap, sockets in ((True, udp), (False, raw)):
            for candidate in sockets:
                self._sockets.setdefault((encap, candidate.ipv6), candidate)

    def _socket_for(self, host: str, udp_encap: bool) -> DrainingSocket | None:
        return self._sockets.get((udp_encap, ":" in host))

    # ------------------------------------------------------------------ outbound

    def tun_readable(self) -> None:
        # Per packet: one readv, one SPD decision, one send_protected; everything else is
        # looked up once here (locals are the cheapest names in CPython). A packet that
        # arrives alone leaves at once: the next readv finds nothing and the batch is
        # flushed before we return to the event loop (no timer, no batching delay).
        fd = self._tun_fd
        buffers = self._tun_buffers
        view = self._tun_view
        offset = self._read_offset  # the virtio_net_hdr, when there is one
        decide = self.table.spd.decide  # ChildTable.outbound without its extra call
        forwarding = self.table.forwarding  # reqid -> ChildEntry, updated in place
        send = self.send_protected
        needs_csum = self._needs_csum
        now = self._clock()
        for _ in range(256):  # bounded: the sockets and timers get their turn
            try:
                length = os.readv(fd, buffers)
            except (BlockingIOError, InterruptedError):
                break
            if length == 0:
                break
            if view[0] & needs_csum:
                if view[1]:  # gso_type: a TSO super packet
                    self._send_offloaded(view[:length], now)
                    continue
                try:  # one packet (an ACK, a UDP datagram): its checksum, in place
                    complete_checksum(view, length)
                except OffloadError:
                    self.counters.offload_errors += 1
                    continue
            packet = view[offset:length]
            entry = decide(packet, now, forwarding)
            if type(entry) is ChildEntry:
                send(entry, packet)
            elif entry is not None:
                # BYPASS: only routes we installed lead into the TUN device, nothing is
                # sent in clear from here.
                self.counters.bypass_dropped += 1
            # None: dropped (no policy), or held for an SA being negotiated
        self.batch.flush()
        if self.table.events:
            self.table.handle_events()

    def start_offloads(self) -> None:
        """TSO reads (:meth:`enable_tso`) once numpy is imported, off the event loop's
        thread: until then the kernel segments for us, as before. Call it only after the
        process dropped its capabilities: they are per thread, and numpy's import starts a
        thread (OpenBLAS) that would keep every capability of the thread that started it."""
        if self._vnet:
            threading.Thread(target=self.enable_tso, name="tun-tso", daemon=True).start()

    def enable_tso(self) -> bool:
        """Let the kernel hand us TCP super packets of up to 64 KB (``TUNSETOFFLOAD`` TSO4/6,
        with ``TUN_F_CSUM``, which TSO needs): one read and one SPD decision per super
        packet instead of per segment; ``tun.offload.segment_fast`` cuts it up. Only with a
        virtio header and numpy (the segments' checksums; it is imported here, 50-150 ms,
        so the daemon calls this from a thread at start). Thread-safe: the ioctl changes
        only what later reads return, and every read is handled by its own header."""
        if not self._vnet or not load_numpy():
            return False
        tso = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
        try:
            # USO too (Linux 6.2+): with TUN_F_CSUM every UDP datagram's checksum is ours,
            # which costs ~2 us per 1400 octets alone; a UDP GSO send (QUIC, bench.udpgen)
            # then comes as one super packet whose datagrams' sums numpy adds at once.
            set_offload(self._tun_fd, tso | TUN_F_USO4 | TUN_F_USO6)
        except OSError:
            try:
                set_offload(self._tun_fd, tso)
            except OSError as exc:
                log.info("TUN offloads not available, reading packet by packet", error=str(exc))
                return False
        return True

    def _send_offloaded(self, frame: memoryview, now: float) -> None:
        """A TSO super packet, cut into segments with their checksums. The segments of
        one read share addresses, protocol and ports: one SPD decision for all of them
        when it protects (policy match counters then count reads)."""
        try:
            packets = segment_fast(frame)
        except OffloadError:
            self.counters.offload_errors += 1
            return
        decide = self.table.spd.decide
        forwarding = self.table.forwarding
        entry = decide(memoryview(packets[0]), now, forwarding)
        if type(entry) is ChildEntry:
            if not self._segments_direct or not self._send_segments(entry, packets):
                for packet in packets:
                    self.send_protected(entry, memoryview(packet))
            return
        # Not protected (dropped, held for an SA being negotiated, or BYPASS): each
        # segment on its own, as if read one by one.
        for index, packet in enumerate(packets):
            if index:
                entry = decide(memoryview(packet), now, forwarding)
            if type(entry) is ChildEntry:
                self.send_protected(entry, memoryview(packet))
            elif entry is not None:
                self.counters.bypass_dropped += 1

    def _send_segments(self, child: ChildEntry, packets: list[bytearray]) -> bool:
        """The segments of one super packet into the GSO batch: what ``send_protected``
        decides per packet (size against the tunnel MTU, socket, outer DF) is the same for
        all of them (one flow, one IP header; the first is the longest), so it is decided
        once. False (nothing sent) when they do not take this path: too big for the
        tunnel, raw ESP, or no socket (``send_protected`` handles and counts those)."""
        first = packets[0]
        spec = child.spec
        if len(first) > child.mtu or not spec.udp_encap:
            return False
        address = child.peer.address
        sock = self._socket_for(address[0], True)
        if sock is None:
            return False
        if not spec.copy_df or (not first[6] & 0x40 and first[0] < 0x50):
            sock = sock.no_df  # as in send_protected (strongSwan's copy_df)
        add = self.batch.add
        sa = child.sa_out
        for packet in packets:
            try:
                add(sock, address, sa, packet)
            except EspDrop:
                self.counters.esp_drops += 1
        return True

    def send_protected(self, child: ChildEntry, packet: memoryview) -> None:
        """Encrypt PACKET for CHILD and send it; UDP-encapsulated ESP goes into the GSO batch
        (the caller flushes it with ``batch.flush()`` when its drain loop ends)."""
        if len(packet) > child.mtu:
            if needs_frag_needed(packet, child.mtu):
                error = build_too_big(packet, child.mtu)
                if error is not None:
                    self.counters.too_big_sent += 1
                    try:
                        os.write(self._tun_fd, PLAIN_HEADER + error if self._vnet else error)
                    except OSError:
                        pass
                return
            # IPv4 without DF: fragmented before encryption to the tunnel MTU, as the TUN
            # device's MTU makes the kernel do (aioipsec.runtime.pmtu).
            fragments = fragment_ipv4(packet, child.mtu)
            if fragments is not None and len(fragments) > 1:
                self.counters.fragmented += 1
                for fragment in fragments:
                    self.send_protected(child, memoryview(fragment))
                return
        address = child.peer.address
        spec = child.spec
        udp_encap = spec.udp_encap
        sock = self._socket_for(address[0], udp_encap)
        if sock is None:
            self.counters.send_failures += 1
            return
        # strongSwan's copy_df: the outer DF is the inner IPv4 packet's (flag 0x40 of octet
        # 6; an inner IPv6 packet gets DF), or never DF with copy_df = no. Our sockets set DF
        # per socket: a packet without it leaves by the send-only twin (aioipsec.runtime.pmtu).
        # Octet 6 first: IPv4 with DF (all TCP) is decided by it alone (~40 ns a packet).
        if not spec.copy_df or (not packet[6] & 0x40 and packet[0] < 0x50):
            sock = sock.no_df
        try:
            if udp_encap:
                self.batch.add(sock, address, child.sa_out, packet)
            else:
                length = child.sa_out.encrypt_into(packet, self._out_buffer)
                sock.sendto(self._out_view[:length], address)
        except EspDrop:
            self.counters.esp_drops += 1

    def send_held(self, child: ChildEntry, packets: list[bytes]) -> None:
        """Packets the SPD held for CHILD's policy while it was negotiated."""
        for packet in packets:
            self.send_protected(child, memoryview(packet))
        self.batch.flush()

    # ------------------------------------------------------------------ inbound

    def esp_received_udp(self, packet: memoryview, remote: Address) -> None:
        if len(packet) < ESP_MIN_LENGTH:
            self.counters.esp_drops += 1
            return
        self._inbound_packet(packet, remote, _unpack_spi(packet)[0], True)

    def esp_received_raw(self, packet: memoryview, remote: Address) -> None:
        if len(packet) < ESP_MIN_LENGTH:
            self.counters.esp_drops += 1
            return
        self._inbound_packet(packet, remote, _unpack_spi(packet)[0], False)

    def _inbound_packet(self, packet: memoryview, remote: Address, spi: int, udp: bool) -> None:
        table = self.table
        entry = table.by_spi_in.get(spi)
        if entry is None:
            table.sad.lookup_inbound(spi, now=self._clock())  # counts it
            self._drop_log.info(
                "ESP packet for an unknown SPI", key=remote[0], spi=f"{spi:08x}", remote=remote
            )
            return
        sa = entry.sa_in
        replay = sa.replay
        assert replay is not None  # an inbound SA
        highest = replay.highest
        try:
            # A view of the inner packet: the AEAD's own output (no copy), or, on the
            # transform path, our buffer it was decrypted into.
            if self._vnet:
                # Kept until flush_tun: a buffer of its own (the AEAD's output, or a new one
                # on the transform path), never our reused one.
                inner = sa.decrypt_view(packet)
            else:
                inner = sa.decrypt_view(packet, self._in_buffer)
        except EspDrop as drop:
            self.counters.esp_drops += 1
            if not drop.silent:
                self._drop_log.warning(
                    "ESP packet dropped",
                    key=(spi, drop.reason),
                    reason=drop.reason.value,
                    spi=f"{spi:08x}",
                    remote=remote,
                    connection=entry.connection,
                    ike_sa_id=entry.ike_sa_id,
                )
            if table.events:
                table.handle_events()
            return
        if self._vnet:
            self._to_tun.append(inner)
        else:
            try:
                os.write(self._tun_fd, inner)
            except OSError:
                self.counters.send_failures += 1
        if udp and remote != entry.peer.address:
            new = replay.highest > highest
            if entry.peer.authenticated_packet_from(remote, new=new):
                self._peer_moved(entry, remote)
        if table.events:
            table.handle_events()

    def flush_tun(self) -> None:
        """Write what the drain loop decrypted: runs of TCP segments of one flow as GSO
        super packets (tun.offload.coalesce), everything else one by one."""
        packets = self._to_tun
        if not packets:
            return
        self._to_tun = []
        fd = self._tun_fd
        for frame in coalesce(packets):
            try:
                os.write(fd, frame)
            except OSError:
                self.counters.send_failures += 1

    def _peer_moved(self, entry: ChildEntry, remote: Address) -> None:
        """An authenticated ESP packet came from a new address/port: the peer's NAT mapping
        changed (RFC 3948 sec. 3.5). Send to where it comes from now."""
        self.counters.nat_mapping_changes += 1
        log.info(
            "peer address changed (NAT mapping)",
            connection=entry.connection,
            ike_sa_id=entry.ike_sa_id,
            new=remote,
        )
        if self._on_peer_moved is not None:
            self._on_peer_moved(entry.ike_sa_id, remote)
