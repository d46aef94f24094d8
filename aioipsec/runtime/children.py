"""The Child SA table: what is installed, and the one lookup forwarding needs.

The control side of the data path. The daemon builds a :class:`ChildSpec` (a neutral
description of one Child SA, no engine event) and calls :meth:`ChildTable.install`; the
table creates both ``EspSa`` directions, puts them into the SAD, adds the policies to the
SPD and keeps the indexes:

* ``forwarding``: reqid -> the :class:`ChildEntry` whose outbound SA protects that reqid's
  policies now. ``Spd.decide`` looks the packet's policy up and then this dictionary, so
  a packet read from the TUN needs one lookup after the policy to find everything it needs
  (outbound SA, peer address, encapsulation, tunnel MTU);
* ``by_spi_in``: our SPI -> entry, for received ESP (SA, peer tracker, names for logs);
* ``by_spi_out``, per IKE SA, per MTU, the deferred outbound switches of rekeys, reqids
  and the policy indexes of installed SAs and of traps.

``reqid`` (the SPD's link to the SAs) is one number per (connection, child) of the
configuration, stable across rekeys: the SPD's policies for it stay while the SAs behind
it are replaced, and a policy whose SA is gone holds packets and raises an ``Acquire``.

Time: every ``now`` here is the daemon's one time base, ``aioipsec.runtime.engine.now``
(POSIX seconds), given by the caller.
"""

from __future__ import annotations

import collections
import functools
import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from esp.events import Acquire, Lifetime, SaExpired
from esp.sa import Direction, EspSa
from esp.sad import Sad
from esp.selectors import Selector
from esp.spd import Action, Policy, Spd, Template
from ikev2.enums import EncrId, IntegId
from ikev2.events import TrafficSelectorRange
from ikev2.ts import parse_ts_list
from nat_t.peer import PeerAddressTracker
from tun.mtu import esp_sizes, tunnel_mtu

from .routes import RouteManager
from .sockets import BYPASS_MARK, SO_MARK

log = structlog.get_logger("aioipsec.datapath")

Address = tuple[str, int]
HELD_PACKETS_MAX = 32  # per Child SA config; strongSwan's kernel holds a few packets too
HELD_PACKETS_SECONDS = 5.0
ACQUIRE_INTERVAL = 3.0  # do not start a new negotiation for the same child more often
# Policy priorities (lower first): those of installed SAs (possibly narrowed selectors)
# before the wider trap policies of the configuration.
SA_POLICY_PRIORITY = 100
TRAP_POLICY_PRIORITY = 200
DEFAULT_OUTER_MTU = 1500
# <linux/in.h> / <linux/in6.h>: the path MTU of a connected socket (not named by Python).
IP_MTU = getattr(socket, "IP_MTU", 14)
IPV6_MTU = getattr(socket, "IPV6_MTU", 24)


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """One negotiated Child SA, as the data path needs it (built by the daemon from the
    engine's ``ChildSaEstablished``; the data path does not know the engine's events).

    Keys are never shown (``repr=False``). ``rekey_of``: the child_sa_id this one
    replaces. ``defer_outbound``: keep sending on the old SA until it is deleted (we
    answered the rekey; see :meth:`ChildTable.install`).
    """

    child_sa_id: int
    ike_sa_id: int
    connection: str
    child: str
    mode: str  # "tunnel" | "transport"
    spi_in: int
    spi_out: int
    encr: EncrId
    integ: IntegId
    esn: bool
    encr_key_in: bytes = field(repr=False)
    encr_key_out: bytes = field(repr=False)
    integ_key_in: bytes = field(repr=False)
    integ_key_out: bytes = field(repr=False)
    local_ts: tuple[TrafficSelectorRange, ...]
    remote_ts: tuple[TrafficSelectorRange, ...]
    udp_encap: bool
    local_addr: Address
    remote_addr: Address
    replay_window: int
    lifetime: Lifetime  # byte/packet limits (time limits are the engine's)
    rekey_of: int | None = None
    defer_outbound: bool = False
    # Set for the Child SAs of a road-warrior gateway (one reqid per client, see reqid_for).
    reqid_key: str = ""
    # strongSwan's reqid (0: allocated), priority (0: SA_POLICY_PRIORITY) and icmp of the
    # child's configuration (docs/configuration.md).
    fixed_reqid: int = 0
    priority: int = 0
    icmp: bool = False
    # copy_df = no: the outer packets never carry DF (aioipsec/runtime/pmtu.py).
    copy_df: bool = True


@dataclass(slots=True)
class ChildEntry:
    """One installed Child SA (both directions) and where its packets go: everything the
    forwarding functions need for a packet of it."""

    spec: ChildSpec
    reqid: int
    sa_in: EspSa
    sa_out: EspSa
    peer: PeerAddressTracker
    mtu: int
    selectors_out: list[Selector]
    installed_at: float  # the daemon's time base (aioipsec.runtime.engine.now)
    outbound_active: bool = False  # sa_out is in the SAD (see ChildTable.install)

    @property
    def child_sa_id(self) -> int:
        return self.spec.child_sa_id

    @property
    def ike_sa_id(self) -> int:
        return self.spec.ike_sa_id

    @property
    def connection(self) -> str:
        return self.spec.connection

    @property
    def child(self) -> str:
        return self.spec.child

    @property
    def udp_encap(self) -> bool:
        return self.spec.udp_encap

    @property
    def expired(self) -> bool:
        """The outbound SA reached a hard limit: its packets wait for a new one."""
        return self.sa_out.expired


def ts_selector_text(ts: TrafficSelectorRange) -> str:
    return ts.start if ts.start == ts.end else f"{ts.start}-{ts.end}"


def selectors_between(
    local_ts: Sequence[TrafficSelectorRange], remote_ts: Sequence[TrafficSelectorRange]
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


@functools.lru_cache(maxsize=4096)
def shared_selectors(
    local_ts: tuple[TrafficSelectorRange, ...], remote_ts: tuple[TrafficSelectorRange, ...]
) -> tuple[tuple[Selector, ...], tuple[Selector, ...]]:
    """(outbound, inbound) selectors of a Child SA's traffic selectors, built once for
    every Child SA with the same ones (Selector is frozen): a gateway's Child SAs share a
    few pairs, and a copy per Child SA cost about 0.4 KiB."""
    selectors_out = tuple(selectors_between(local_ts, remote_ts))
    return selectors_out, tuple(s.reversed() for s in selectors_out)


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
            mtu: int = probe.getsockopt(level, option)
            return mtu
    except OSError:
        return DEFAULT_OUTER_MTU


class ChildTable:
    """The installed Child SAs, their policies, traps and indexes (see the module doc).

    ``on_acquire(connection, child)``: a packet hit a policy without SA (negotiate it);
    ``on_limit(spi_in, cause, hard)``: an SA reached a byte/packet lifetime (rekey/delete).
    """

    def __init__(
        self,
        routes: RouteManager,
        *,
        on_acquire: Callable[[str, str], None],
        on_limit: Callable[[int, str, bool], None],
    ) -> None:
        self.routes = routes
        self._on_acquire = on_acquire
        self._on_limit = on_limit
        self.sad = Sad()
        self.spd = Spd(
            self.sad,
            max_held=HELD_PACKETS_MAX,
            hold_seconds=HELD_PACKETS_SECONDS,
            acquire_retry=ACQUIRE_INTERVAL,
        )
        self.events = self.sad.events
        # IKE SA id -> "we are behind a NAT" (from IkeSaEstablished): a host behind a NAT
        # does not follow the peer's address changes (RFC 7296 sec. 2.23).
        self.nat_local: dict[int, bool] = {}
        self.children: dict[int, ChildEntry] = {}
        # The lookups of forwarding (see the module doc).
        self.forwarding: dict[int, ChildEntry] = {}
        self.by_spi_in: dict[int, ChildEntry] = {}
        self.by_spi_out: dict[int, ChildEntry] = {}
        # Kept up to date with self.children so that installing or removing one Child SA
        # does not scan all of them (10,000 tunnels): the Child SAs of each IKE SA, and how
        # many Child SAs have each tunnel MTU (the TUN MTU is the smallest).
        self._children_of_ike: dict[int, dict[int, ChildEntry]] = {}
        self.mtu_counts: collections.Counter[int] = collections.Counter()
        # old child_sa_id -> the rekeyed entry whose outbound SA waits for its deletion
        self._deferred_outbound: dict[int, ChildEntry] = {}
        self._reqids: dict[tuple[str, str, str], int] = {}
        self.reqid_names: dict[int, tuple[str, str]] = {}
        # reqid -> {selector: SPD index} for the policies of installed SAs and of traps.
        self._sa_policies: dict[int, dict[Selector, int]] = {}
        self.trap_policies: dict[int, dict[Selector, int]] = {}

    # ------------------------------------------------------------------ forwarding

    def outbound(self, packet: memoryview, now: float) -> ChildEntry | Action | None:
        """The entry that protects PACKET, ``BYPASS``, or None (dropped, or held while an
        SA is negotiated: never sent in clear)."""
        return self.spd.decide(packet, now, self.forwarding)

    # ------------------------------------------------------------------ reqids, policies

    def reqid_for(self, connection: str, child: str, peer_key: str = "", fixed: int = 0) -> int:
        """``peer_key`` tells apart the Child SAs of one configured child with different
        peers (a road-warrior gateway: one per virtual IP), which must not share a reqid:
        the SPD would send every client's traffic through the newest client's SA.
        ``fixed``: the child's configured reqid (strongSwan's ``reqid``), kept from then on
        (not for a gateway's per-client Child SAs: one reqid would mix the clients);
        allocated reqids skip the numbers taken."""
        key = (connection, child, peer_key)
        reqid = self._reqids.get(key)
        if fixed and not peer_key and reqid != fixed:
            reqid = fixed
        elif reqid is None:
            reqid = len(self._reqids) + 1
            while reqid in self.reqid_names:
                reqid += 1
        self._reqids[key] = reqid
        self.reqid_names[reqid] = (connection, child)
        return reqid

    def _add_policies(
        self, table: dict[int, dict[Selector, int]], reqid: int, selectors: list[Selector],
        priority: int, template: Template, icmp: bool = False,
    ) -> None:  # fmt: skip
        known = table.setdefault(reqid, {})
        for selector in selectors:
            if selector not in known:
                policy = Policy(selector, Action.PROTECT, reqid=reqid, priority=priority,
                                template=template, icmp=icmp)  # fmt: skip
                known[selector] = self.spd.add(policy)

    def _remove_policies(self, table: dict[int, dict[Selector, int]], reqid: int) -> None:
        for index in table.pop(reqid, {}).values():
            self.spd.remove(index)

    # ------------------------------------------------------------------ install / remove

    def install(self, spec: ChildSpec, now: float) -> tuple[ChildEntry, list[str]]:
        """Install both directions of a Child SA, its policies and routes; return the entry
        and the routes added.

        Make-before-break (RFC 7296 sec. 2.8): the old inbound SA stays until it is
        deleted. Outbound, the rekey *initiator* switches to the new SA at once (the peer
        installed its inbound side before answering). The *responder* of a rekey
        (``spec.defer_outbound``) keeps sending on the old SA until the initiator deletes
        it, because the initiator installs the new SA only when our response arrives:
        sending on it earlier loses packets (strongSwan delays the responder's outbound SA
        the same way). The caller arms a fallback (:meth:`activate_outbound`)."""
        reqid = self.reqid_for(spec.connection, spec.child, spec.reqid_key, spec.fixed_reqid)
        shared_out, selectors_in = shared_selectors(tuple(spec.local_ts), tuple(spec.remote_ts))
        selectors_out = list(shared_out)
        # events: the SAD's queue from the start (Sad.add would replace a queue of their own,
        # 760 octets each, allocated only to be dropped).
        sa_in = EspSa(
            spec.spi_in, Direction.IN, spec.encr, spec.encr_key_in, spec.integ,
            spec.integ_key_in, esn=spec.esn, mode=spec.mode, lifetime=spec.lifetime,
            reqid=reqid, now=now, events=self.sad.events, replay_window=spec.replay_window,
            src=spec.remote_addr[0], dst=spec.local_addr[0],
            selectors=selectors_in, icmp=spec.icmp,
        )  # fmt: skip
        sa_out = EspSa(
            spec.spi_out, Direction.OUT, spec.encr, spec.encr_key_out, spec.integ,
            spec.integ_key_out, esn=spec.esn, mode=spec.mode, lifetime=spec.lifetime,
            reqid=reqid, now=now, events=self.sad.events,
            src=spec.local_addr[0], dst=spec.remote_addr[0],
        )  # fmt: skip
        outer_ipv6 = ":" in spec.remote_addr[0]
        outer_mtu = outer_mtu_towards(spec.remote_addr[0])
        sizes = esp_sizes(spec.encr, spec.integ)
        mtu = tunnel_mtu(outer_mtu, sizes, outer_ipv6=outer_ipv6, udp_encap=spec.udp_encap)
        entry = ChildEntry(
            spec=spec,
            reqid=reqid,
            sa_in=sa_in,
            sa_out=sa_out,
            peer=self._peer_tracker(spec),
            mtu=mtu,
            selectors_out=selectors_out,
            installed_at=now,
        )
        # SAD first, then the policies: a packet never finds a policy without its SA.
        self.sad.add(sa_in)
        if spec.defer_outbound and spec.rekey_of in self.children:
            assert spec.rekey_of is not None
            self._deferred_outbound[spec.rekey_of] = entry
        else:
            self._start_outbound(entry)
        self.children[spec.child_sa_id] = entry
        self._children_of_ike.setdefault(spec.ike_sa_id, {})[spec.child_sa_id] = entry
        self.mtu_counts[entry.mtu] += 1
        self.by_spi_in[spec.spi_in] = entry
        self.by_spi_out[spec.spi_out] = entry
        template = Template("esp", spec.mode, spec.local_addr[0], spec.remote_addr[0])
        self._add_policies(
            self._sa_policies, reqid, selectors_out, spec.priority or SA_POLICY_PRIORITY,
            template, icmp=spec.icmp,
        )  # fmt: skip
        routes = self.routes.add_child(spec.child_sa_id, spec.local_ts, spec.remote_ts)
        return entry, routes

    def _start_outbound(self, entry: ChildEntry) -> None:
        self.sad.add(entry.sa_out)
        entry.outbound_active = True
        self.forwarding[entry.reqid] = entry

    def activate_outbound(self, entry: ChildEntry) -> None:
        """Start sending on a rekeyed SA whose outbound side we held back (responder)."""
        if entry.outbound_active or entry.child_sa_id not in self.children:
            return
        self._start_outbound(entry)
        for old, pending in list(self._deferred_outbound.items()):
            if pending is entry:
                del self._deferred_outbound[old]

    def replaced(self, child_sa_id: int) -> bool:
        """Whether another Child SA of the same IKE SA and child config exists (CHILD_SA_ID
        was rekeyed, or is the redundant SA of a rekey collision)."""
        entry = self.children.get(child_sa_id)
        if entry is None:
            return False
        siblings = self._children_of_ike.get(entry.ike_sa_id, {})
        return any(other is not entry and other.child == entry.child for other in siblings.values())

    def remove(self, child_sa_id: int, *, keep_inbound: bool = False) -> ChildEntry | None:
        """Remove a Child SA (both SAs, its routes; its policies with its last SA).

        ``keep_inbound``: the inbound SA stays in the SAD (and ``by_spi_in``) until
        :meth:`drop_inbound`: for a rekeyed SA, whose packets the peer sent before it
        switched may still be on the way or waiting in our raw ESP socket's queue while
        the Delete exchange (another socket) has already been handled (issue 20: 38 of
        522 000 datagrams lost in 100 rekeys under a full-speed TCP stream). strongSwan
        keeps them 5 s the same way (charon.delete_rekeyed_delay)."""
        entry = self.children.pop(child_sa_id, None)
        if entry is None:
            return None
        siblings = self._children_of_ike.get(entry.ike_sa_id)
        if siblings is not None:
            siblings.pop(child_sa_id, None)
            if not siblings:
                del self._children_of_ike[entry.ike_sa_id]
        self.mtu_counts[entry.mtu] -= 1
        if not self.mtu_counts[entry.mtu]:
            del self.mtu_counts[entry.mtu]
        successor = self._deferred_outbound.pop(child_sa_id, None)
        if successor is not None:
            # The initiator deleted the old SA: it has the new one; switch before the old
            # outbound SA goes, so that no packet finds the reqid without an SA.
            self.activate_outbound(successor)
        if not keep_inbound:
            self.sad.delete(entry.sa_in)
        if entry.outbound_active:
            self.sad.delete(entry.sa_out)
        if self.forwarding.get(entry.reqid) is entry:
            # The newest remaining outbound SA of the reqid takes over, if any (as the SAD
            # orders them); else packets are held and an Acquire raised.
            current = self.sad.current_outbound.get(entry.reqid)
            newest = self.by_spi_out.get(current.spi) if current is not None else None
            if newest is not None and newest is not entry:
                self.forwarding[entry.reqid] = newest
            else:
                del self.forwarding[entry.reqid]
        if not keep_inbound:
            self.by_spi_in.pop(entry.sa_in.spi, None)
        self.by_spi_out.pop(entry.sa_out.spi, None)
        if self.sad.lookup_outbound(entry.reqid) is None:
            # The last SA of this child went: its policies go too (a trap, if configured,
            # stays and catches the next packet).
            self._remove_policies(self._sa_policies, entry.reqid)
        self.routes.remove_child(child_sa_id)
        return entry

    def drop_inbound(self, entry: ChildEntry) -> None:
        """The end of a removed Child SA's inbound grace (``remove(keep_inbound=True)``)."""
        if self.by_spi_in.get(entry.sa_in.spi) is entry:
            del self.by_spi_in[entry.sa_in.spi]
        self.sad.delete(entry.sa_in)

    def _peer_tracker(self, spec: ChildSpec) -> PeerAddressTracker:
        """One tracker per IKE SA, shared by its Child SAs (they move together)."""
        for entry in self._children_of_ike.get(spec.ike_sa_id, {}).values():
            return entry.peer
        nat_local = self.nat_local.get(spec.ike_sa_id, False)
        return PeerAddressTracker(spec.remote_addr, local_behind_nat=nat_local)

    def rebind_ike_sa(self, old_ike_sa_id: int, new_ike_sa_id: int) -> None:
        """After an IKE SA rekey its Child SAs belong to the new IKE SA."""
        moved = self._children_of_ike.pop(old_ike_sa_id, None)
        if moved:
            for entry in moved.values():
                entry.spec = replace(entry.spec, ike_sa_id=new_ike_sa_id)
            self._children_of_ike.setdefault(new_ike_sa_id, {}).update(moved)
        if old_ike_sa_id in self.nat_local:
            self.nat_local[new_ike_sa_id] = self.nat_local.pop(old_ike_sa_id)

    def set_outer_mtu(self, host: str, outer_mtu: int) -> int:
        """The outer path MTU towards HOST is OUTER_MTU now (aioipsec.runtime.pmtu): the
        tunnel MTU of every Child SA sending there follows. Returns how many changed."""
        changed = 0
        for entry in self.children.values():
            if entry.peer.address[0] != host:
                continue
            spec = entry.spec
            sizes = esp_sizes(spec.encr, spec.integ)
            try:
                mtu = tunnel_mtu(outer_mtu, sizes, outer_ipv6=":" in host, udp_encap=spec.udp_encap)
            except ValueError:
                continue  # a path MTU too small for ESP: keep the old one (RFC 1191 floor)
            if mtu != entry.mtu:
                self.mtu_counts[entry.mtu] -= 1
                if not self.mtu_counts[entry.mtu]:
                    del self.mtu_counts[entry.mtu]
                self.mtu_counts[mtu] += 1
                entry.mtu = mtu
                changed += 1
        return changed

    def children_of(self, ike_sa_id: int) -> dict[int, ChildEntry]:
        return self._children_of_ike.get(ike_sa_id, {})

    # ------------------------------------------------------------------ traps

    def add_trap(self, config: Any, child: Any) -> None:
        """Install the trap policies (and routes) of a ``start_action = trap`` child."""
        local_addr = _first_concrete(config.local_addrs)
        remote_addr = _first_concrete(config.remote_addrs)
        local_ts = [ts.to_range() for ts in parse_ts_list(child.local_ts, local_addr)]
        remote_ts = [ts.to_range() for ts in parse_ts_list(child.remote_ts, remote_addr)]
        reqid = self.reqid_for(config.name, child.name)
        selectors = selectors_between(local_ts, remote_ts)
        template = Template("esp", child.mode, local_addr, remote_addr)
        self._add_policies(self.trap_policies, reqid, selectors, TRAP_POLICY_PRIORITY, template)
        self.routes.add_child(-reqid, local_ts, remote_ts)
        log.info(
            "trap installed",
            connection=config.name,
            child=child.name,
            policies=[s.text() for s in selectors],
        )

    def has_trap(self, connection: str, child: str) -> bool:
        reqid = self._reqids.get((connection, child, ""))
        return reqid is not None and reqid in self.trap_policies

    def clear_traps(self) -> None:
        for reqid in list(self.trap_policies):
            self._remove_policies(self.trap_policies, reqid)
            self.routes.remove_child(-reqid)

    # ------------------------------------------------------------------ events

    def handle_events(self) -> None:
        """Byte/packet lifetimes (``SaExpired``) go to the IKE side through ``on_limit``,
        the engine rekeys (soft) or deletes (hard); ``Acquire`` through ``on_acquire``."""
        events = self.events
        while events:
            event = events.popleft()
            if isinstance(event, SaExpired):
                table = self.by_spi_in if event.direction == "in" else self.by_spi_out
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
                names = self.reqid_names.get(event.reqid)
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

    def flush(self) -> None:
        self.spd.flush()
        self.sad.flush()


def _first_concrete(addresses: list[str]) -> str | None:
    for address in addresses:
        try:
            ipaddress.ip_address(address)
            return address
        except ValueError:
            continue
    return None
