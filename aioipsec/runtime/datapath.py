"""The ESP data path: TUN -> policy -> ESP -> socket, and socket -> SA -> ESP -> TUN.

Outbound (``loop.add_reader`` on the TUN descriptor, drained until empty):
    read one inner packet -> ``esp.spd.Spd.outbound`` (the first matching policy; its
    ``reqid`` names the Child SA config; ``esp.sad.Sad`` gives the newest SA for it, so a
    rekeyed SA takes over at once) -> too big for the SA and DF set? answer ICMP
    "fragmentation needed" / "packet too big" with the tunnel MTU into the TUN
    (RFC 1191, RFC 4443, RFC 4301 sec. 8)
    -> ``EspSa.encrypt_into`` a reused buffer -> ``sendto`` on the UDP 4500 socket
    (ESP-in-UDP, RFC 3948) or the raw protocol-50 socket.
    A packet matching a policy with no SA yet (``start_action = trap``, or an SA that
    went away) is held by the SPD (bounded queue, a few seconds) and an ``Acquire`` starts
    the negotiation: it is sent once the SA is there and never leaves in clear.

Inbound (called by the socket readers for every ESP datagram):
    SPI -> inbound SA (the SAD's SPI dictionary) -> ``EspSa.decrypt_into`` (ICV,
    anti-replay, padding, and the policy check of the inner packet against the SA's
    selectors, RFC 4301 sec. 5.2)
    -> ``os.write`` to the TUN. An authenticated packet from a new outer address/port is
    a NAT mapping change: outbound traffic follows it (RFC 3948 sec. 3.5 / RFC 7296
    sec. 2.23).

Byte/packet lifetimes reported by the SAs (``esp.events.SaExpired``) go to the IKE side
through ``on_limit``; the engine rekeys (soft) or deletes (hard).
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from aioipsec.log import RateLimitedLogger
from esp.errors import EspDrop
from esp.events import Acquire, Lifetime, SaExpired
from esp.sa import Direction, EspSa
from esp.sad import Sad
from esp.selectors import Selector
from esp.spd import Action, Policy, Spd, Template
from ikev2.events import ChildSaEstablished, TrafficSelectorRange
from nat_t.peer import PeerAddressTracker
from tun.icmp import build_too_big, needs_frag_needed
from tun.mtu import esp_sizes, tunnel_mtu

from .routes import RouteManager
from .sockets import (
    BYPASS_MARK,
    GSO_MAX_BYTES,
    GSO_MAX_SEGMENTS,
    SO_MARK,
    DrainingSocket,
    RawEspSocket,
)

log = structlog.get_logger("aioipsec.datapath")

Address = tuple[str, int]
BUFFER_SIZE = 65536 + 512
HELD_PACKETS_MAX = 32  # per Child SA config; strongSwan's kernel holds a few packets too
HELD_PACKETS_SECONDS = 5.0
ACQUIRE_INTERVAL = 3.0  # do not start a new negotiation for the same child more often
# Policy priorities (lower first): those of installed SAs (possibly narrowed selectors)
# before the wider trap policies of the configuration.
# A rekey responder switches its outbound traffic to the new SA when the initiator deletes
# the old one, or after this many seconds.
OUTBOUND_SWITCH_MAX = 2.0
SA_POLICY_PRIORITY = 100
TRAP_POLICY_PRIORITY = 200
DEFAULT_OUTER_MTU = 1500
# <linux/in.h> / <linux/in6.h>: the path MTU of a connected socket (not named by Python).
IP_MTU = getattr(socket, "IP_MTU", 14)
IPV6_MTU = getattr(socket, "IPV6_MTU", 24)
DEFAULT_TUN_MTU = 1400  # strongSwan's kernel-libipsec default, before any SA is known


@dataclass
class ChildEntry:
    """One installed Child SA (both directions) and where its packets go."""

    child_sa_id: int
    ike_sa_id: int
    connection: str
    child: str
    reqid: int
    sa_in: EspSa
    sa_out: EspSa
    peer: PeerAddressTracker
    udp_encap: bool
    mtu: int
    selectors_out: list[Selector]
    installed_at: float  # wall clock
    event: ChildSaEstablished = field(repr=False)
    outbound_active: bool = False  # sa_out is in the SAD (see install_child)


def ts_selector_text(ts: TrafficSelectorRange) -> str:
    return ts.start if ts.start == ts.end else f"{ts.start}-{ts.end}"


def selectors_between(
    local_ts: tuple[TrafficSelectorRange, ...] | list[TrafficSelectorRange],
    remote_ts: tuple[TrafficSelectorRange, ...] | list[TrafficSelectorRange],
) -> list[Selector]:
    """Outbound selectors (source = local, destination = remote) for every pair of one IP
    version; a protocol given on either side restricts the pair (RFC 4301 sec. 4.4.1)."""
    selectors = []
    for local in local_ts:
        for remote in remote_ts:
            if (":" in local.start) != (":" in remote.start):
                continue
            if local.protocol and remote.protocol and local.protocol != remote.protocol:
                continue
            selectors.append(
                Selector.make(
                    ts_selector_text(local),
                    ts_selector_text(remote),
                    protocol=local.protocol or remote.protocol,
                    src_ports=(local.start_port, local.end_port),
                    dst_ports=(remote.start_port, remote.end_port),
                )
            )
    return selectors


def outer_mtu_towards(host: str) -> int:
    """The MTU of the route the kernel uses to reach HOST (with our SO_MARK, as our outer
    packets are routed): ``IP_MTU``/``IPV6_MTU`` of a connected UDP socket, which is the
    route's ``mtu`` metric or else its device's MTU (what ``ip route get`` shows), in a few
    microseconds instead of two ``ip`` processes per Child SA (see docs/performance.md)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    level, option = (
        (socket.IPPROTO_IPV6, IPV6_MTU)
        if family == socket.AF_INET6
        else (socket.IPPROTO_IP, IP_MTU)
    )
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            try:
                probe.setsockopt(socket.SOL_SOCKET, SO_MARK, BYPASS_MARK)
            except PermissionError:
                pass  # not root (unit tests): the unmarked route
            probe.connect((host, 9))  # no packet is sent: connect() only picks the route
            return probe.getsockopt(level, option)
    except OSError:
        return DEFAULT_OUTER_MTU


class DataPath:
    """The data plane of the daemon around ``esp.Sad`` / ``esp.Spd``.

    ``reqid`` (the SPD's link to the SAD) is one number per (connection, child) of the
    configuration, stable across rekeys: the SPD's policies for it stay while the SAs behind
    it are replaced, and a policy whose SA is gone holds packets and raises an ``Acquire``.
    """

    def __init__(
        self,
        tun: Any,
        routes: RouteManager,
        *,
        on_acquire: Callable[[str, str], None],
        on_limit: Callable[[int, str, bool], None],
        exporter: Any = None,
        on_peer_moved: Callable[[int, Address], None] | None = None,
    ) -> None:
        self.tun = tun
        self.routes = routes
        self._on_acquire = on_acquire
        self._on_limit = on_limit
        # (ike_sa_id, new address) after authenticated ESP from a new NAT mapping: the
        # daemon tells the engine, so that IKE follows too (RFC 7296 sec. 2.23).
        self._on_peer_moved = on_peer_moved
        self.exporter = exporter
        self.sad = Sad()
        self.spd = Spd(
            self.sad,
            max_held=HELD_PACKETS_MAX,
            hold_seconds=HELD_PACKETS_SECONDS,
            acquire_retry=ACQUIRE_INTERVAL,
        )
        self.events = self.sad.events
        self._inbound = self.sad.inbound_esp_table()  # SPI -> EspSa, for dict.get
        # IKE SA id -> "we are behind a NAT" (from IkeSaEstablished): a host behind a NAT
        # does not follow the peer's address changes (RFC 7296 sec. 2.23).
        self.nat_local: dict[int, bool] = {}
        self.children: dict[int, ChildEntry] = {}
        # Kept up to date with self.children so that installing or removing one Child SA
        # does not scan all of them (10,000 tunnels): the Child SAs of each IKE SA, and how
        # many Child SAs have each tunnel MTU (the TUN MTU is the smallest).
        self._children_of_ike: dict[int, dict[int, ChildEntry]] = {}
        self._mtu_counts: collections.Counter[int] = collections.Counter()
        self._by_spi_in: dict[int, ChildEntry] = {}
        self._by_spi_out: dict[int, ChildEntry] = {}
        # old child_sa_id -> the rekeyed entry whose outbound SA waits for its deletion
        self._deferred_outbound: dict[int, ChildEntry] = {}
        self._reqids: dict[tuple[str, str], int] = {}
        self._reqid_names: dict[int, tuple[str, str]] = {}
        # reqid -> {selector: SPD index} for the policies of installed SAs and of traps.
        self._sa_policies: dict[int, dict[Selector, int]] = {}
        self._trap_policies: dict[int, dict[Selector, int]] = {}
        self._udp: list[DrainingSocket] = []
        self._raw: list[RawEspSocket] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tun_buffer = bytearray(BUFFER_SIZE)
        self._tun_view = memoryview(self._tun_buffer)
        self._out_buffer = bytearray(BUFFER_SIZE)
        self._out_view = memoryview(self._out_buffer)
        # The UDP GSO batch (see _send_protected): ESP packets for one socket and peer laid
        # end to end in _batch_buffer[_batch_start:_batch_end], _batch_count of them, all
        # _batch_segment octets long but the last.
        self._batch_buffer = bytearray(GSO_MAX_BYTES + BUFFER_SIZE)
        self._batch_view = memoryview(self._batch_buffer)
        self._batch_socket: DrainingSocket | None = None
        self._batch_address: Address = ("", 0)
        self._batch_start = 0
        self._batch_end = 0
        self._batch_segment = 0
        self._batch_count = 0
        self._in_buffer = bytearray(BUFFER_SIZE)
        self._in_view = memoryview(self._in_buffer)
        self.tun_mtu = DEFAULT_TUN_MTU
        # Per-packet problems are logged at most once per 10 s per (SPI, reason).
        self._drop_log = RateLimitedLogger(log, interval=10.0)
        # Counters of what is not per SA (the SAD/SPD count unknown SPIs, held packets...).
        self.esp_drops = 0
        self.bypass_dropped = 0
        self.too_big_sent = 0
        self.keepalives_in = 0
        self.keepalives_out = 0
        self.nat_mapping_changes = 0
        self.send_failures = 0

    # ------------------------------------------------------------------ lifecycle

    def set_sockets(self, udp: list[DrainingSocket], raw: list[RawEspSocket]) -> None:
        self._udp = udp
        self._raw = raw

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.tun_mtu = self.tun.mtu
        loop.add_reader(self.tun.fileno(), self._tun_readable)

    def close(self) -> None:
        if self._loop is not None:
            try:
                self._loop.remove_reader(self.tun.fileno())
            except (ValueError, OSError):
                pass
            self._loop = None
        self.spd.flush()
        self.sad.flush()

    def _now(self) -> float:
        return self._loop.time() if self._loop is not None else 0.0

    def _socket_for(self, host: str, udp_encap: bool) -> DrainingSocket | None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        for candidate in self._udp if udp_encap else self._raw:
            if candidate.sock.family == family:
                return candidate
        return None

    def reqid_for(self, connection: str, child: str) -> int:
        key = (connection, child)
        reqid = self._reqids.get(key)
        if reqid is None:
            reqid = len(self._reqids) + 1
            self._reqids[key] = reqid
            self._reqid_names[reqid] = key
        return reqid

    def _add_policies(
        self, table: dict[int, dict[Selector, int]], reqid: int, selectors: list[Selector],
        priority: int, template: Template,
    ) -> None:  # fmt: skip
        known = table.setdefault(reqid, {})
        for selector in selectors:
            if selector not in known:
                policy = Policy(selector, Action.PROTECT, reqid=reqid, priority=priority,
                                template=template)  # fmt: skip
                known[selector] = self.spd.add(policy)

    def _remove_policies(self, table: dict[int, dict[Selector, int]], reqid: int) -> None:
        for index in table.pop(reqid, {}).values():
            self.spd.remove(index)

    # ------------------------------------------------------------------ SAs

    def install_child(self, event: ChildSaEstablished, rekey_of: int | None = None) -> list[str]:
        """Install both directions of a Child SA, its policies and routes.

        Make-before-break (RFC 7296 sec. 2.8): the old inbound SA stays until it is
        deleted. Outbound, the rekey *initiator* switches to the new SA at once (the peer
        installed its inbound side before answering). The *responder* of a rekey keeps
        sending on the old SA until the initiator deletes it, because the initiator
        installs the new SA only when our response arrives: sending on it earlier loses
        packets (strongSwan delays the responder's outbound SA the same way). A fallback
        timer switches after ``OUTBOUND_SWITCH_MAX`` seconds in any case."""
        soft_bytes = event.rekey_bytes or None
        hard_bytes = event.life_bytes or None
        soft_packets = event.rekey_packets or None
        hard_packets = event.life_packets or None
        # The engine gives rekey (soft) and life (hard) limits; a hard limit below the soft
        # one would be refused by Lifetime, so it is raised to the soft one.
        if hard_bytes is not None and soft_bytes is not None:
            hard_bytes = max(hard_bytes, soft_bytes)
        if hard_packets is not None and soft_packets is not None:
            hard_packets = max(hard_packets, soft_packets)
        lifetime = Lifetime(
            soft_bytes=soft_bytes,
            hard_bytes=hard_bytes,
            soft_packets=soft_packets,
            hard_packets=hard_packets,
        )
        now = self._now()
        reqid = self.reqid_for(event.connection, event.child)
        integ = event.integ if event.integ is not None else 0
        selectors_out = selectors_between(event.local_ts, event.remote_ts)
        # events: the SAD's queue from the start (Sad.add would replace a queue of their own,
        # 760 octets each, allocated only to be dropped).
        common = {"esn": event.esn, "mode": event.mode, "lifetime": lifetime, "reqid": reqid,
                  "now": now, "events": self.sad.events}  # fmt: skip
        sa_in = EspSa(
            event.spi_in, Direction.IN, event.encr, event.encr_key_in, integ,
            event.integ_key_in, replay_window=event.replay_window,
            src=event.remote_addr[0], dst=event.local_addr[0],
            selectors=[s.reversed() for s in selectors_out], **common,
        )  # fmt: skip
        sa_out = EspSa(
            event.spi_out, Direction.OUT, event.encr, event.encr_key_out, integ,
            event.integ_key_out, src=event.local_addr[0], dst=event.remote_addr[0], **common,
        )  # fmt: skip
        outer_ipv6 = ":" in event.remote_addr[0]
        outer_mtu = outer_mtu_towards(event.remote_addr[0])
        sizes = esp_sizes(event.encr, integ)
        mtu = tunnel_mtu(outer_mtu, sizes, outer_ipv6=outer_ipv6, udp_encap=event.udp_encap)
        entry = ChildEntry(
            child_sa_id=event.child_sa_id,
            ike_sa_id=event.ike_sa_id,
            connection=event.connection,
            child=event.child,
            reqid=reqid,
            sa_in=sa_in,
            sa_out=sa_out,
            peer=self._peer_tracker(event),
            udp_encap=event.udp_encap,
            mtu=mtu,
            selectors_out=selectors_out,
            installed_at=time.time(),
            event=event,
        )
        # SAD first, then the policies: a packet never finds a policy without its SA.
        self.sad.add(sa_in)
        defer = rekey_of is not None and not event.initiator and rekey_of in self.children
        if defer:
            assert rekey_of is not None
            self._deferred_outbound[rekey_of] = entry
            if self._loop is not None:
                self._loop.call_later(OUTBOUND_SWITCH_MAX, self._activate_outbound, entry)
        else:
            self.sad.add(sa_out)
            entry.outbound_active = True
        self.children[event.child_sa_id] = entry
        self._children_of_ike.setdefault(entry.ike_sa_id, {})[entry.child_sa_id] = entry
        self._mtu_counts[entry.mtu] += 1
        self._by_spi_in[event.spi_in] = entry
        self._by_spi_out[event.spi_out] = entry
        template = Template("esp", event.mode, event.local_addr[0], event.remote_addr[0])
        self._add_policies(self._sa_policies, reqid, selectors_out, SA_POLICY_PRIORITY, template)
        routes = self.routes.add_child(event.child_sa_id, event.local_ts, event.remote_ts)
        self._update_tun_mtu()
        if self.exporter is not None:
            self._export(entry)
        for packet in self.spd.release_held(reqid, now):
            self._send_protected(entry, memoryview(packet))
        self._flush_batch()
        return routes

    def _activate_outbound(self, entry: ChildEntry) -> None:
        """Start sending on a rekeyed SA whose outbound side we held back (responder)."""
        if entry.outbound_active or entry.child_sa_id not in self.children:
            return
        self.sad.add(entry.sa_out)
        entry.outbound_active = True
        for old, pending in list(self._deferred_outbound.items()):
            if pending is entry:
                del self._deferred_outbound[old]

    def remove_child(self, child_sa_id: int) -> None:
        entry = self.children.pop(child_sa_id, None)
        if entry is None:
            return
        siblings = self._children_of_ike.get(entry.ike_sa_id)
        if siblings is not None:
            siblings.pop(child_sa_id, None)
            if not siblings:
                del self._children_of_ike[entry.ike_sa_id]
        self._mtu_counts[entry.mtu] -= 1
        if not self._mtu_counts[entry.mtu]:
            del self._mtu_counts[entry.mtu]
        successor = self._deferred_outbound.pop(child_sa_id, None)
        if successor is not None:
            # The initiator deleted the old SA: it has the new one; switch before the old
            # outbound SA goes, so that no packet finds the reqid without an SA.
            self._activate_outbound(successor)
        self.sad.delete(entry.sa_in)
        if entry.outbound_active:
            self.sad.delete(entry.sa_out)
        self._by_spi_in.pop(entry.sa_in.spi, None)
        self._by_spi_out.pop(entry.sa_out.spi, None)
        if self.sad.lookup_outbound(entry.reqid) is None:
            # The last SA of this child went: its policies go too (a trap, if configured,
            # stays and catches the next packet).
            self._remove_policies(self._sa_policies, entry.reqid)
        self.routes.remove_child(child_sa_id)
        self._update_tun_mtu()
        if self.exporter is not None:
            self.exporter.remove_esp_sa(entry.sa_in.spi, entry.sa_out.spi)

    def _update_tun_mtu(self) -> None:
        if not self.children:
            return
        mtu = min(self._mtu_counts)  # a few distinct MTUs, not one per Child SA
        if mtu != self.tun_mtu:
            try:
                self.tun.set_mtu(mtu)
                self.tun_mtu = mtu
            except OSError as exc:
                log.warning("cannot set the TUN MTU", mtu=mtu, error=str(exc))

    def _export(self, entry: ChildEntry) -> None:
        from aioipsec.keyexport import EspKeyRow

        event = entry.event
        natted = event.udp_encap
        local = "*" if natted else event.local_addr[0]
        remote = "*" if natted else event.remote_addr[0]
        ipv6 = ":" in event.remote_addr[0]
        self.exporter.add_esp_sa(
            EspKeyRow(
                local, remote, event.spi_out, event.encr, event.integ,
                event.encr_key_out, event.integ_key_out, ipv6,
            ),
            EspKeyRow(
                remote, local, event.spi_in, event.encr, event.integ,
                event.encr_key_in, event.integ_key_in, ipv6,
            ),
        )  # fmt: skip

    def _peer_tracker(self, event: ChildSaEstablished) -> PeerAddressTracker:
        """One tracker per IKE SA, shared by its Child SAs (they move together)."""
        for entry in self._children_of_ike.get(event.ike_sa_id, {}).values():
            return entry.peer
        nat_local = self.nat_local.get(event.ike_sa_id, False)
        return PeerAddressTracker(tuple(event.remote_addr), local_behind_nat=nat_local)

    def rebind_ike_sa(self, old_ike_sa_id: int, new_ike_sa_id: int) -> None:
        """After an IKE SA rekey its Child SAs belong to the new IKE SA."""
        moved = self._children_of_ike.pop(old_ike_sa_id, None)
        if moved:
            for entry in moved.values():
                entry.ike_sa_id = new_ike_sa_id
            self._children_of_ike.setdefault(new_ike_sa_id, {}).update(moved)
        if old_ike_sa_id in self.nat_local:
            self.nat_local[new_ike_sa_id] = self.nat_local.pop(old_ike_sa_id)

    def packets_out_of(self, ike_sa_id: int) -> int:
        children = self._children_of_ike.get(ike_sa_id, {})
        return sum(entry.sa_out.packets_out for entry in children.values())

    def peer_address(self, ike_sa_id: int) -> Address | None:
        for entry in self._children_of_ike.get(ike_sa_id, {}).values():
            return entry.peer.address
        return None

    # ------------------------------------------------------------------ traps

    def add_trap(self, config: Any, child: Any) -> None:
        """Install the trap policies (and routes) of a ``start_action = trap`` child."""
        from ikev2.ts import parse_ts_list  # the engine's selector syntax

        local_addr = _first_concrete(config.local_addrs)
        remote_addr = _first_concrete(config.remote_addrs)
        local_ts = [ts.to_range() for ts in parse_ts_list(child.local_ts, local_addr)]
        remote_ts = [ts.to_range() for ts in parse_ts_list(child.remote_ts, remote_addr)]
        reqid = self.reqid_for(config.name, child.name)
        selectors = selectors_between(local_ts, remote_ts)
        template = Template("esp", child.mode, local_addr, remote_addr)
        self._add_policies(self._trap_policies, reqid, selectors, TRAP_POLICY_PRIORITY, template)
        self.routes.add_child(-reqid, local_ts, remote_ts)
        log.info(
            "trap installed",
            connection=config.name,
            child=child.name,
            policies=[s.text() for s in selectors],
        )

    def has_trap(self, connection: str, child: str) -> bool:
        reqid = self._reqids.get((connection, child))
        return reqid is not None and reqid in self._trap_policies

    def clear_traps(self) -> None:
        for reqid in list(self._trap_policies):
            self._remove_policies(self._trap_policies, reqid)
            self.routes.remove_child(-reqid)

    # ------------------------------------------------------------------ outbound

    def _tun_readable(self) -> None:
        fd = self.tun.fileno()
        buffer = self._tun_buffer
        view = self._tun_view
        outbound = self.spd.outbound
        now = self._now()
        for _ in range(256):  # bounded: the sockets and timers get their turn
            try:
                length = os.readv(fd, [buffer])
            except (BlockingIOError, InterruptedError):
                break
            if length == 0:
                break
            packet = view[:length]
            sa = outbound(packet, now)
            if sa is None:
                continue  # dropped (no policy), or held for an SA being negotiated
            entry = self._by_spi_out.get(sa.spi) if sa is not Action.BYPASS else None
            if entry is None:
                # Only routes we installed lead into the TUN device: nothing is sent in
                # clear from here.
                self.bypass_dropped += 1
                continue
            self._send_protected(entry, packet)
        self._flush_batch()
        if self.events:
            self._process_events()

    def _send_protected(self, child: ChildEntry, packet: memoryview) -> None:
        """Encrypt PACKET for CHILD and send it; UDP-encapsulated ESP goes into the GSO batch
        (the caller flushes it with :meth:`_flush_batch` when its drain loop ends).

        The batch exists because a bulk TCP flow hands us runs of equal-sized packets: their
        ESP packets are equal-sized too and leave in one ``sendmsg`` with ``UDP_SEGMENT``
        instead of one ``sendto`` each. A batch ends at a change of socket or peer, at a
        shorter packet (GSO allows only the last segment to be shorter), before a longer one,
        and at GSO's limits (segments, octets)."""
        if len(packet) > child.mtu and needs_frag_needed(packet, child.mtu):
            error = build_too_big(packet, child.mtu)
            if error is not None:
                self.too_big_sent += 1
                try:
                    os.write(self.tun.fileno(), error)
                except OSError:
                    pass
            return
        address = child.peer.address
        sock = self._socket_for(address[0], child.udp_encap)
        if sock is None:
            self.send_failures += 1
            return
        if not child.udp_encap:
            try:
                length = child.sa_out.encrypt_into(packet, self._out_buffer)
            except EspDrop:
                self.esp_drops += 1
                return
            sock.sendto(self._out_view[:length], address)
            return
        if self._batch_count and (
            sock is not self._batch_socket
            or address != self._batch_address
            or self._batch_end + BUFFER_SIZE > len(self._batch_buffer)
        ):
            self._flush_batch()
        start = self._batch_end
        try:
            length = child.sa_out.encrypt_into(packet, self._batch_buffer, start)
        except EspDrop:
            self.esp_drops += 1
            return
        if not self._batch_count:
            self._batch_socket, self._batch_address = sock, address
            self._batch_start, self._batch_segment = start, length
        elif length > self._batch_segment:
            # Longer than the batch's segments: what came before leaves now; this packet
            # starts the next batch where it lies.
            sock.send_segments(
                self._batch_view[self._batch_start : start],
                self._batch_segment,
                self._batch_count,
                address,
            )
            self._batch_start, self._batch_segment, self._batch_count = start, length, 0
        self._batch_end = start + length
        self._batch_count += 1
        if (
            length < self._batch_segment
            or self._batch_count >= GSO_MAX_SEGMENTS
            or self._batch_end - self._batch_start + self._batch_segment > GSO_MAX_BYTES
        ):
            self._flush_batch()

    def _flush_batch(self) -> None:
        if self._batch_count and self._batch_socket is not None:
            self._batch_socket.send_segments(
                self._batch_view[self._batch_start : self._batch_end],
                self._batch_segment,
                self._batch_count,
                self._batch_address,
            )
        self._batch_start = self._batch_end = self._batch_count = 0
        self._batch_socket = None

    # ------------------------------------------------------------------ inbound

    def esp_received_udp(self, packet: memoryview, remote: Address) -> None:
        self._inbound_packet(packet, remote, udp=True)

    def esp_received_raw(self, packet: memoryview, remote: Address) -> None:
        self._inbound_packet(packet, remote, udp=False)

    def _inbound_packet(self, packet: memoryview, remote: Address, udp: bool) -> None:
        if len(packet) < 8:
            self.esp_drops += 1
            return
        spi = int.from_bytes(packet[:4], "big")
        sa = self._inbound.get(spi)
        if sa is None:
            self.sad.lookup_inbound(spi, now=self._now())  # counts it
            self._drop_log.info(
                "ESP packet for an unknown SPI", key=remote[0], spi=f"{spi:08x}", remote=remote
            )
            return
        highest = sa.replay.highest  # type: ignore[union-attr]
        try:
            length = sa.decrypt_into(packet, self._in_buffer)
        except EspDrop as drop:
            self.esp_drops += 1
            if not drop.silent:
                entry = self._by_spi_in.get(spi)
                self._drop_log.warning(
                    "ESP packet dropped",
                    key=(spi, drop.reason),
                    reason=drop.reason.value,
                    spi=f"{spi:08x}",
                    remote=remote,
                    connection=entry.connection if entry else None,
                    ike_sa_id=entry.ike_sa_id if entry else None,
                )
            if self.events:
                self._process_events()
            return
        try:
            os.write(self.tun.fileno(), self._in_view[:length])
        except OSError:
            self.send_failures += 1
        if udp:
            entry = self._by_spi_in.get(spi)
            if entry is not None and remote != entry.peer.address:
                new = sa.replay.highest > highest  # type: ignore[union-attr]
                if entry.peer.authenticated_packet_from(remote, new=new):
                    self._peer_moved(entry, remote)
        if self.events:
            self._process_events()

    def _peer_moved(self, entry: ChildEntry, remote: Address) -> None:
        """An authenticated ESP packet came from a new address/port: the peer's NAT mapping
        changed (RFC 3948 sec. 3.5). Send to where it comes from now."""
        self.nat_mapping_changes += 1
        log.info(
            "peer address changed (NAT mapping)",
            connection=entry.connection,
            ike_sa_id=entry.ike_sa_id,
            new=remote,
        )
        if self._on_peer_moved is not None:
            self._on_peer_moved(entry.ike_sa_id, remote)

    # ------------------------------------------------------------------ events

    def _process_events(self) -> None:
        while self.events:
            event = self.events.popleft()
            if isinstance(event, SaExpired):
                table = self._by_spi_in if event.direction == "in" else self._by_spi_out
                entry = table.get(event.spi)
                if entry is None:
                    continue
                log.info(
                    "CHILD SA lifetime reached",
                    connection=entry.connection,
                    ike_sa_id=entry.ike_sa_id,
                    child=entry.child,
                    spi=f"{event.spi:08x}",
                    reason=event.reason,
                    hard=event.hard,
                )
                cause = event.reason if event.reason in ("bytes", "packets") else "packets"
                self._on_limit(entry.sa_in.spi, cause, event.hard)
            elif isinstance(event, Acquire):
                names = self._reqid_names.get(event.reqid)
                if names is None:
                    continue
                log.info(
                    "acquire: packet for a trap policy",
                    connection=names[0],
                    child=names[1],
                    src=event.src,
                    dst=event.dst,
                )
                self._on_acquire(*names)

    # ------------------------------------------------------------------ listings

    def child_counters(self, child_sa_id: int) -> dict[str, Any]:
        entry = self.children.get(child_sa_id)
        if entry is None:
            return {}
        counters_in = entry.sa_in.counters()
        counters_out = entry.sa_out.counters()
        return {
            "bytes_in": counters_in["bytes_in"],
            "packets_in": counters_in["packets_in"],
            "bytes_out": counters_out["bytes_out"],
            "packets_out": counters_out["packets_out"],
            "installed_at": entry.installed_at,
            "drops_in": {
                k: v
                for k, v in counters_in.items()
                if k not in ("bytes_in", "packets_in", "bytes_out", "packets_out")
            },
        }

    def policies_listing(self) -> list[dict[str, Any]]:
        """The SPD as JSON, each policy with its connection/child and whether it is a trap,
        plus the inbound policy checks of the installed SAs."""
        listing = []
        traps = {index for table in self._trap_policies.values() for index in table.values()}
        for item in self.spd.to_json():
            names = self._reqid_names.get(int(item["reqid"]))  # type: ignore[call-overload]
            if names is not None:
                item["connection"], item["child"] = names
            item["trap"] = item["index"] in traps
            sa = self.sad.lookup_outbound(int(item["reqid"]))  # type: ignore[call-overload]
            if sa is not None:
                item["spi"] = f"{sa.spi:08x}"
            listing.append(item)
        for entry in self.children.values():
            for selector in entry.sa_in.selectors:
                listing.append(
                    {
                        "dir": "in",
                        "action": "protect",
                        "selector": selector.to_json(),
                        "connection": entry.connection,
                        "child": entry.child,
                        "reqid": entry.reqid,
                        "spi": f"{entry.sa_in.spi:08x}",
                    }
                )
        return listing

    def policies_text(self) -> str:
        """``ip xfrm policy`` style (outbound SPD), then the inbound checks of the SAs."""
        lines = [self.spd.text().rstrip("\n")] if len(self.spd) else []
        for entry in self.children.values():
            for selector in entry.sa_in.selectors:
                lines.append(
                    f"{selector.text()}\n\tdir in action allow (protect)\n"
                    f"\ttmpl src {entry.sa_in.src} dst {entry.sa_in.dst}\n"
                    f"\t\tproto esp spi 0x{entry.sa_in.spi:08x} reqid {entry.reqid} "
                    f"mode {entry.event.mode}"
                )
        return "\n".join(lines)

    def sad_text(self) -> str:
        """``ip -s xfrm state`` style (keys never shown)."""
        return self.sad.text()

    def stats(self) -> dict[str, Any]:
        totals: collections.Counter[str] = collections.Counter()
        for entry in self.children.values():
            totals.update(entry.sa_in.counters())
            totals.update({k: v for k, v in entry.sa_out.counters().items() if "out" in k})
        return {
            **dict(totals),
            "no_policy": self.spd.no_policy,
            "unknown_spi": self.sad.unknown_spi,
            "held": self.spd.held,
            "held_dropped": self.spd.held_dropped,
            "esp_drops": self.esp_drops,
            "bypass_dropped": self.bypass_dropped,
            "too_big_sent": self.too_big_sent,
            "keepalives_in": self.keepalives_in,
            "keepalives_out": self.keepalives_out,
            "nat_mapping_changes": self.nat_mapping_changes,
            "send_failures": self.send_failures,
            "tun_mtu": self.tun_mtu,
            "child_sas": len(self.children),
        }


def _first_concrete(addresses: list[str]) -> str | None:
    for address in addresses:
        try:
            ipaddress.ip_address(address)
            return address
        except ValueError:
            continue
    return None
