"""Virtual IP address pools for road warriors (swanctl's ``pools`` section, RFC 7296 sec. 2.19).

Three parts, none of which does I/O or reads a clock (``now`` is passed in, so the engine can
call it from inside its sans-I/O step and tests can move time):

* :func:`parse_pool` turns one ``pools.NAME`` table (TOML or swanctl.conf, already parsed
  into a dict) into :class:`PoolSettings`, with strongSwan's keys: ``addrs`` (a CIDR
  subnet, a ``from-to`` range or one address) and the attributes handed out with a lease:
  ``dns``, ``nbns``, ``dhcp``, ``netmask``, ``subnet``, ``split_include``,
  ``split_exclude`` and numeric attribute types (``25 = corp.example.com``).
* :class:`MemPool` keeps the leases of one pool the way strongSwan's ``mem_pool`` does: a
  lease belongs to the peer's identity, so the same client gets the same address back after
  a reconnect; a released lease goes *offline* and stays reserved for its owner, and is
  reassigned to somebody else only when no free address is left and the owner has been
  gone for ``reassign_after`` seconds.
* :class:`SharedPool` is a MemPool whose lease table lives in the cluster's store
  (docs/cluster.md, "VIP leases"): it decides from a mirror of the store's table and from
  addresses reserved for this member ahead of time ("spares"), and leaves its writes in an
  outbox; :mod:`aioipsec.cluster.leases` does the Redis I/O. A sync decision with no round
  trip is what keeps the engine's call sans-I/O, and the spares keep it atomic: an address
  is handed out only once the store has reserved it for this member (or bound it to the
  same identity).
* :class:`PoolManager` answers a CFG_REQUEST (``assign``) and takes addresses back
  (``release``); it implements ``ikev2.cp.ConfigProvider``, the engine's only view of pools.
  Besides the configured pools a connection may name ``radius`` (strongSwan's eap-radius
  provider): the address of the peer's RADIUS Access-Accept (Framed-IP-Address,
  Framed-IPv6-Address), handed in by the RADIUS relay with :meth:`PoolManager.offer_radius`
  before the engine asks, so the engine's call stays synchronous and free of I/O; or
  ``dhcp`` (strongSwan's dhcp plugin): with no lease for the identity yet, ``assign``
  raises ``AddressPending``, the daemon asks the DHCP server (aioipsec/dhcp.py), hands the
  answer in with :meth:`PoolManager.offer_dhcp`, and the engine asks again.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Interface, IPv6Network
from typing import Any

from ikev2.cp import AddressPending, ConfigAttributes, check_domain
from ikev2.enums import CfgType, CpAttributeType, NotifyType
from ikev2.errors import ProtocolError
from ikev2.payloads import CpAttribute, CpPayload

T = CpAttributeType
IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

# Identity strings are only keys here; this bounds what one lease record can hold.
_MAX_IDENTITY_LENGTH = 1024

# Pool names a connection may use without a pools section: addresses from elsewhere.
RADIUS_POOL = "radius"
DHCP_POOL = "dhcp"
EXTERNAL_POOLS = (RADIUS_POOL, DHCP_POOL)
# Access-Accepts whose address no CFG_REQUEST took yet (bounded: oldest dropped first).
_MAX_RADIUS_OFFERS = 65536


@dataclass(frozen=True)
class ExternalLease:
    """What an external authority says one identity gets: its RADIUS Access-Accept's
    Framed-IP-Address / Framed-IPv6-Address and DNS servers (MS-Primary/Secondary-DNS-Server,
    DNS-Server-IPv6-Address, RFC 6911). No address: a CFG_REQUEST gets none from it."""

    addresses: tuple[IPAddress, ...] = ()
    dns: tuple[IPAddress, ...] = ()
    source: str = "the RADIUS Access-Accept"


class PoolProblem(ValueError):
    """A ``pools`` entry that cannot be used: ``key`` names the offending key (or None for
    the pool itself); the configuration loader turns it into a ConfigError with its line."""

    def __init__(self, key: str | None, reason: str, hint: str | None = None) -> None:
        super().__init__(reason)
        self.key = key
        self.reason = reason
        self.hint = hint


# --------------------------------------------------------------------------- settings


@dataclass
class PoolSettings:
    """One ``pools.NAME`` section, validated.

    ``first``/``last``: the addresses handed out (inclusive). ``base``/``prefix``: how
    ``addrs`` was written, for listings (a range has prefix None). ``attributes``: what a
    CFG_REPLY carries besides the address, in configuration order.
    """

    name: str
    first: IPAddress
    last: IPAddress
    base: IPAddress
    prefix: int | None = None
    attributes: list[CpAttribute] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    source: str = ""

    @property
    def version(self) -> int:
        return self.first.version

    @property
    def size(self) -> int:
        return int(self.last) - int(self.first) + 1

    def contains(self, address: IPAddress) -> bool:
        # As integers: mypy cannot tell that both addresses are of the same family.
        low, high = int(self.first), int(self.last)
        return address.version == self.version and low <= int(address) <= high

    @property
    def addrs_text(self) -> str:
        if self.prefix is not None:
            return f"{self.base}/{self.prefix}"
        return f"{self.first}-{self.last}" if self.first != self.last else str(self.first)


def _values(value: Any) -> list[str]:
    """A swanctl list ("a, b") or a TOML list, as stripped strings."""
    items = value if isinstance(value, list) else str(value).split(",")
    out = [str(item).strip() for item in items]
    if any(not item for item in out):
        raise ValueError("an empty item in the list")
    return out


def parse_addrs(text: str) -> tuple[IPAddress, IPAddress, IPAddress, int | None]:
    """``addrs``: ``10.3.0.0/28``, ``10.3.0.1-10.3.0.20`` or ``10.3.0.1``.

    A subnet of more than two addresses leaves out its first (network) and last (broadcast)
    address, as strongSwan's mem_pool does; a ``/32``, ``/31`` (RFC 3021) or a range hands
    out every address in it. Returns ``(first, last, base, prefix)``.
    """
    text = text.strip()
    try:
        if "/" in text:
            network = ipaddress.ip_network(text, strict=False)
            first, last = network.network_address, network.broadcast_address
            if network.num_addresses > 2:
                first, last = first + 1, last - 1
            return first, last, ipaddress.ip_address(text.split("/")[0]), network.prefixlen
        if "-" in text:
            low, high = (ipaddress.ip_address(part.strip()) for part in text.split("-", 1))
            if low.version != high.version:
                raise ValueError("the two ends of the range are of different families")
            if int(high) < int(low):
                raise ValueError(f"the range ends ({high}) before it starts ({low})")
            return low, high, low, None
        address = ipaddress.ip_address(text)
        return address, address, address, None
    except ValueError as problem:
        raise PoolProblem(
            "addrs",
            f"addrs = {text!r} is not a subnet, range or address ({problem})",
            "write a CIDR subnet (10.3.0.0/24), a range (10.3.0.1-10.3.0.50) or one address",
        ) from None


# Named pool keys -> (IPv4 attribute, IPv6 attribute); None: no such attribute in IKEv2.
_NAMED: dict[str, tuple[CpAttributeType | None, CpAttributeType | None]] = {
    "dns": (T.INTERNAL_IP4_DNS, T.INTERNAL_IP6_DNS),
    "nbns": (T.INTERNAL_IP4_NBNS, None),  # IPv6 NBNS was dropped by RFC 7296
    "dhcp": (T.INTERNAL_IP4_DHCP, T.INTERNAL_IP6_DHCP),
    "netmask": (T.INTERNAL_IP4_NETMASK, None),
    "subnet": (T.INTERNAL_IP4_SUBNET, T.INTERNAL_IP6_SUBNET),
    # Cisco Unity split tunnelling is IKEv1; in IKEv2 the protected subnets are
    # INTERNAL_IPx_SUBNET (RFC 7296 sec. 3.15.2), so split_include is sent as those.
    "split_include": (T.INTERNAL_IP4_SUBNET, T.INTERNAL_IP6_SUBNET),
}
_SUBNET_TYPES = (T.INTERNAL_IP4_SUBNET, T.INTERNAL_IP6_SUBNET)
_ADDRESS_TYPES_4 = (
    T.INTERNAL_IP4_ADDRESS,
    T.INTERNAL_IP4_NETMASK,
    T.INTERNAL_IP4_DNS,
    T.INTERNAL_IP4_NBNS,
    T.INTERNAL_IP4_DHCP,
    T.P_CSCF_IP4_ADDRESS,
)
_ADDRESS_TYPES_6 = (T.INTERNAL_IP6_DNS, T.INTERNAL_IP6_DHCP, T.P_CSCF_IP6_ADDRESS)
_POOL_KEYS = ", ".join(["addrs", *_NAMED, "split_exclude", "<attribute number>"])


def _encode_network(kind: int, network: IPNetwork) -> CpAttribute:
    if isinstance(network, IPv4Network):
        return CpAttribute(kind, network.network_address.packed + network.netmask.packed)
    return CpAttribute(kind, network.network_address.packed + bytes((network.prefixlen,)))


def _named_attribute(key: str, text: str) -> CpAttribute:
    v4_type, v6_type = _NAMED[key]
    subnet = v4_type in _SUBNET_TYPES
    value = ipaddress.ip_network(text, strict=False) if subnet else ipaddress.ip_address(text)
    kind = v4_type if value.version == 4 else v6_type
    if kind is None:
        raise ValueError(f"IKEv2 has no IPv6 {key} attribute")
    if isinstance(value, IPv4Network | IPv6Network):
        return _encode_network(kind, value)
    return CpAttribute(kind, value.packed)


def _numeric_attribute(kind: int, text: str) -> CpAttribute:
    """``<number> = value``: encoded by what the type carries (RFC 7296 sec. 3.15.1)."""
    if kind in _SUBNET_TYPES:
        return _encode_network(kind, ipaddress.ip_network(text, strict=False))
    if kind in _ADDRESS_TYPES_4:
        return CpAttribute(kind, IPv4Address(text).packed)
    if kind in _ADDRESS_TYPES_6:
        return CpAttribute(kind, IPv6Address(text).packed)
    if kind in (T.INTERNAL_IP6_ADDRESS, T.INTERNAL_IP6_ADDRESS.value):
        interface = IPv6Interface(text)
        return CpAttribute(kind, interface.ip.packed + bytes((interface.network.prefixlen,)))
    if kind == T.INTERNAL_DNS_DOMAIN:
        return CpAttribute(kind, check_domain(text).encode("ascii"))
    if text[:2].lower() == "0x":
        return CpAttribute(kind, bytes.fromhex(text[2:]))
    try:
        return CpAttribute(kind, ipaddress.ip_address(text).packed)
    except ValueError:
        # strongSwan's attr plugin sends any other value as its text.
        return CpAttribute(kind, text.encode("utf-8"))


def parse_pool(name: str, table: Mapping[str, Any], source: str = "") -> PoolSettings:
    """One ``pools.NAME`` table into :class:`PoolSettings` (or :class:`PoolProblem`)."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
        raise PoolProblem(None, f"pool name {name!r} is not usable",
                          "use letters, digits, '-', '_' and '.' (at most 64)")  # fmt: skip
    if "addrs" not in table or table["addrs"] in (None, ""):
        raise PoolProblem(None, f"pool {name!r} has no addrs",
                          "add addrs = <subnet, range or address> (e.g. 10.3.0.0/24)")  # fmt: skip
    if isinstance(table["addrs"], list):
        if len(table["addrs"]) != 1:
            raise PoolProblem(
                "addrs",
                "addrs takes one subnet, range or address",
                "define one pool per subnet and list them in the connection: pools = a, b",
            )
        addrs_text = str(table["addrs"][0])
    else:
        addrs_text = str(table["addrs"])
    first, last, base, prefix = parse_addrs(addrs_text)
    pool = PoolSettings(name, first, last, base, prefix, source=source)
    for key, value in table.items():
        if key == "addrs" or value is None:
            continue
        if isinstance(value, dict):
            raise PoolProblem(key, "expected a value, found a section")
        try:
            items = _values(value)
        except ValueError as problem:
            raise PoolProblem(key, str(problem)) from None
        if key == "split_exclude":
            # No IKEv2 attribute excludes subnets (Unity's is IKEv1 only): say so, once.
            pool.warnings.append(
                f"pools.{name}.split_exclude is a Cisco Unity (IKEv1) attribute: IKEv2 "
                "clients are not told about it; narrow remote_ts instead"
            )
            continue
        for text in items:
            try:
                if key in _NAMED:
                    pool.attributes.append(_named_attribute(key, text))
                elif key.isdigit():
                    kind = int(key)
                    if not 0 < kind < 0x8000 or kind in (T.INTERNAL_IP4_ADDRESS, 8):
                        raise ValueError(
                            "not an attribute a pool can hand out (1..32767, not an address)"
                        )
                    pool.attributes.append(_numeric_attribute(kind, text))
                elif key == "server":
                    raise PoolProblem(
                        key,
                        "strongSwan's private 'server' attribute is not supported",
                        "give its number instead (e.g. 23456 = <address>)",
                    )
                else:
                    raise PoolProblem(
                        key, f"unknown key {key!r} in a pool", f"known keys: {_POOL_KEYS}"
                    )
            except ValueError as problem:
                if isinstance(problem, PoolProblem):
                    raise
                raise PoolProblem(key, f"{key} = {text!r}: {problem}") from None
            try:
                # The value must be what a client decodes (RFC 7296 sec. 3.15.1 formats).
                ConfigAttributes.from_payload(CpPayload(CfgType.CFG_REPLY, pool.attributes[-1:]))
            except ProtocolError as problem:
                raise PoolProblem(key, f"{key} = {text!r}: {problem.reason}") from None
    return pool


def parse_vips(value: Any) -> list[IPAddress]:
    """A connection's ``vips`` (client side): ``0.0.0.0`` / ``::`` ask for any address of
    that family, another address asks for that one."""
    out: list[IPAddress] = []
    for text in _values(value):
        try:
            out.append(ipaddress.ip_address(text))
        except ValueError:
            raise ValueError(
                f"{text!r} is not an address (vips = 0.0.0.0, :: asks for any)"
            ) from None
    return out


# --------------------------------------------------------------------------- leases


@dataclass
class Lease:
    address: IPAddress
    identity: str
    online: bool = True
    refs: int = 1  # IKE SAs using this lease (one identity may hold two while reauthenticating)
    since: float = 0.0  # when it went online, or offline


class MemPool:
    """The leases of one pool, strongSwan's mem_pool semantics (see the module docstring)."""

    def __init__(self, settings: PoolSettings, reassign_after: float = 0.0) -> None:
        self.settings = settings
        self.reassign_after = reassign_after
        self._first = int(settings.first)
        self._leases: dict[int, Lease] = {}  # offset -> lease
        self._by_identity: dict[str, list[int]] = {}
        self._next_unused = 0  # offsets below this were handed out at least once

    @property
    def name(self) -> str:
        return self.settings.name

    def _address(self, offset: int) -> IPAddress:
        return ipaddress.ip_address(self._first + offset)

    def _offset(self, address: IPAddress) -> int | None:
        if not self.settings.contains(address):
            return None
        return int(address) - self._first

    def _take(self, offset: int, identity: str, now: float) -> IPAddress:
        old = self._leases.get(offset)
        if old is not None and old.identity != identity:
            self._by_identity[old.identity].remove(offset)
            if not self._by_identity[old.identity]:
                del self._by_identity[old.identity]
        if old is not None and old.identity == identity:
            old.refs = old.refs + 1 if old.online else 1
            old.online, old.since = True, now
        else:
            self._leases[offset] = Lease(self._address(offset), identity, since=now)
            self._by_identity.setdefault(identity, []).append(offset)
        return self._address(offset)

    def acquire(self, identity: str, requested: IPAddress | None, now: float) -> IPAddress | None:
        """An address for ``identity`` (None: pool exhausted).

        Order, as mem_pool: the address the peer asks for when it is free or already its
        own; else the identity's offline lease (its previous address); else a never-used
        address; else a free address; else the oldest offline lease of another identity
        whose owner has been gone ``reassign_after`` seconds.
        """
        if requested is not None and requested.packed.strip(b"\0"):
            offset = self._offset(requested)
            if offset is not None:
                lease = self._leases.get(offset)
                if lease is None or lease.identity == identity:
                    return self._take(offset, identity, now)
        for offset in self._by_identity.get(identity, []):
            if not self._leases[offset].online:
                return self._take(offset, identity, now)
        size = self.settings.size
        while self._next_unused < size:
            offset = self._next_unused
            self._next_unused += 1
            if offset not in self._leases:
                return self._take(offset, identity, now)
        offline = [
            (lease.since, offset)
            for offset, lease in self._leases.items()
            if not lease.online and now - lease.since >= self.reassign_after
        ]
        if offline:
            return self._take(min(offline)[1], identity, now)
        return None

    def release(self, identity: str, address: IPAddress, now: float) -> bool:
        """One IKE SA of ``identity`` gave ``address`` back; the lease goes offline (kept for
        the identity) when no other IKE SA uses it. False: not a lease of ours."""
        offset = self._offset(address)
        lease = self._leases.get(offset) if offset is not None else None
        if lease is None or lease.identity != identity or not lease.online:
            return False
        lease.refs -= 1
        if lease.refs <= 0:
            lease.online, lease.refs, lease.since = False, 0, now
        return True

    def leases(self) -> list[Lease]:
        return sorted(self._leases.values(), key=lambda lease: int(lease.address))

    @property
    def online(self) -> int:
        return sum(lease.online for lease in self._leases.values())

    @property
    def offline(self) -> int:
        return sum(not lease.online for lease in self._leases.values())


# --------------------------------------------------------------------------- shared leases


@dataclass
class SharedRecord:
    """One address in the cluster store's lease table. ``state``: ``spare`` (reserved for
    ``member``, no identity yet), ``online`` or ``offline`` (bound to ``identity``, which
    keeps it while offline, as mem_pool does). ``since``: wall-clock seconds of the last
    change, stamped by the writer (:mod:`aioipsec.cluster.leases`)."""

    identity: str
    member: str
    state: str
    since: float = 0.0

    def encode(self) -> str:
        return json.dumps(
            {"identity": self.identity, "member": self.member, "state": self.state,
             "since": round(self.since, 3)}, sort_keys=True
        )  # fmt: skip

    @classmethod
    def decode(cls, text: str) -> SharedRecord | None:
        try:
            data = json.loads(text)
            record = cls(str(data["identity"]), str(data["member"]), str(data["state"]),
                         float(data.get("since", 0.0)))  # fmt: skip
        except (ValueError, KeyError, TypeError):
            return None
        return record if record.state in ("spare", "online", "offline") else None


# Outbox modes, checked by the store's script (aioipsec/cluster/leases.py): "bind" writes
# when the address is free, ours, or the same identity's; "release" only when it is still
# ours for that identity (a member the client moved to keeps it online).
BIND, RELEASE = "bind", "release"


class SharedPool(MemPool):
    """A pool whose lease table lives in the cluster store (see the module docstring).

    ``mirror``: the store's table as last read, with this member's pending writes on top.
    ``spares``: addresses the store reserved for this member and no identity holds yet.
    ``outbox``: address -> (mode, record) still to write. Local :class:`Lease` objects keep
    the reference counts of this member's IKE SAs, as in MemPool.
    """

    def __init__(self, settings: PoolSettings, reassign_after: float, member: str) -> None:
        super().__init__(settings, reassign_after)
        self.member = member
        self.mirror: dict[IPAddress, SharedRecord] = {}
        self.spares: set[IPAddress] = set()
        self.outbox: dict[IPAddress, tuple[str, SharedRecord]] = {}
        self.on_change: Callable[[], None] = lambda: None
        self.store_usable = False  # the store answered the last sync
        self.starved = 0  # requests refused since the last sync for want of an address
        self.log: list[str] = []

    def _online_here(self, address: IPAddress) -> bool:
        """An IKE SA here holds it (another of the identity's devices: mem_pool gives that
        one a different address)."""
        lease = self._leases.get(int(address) - self._first)
        return lease is not None and lease.online

    def _claim(self, address: IPAddress, identity: str, now: float) -> IPAddress:
        offset = int(address) - self._first
        self._take(offset, identity, now)
        self.spares.discard(address)
        record = SharedRecord(identity, self.member, "online")
        self.mirror[address] = record
        self.outbox[address] = (BIND, record)
        self.on_change()
        return address

    def acquire(self, identity: str, requested: IPAddress | None, now: float) -> IPAddress | None:
        """As MemPool, from what the store knows: the requested address when the store has
        it for this identity (a client moved here by a redirect asks for its VIP) or it is
        one of our spares; else the identity's lease anywhere in the cluster, even online at
        another member (a client that follows a redirect without asking for its address,
        as charon does: one IKE SA per identity, strongSwan's default uniqueids = yes,
        which reassigns an online lease to the identity's new IKE SA); else a spare.
        Never an address the store has not given us: None when no spare is left."""
        if (
            requested is not None
            and requested.packed.strip(b"\0")
            and self.settings.contains(requested)
        ):
            record = self.mirror.get(requested)
            if requested in self.spares or (record is not None and record.identity == identity):
                return self._claim(requested, identity, now)
        own = sorted(
            (address for address, record in self.mirror.items()
             if record.identity == identity and record.state != "spare"
             and not self._online_here(address)),
            key=int,
        )  # fmt: skip
        if own:
            return self._claim(own[0], identity, now)
        if self.spares:
            return self._claim(min(self.spares, key=int), identity, now)
        # Only now may an idle lease of another identity be reassigned (mem_pool does it
        # when the pool is full, never ahead): the next sync reserves one for the retry.
        self.starved += 1
        self.on_change()
        return None

    def release(self, identity: str, address: IPAddress, now: float) -> bool:
        if not super().release(identity, address, now):
            return False
        lease = self._leases[int(address) - self._first]
        if not lease.online:
            record = SharedRecord(identity, self.member, "offline")
            current = self.mirror.get(address)
            if current is None or current.member == self.member:
                self.mirror[address] = record
            self.outbox[address] = (RELEASE, record)
            self.on_change()
        return True

    # The store side (aioipsec/cluster/leases.py) calls these.

    def load_mirror(self, table: Mapping[IPAddress, SharedRecord]) -> bool:
        """The store's table was read: it becomes the mirror (pending writes on top), and a
        spare the store no longer has for us (reclaimed while we were cut off) is dropped.
        True when the store lacks leases online here (it restarted empty): they are put
        in the outbox again, and the caller writes them before reserving anything."""
        mirror = {a: r for a, r in table.items() if self.settings.contains(a)}
        lost = False
        # Nobody deletes a field: one that is missing was lost with the store's data. Our
        # online leases and our spares are written back (nobody reserves anything while
        # the store's grace period runs, aioipsec/cluster/leases.py).
        for lease in self._leases.values():
            if lease.online and lease.address not in mirror and lease.address not in self.outbox:
                self.outbox[lease.address] = (
                    BIND,
                    SharedRecord(lease.identity, self.member, "online"),
                )
                lost = True
        for address in self.spares:
            if address not in mirror and address not in self.outbox:
                self.outbox[address] = (BIND, SharedRecord("", self.member, "spare"))
                lost = True
        for address, (_, record) in self.outbox.items():
            mirror[address] = record
        self.mirror = mirror
        self.spares = {
            a for a, r in mirror.items() if r.state == "spare" and r.member == self.member
        }  # fmt: skip
        return lost

    def free_candidates(self, count: int) -> list[IPAddress]:
        """Up to ``count`` addresses the mirror has no record of, lowest first."""
        out: list[IPAddress] = []
        for offset in range(self.settings.size):
            address = self._address(offset)
            if address not in self.mirror:
                out.append(address)
                if len(out) >= count:
                    break
        return out

    def reclaimable(self, wall: float, alive: set[str]) -> list[tuple[IPAddress, SharedRecord]]:
        """Records another identity may have once no free address is left: spares of a
        member that is gone, and leases offline (or online at a member that is gone) for
        ``reassign_after`` seconds, oldest first (mem_pool's reassignment)."""
        out = []
        for address, record in self.mirror.items():
            gone = record.member not in alive and record.member != self.member
            lost_spare = record.state == "spare" and gone
            idle = record.state == "offline" or (record.state == "online" and gone)
            if lost_spare or (idle and wall - record.since >= self.reassign_after):
                out.append((address, record))
        return sorted(out, key=lambda item: item[1].since)

    def add_spare(self, address: IPAddress, record: SharedRecord) -> None:
        self.mirror[address] = record
        self.spares.add(address)

    def written(self, address: IPAddress, sent: tuple[str, SharedRecord], ok: bool) -> None:
        """The outbox entry ``sent`` was written (or refused by the store's checks)."""
        if self.outbox.get(address) is sent:
            del self.outbox[address]
        mode, record = sent
        if not ok and mode == RELEASE:
            self.log.append(
                f"{address} of {record.identity} stays online in the cluster: another member "
                "holds it now (the client moved there)"
            )
        elif not ok:
            self.log.append(
                f"the cluster store refused to bind {address} to {record.identity}: another "
                "member holds it for another identity"
            )

    def shared_leases(self) -> list[tuple[IPAddress, SharedRecord]]:
        return sorted(
            ((a, r) for a, r in self.mirror.items() if r.state != "spare"),
            key=lambda item: int(item[0]),
        )

    def warn_exhausted(self) -> str:
        if not self.store_usable:
            return (
                f"the cluster store is unreachable and the {len(self.spares)} address(es) "
                "it reserved for this member are used up: no new lease until it is back"
            )
        return (
            "no address is free in the cluster store (a lease offline for reassign_after is "
            "reserved for the next attempt, if there is one)"
        )

    def listing(self) -> tuple[int, int]:
        online = sum(r.state == "online" for r in self.mirror.values())
        offline = sum(r.state == "offline" for r in self.mirror.values())
        return online, offline


class PoolManager:
    """All pools of the daemon; the engine's ``ConfigProvider`` (``ikev2.cp``)."""

    def __init__(self, pools: Iterable[PoolSettings] = (), reassign_after: float = 0.0) -> None:
        self.pools: dict[str, MemPool] = {}
        self.reassign_after = reassign_after
        self.log: list[str] = []  # lines for the daemon's log, taken by take_log()
        self.member: str | None = None  # set by share(): the leases live in the cluster store
        self.on_change: Callable[[], None] = lambda: None
        # pools = radius: identity -> the Access-Accept's addresses, until released.
        self.radius: dict[str, ExternalLease] = {}
        self.radius_online: dict[IPAddress, str] = {}
        # pools = dhcp: identity -> the DHCP server's answer (no address: why not), until
        # assigned; the addresses assigned; the ones to RELEASE (taken by the daemon).
        self.dhcp: dict[str, ExternalLease] = {}
        self.dhcp_online: dict[IPAddress, str] = {}
        self.dhcp_released: list[tuple[str, IPAddress]] = []
        for settings in pools:
            self.pools[settings.name] = self._new_pool(settings)

    def _new_pool(self, settings: PoolSettings) -> MemPool:
        if self.member is None:
            return MemPool(settings, self.reassign_after)
        pool = SharedPool(settings, self.reassign_after, self.member)
        pool.on_change = self.on_change
        return pool

    def share(self, member: str, on_change: Callable[[], None]) -> None:
        """From now on the leases live in the cluster store (aioipsec/cluster/leases.py),
        as ``member``; called once at start, before any lease is taken."""
        self.member, self.on_change = member, on_change
        self.pools = {name: self._new_pool(pool.settings) for name, pool in self.pools.items()}

    def shared_pools(self) -> list[SharedPool]:
        return [pool for pool in self.pools.values() if isinstance(pool, SharedPool)]

    def replace(self, pools: Iterable[PoolSettings]) -> None:
        """A configuration reload: pools whose addrs did not change keep their leases."""
        new: dict[str, MemPool] = {}
        for settings in pools:
            old = self.pools.get(settings.name)
            if old is not None and old.settings.addrs_text == settings.addrs_text:
                old.settings = settings
                new[settings.name] = old
            else:
                new[settings.name] = self._new_pool(settings)
        self.pools = new

    def take_log(self) -> list[str]:
        lines, self.log = self.log, []
        for pool in self.shared_pools():
            lines += pool.log
            pool.log = []
        return lines

    def offer_radius(self, identity: str, lease: ExternalLease) -> None:
        """The RADIUS relay's Access-Accept for ``identity`` (the EAP identity, the one
        ``assign`` is asked for after EAP); replaces an earlier one."""
        identity = identity[:_MAX_IDENTITY_LENGTH]
        self.radius.pop(identity, None)
        while len(self.radius) >= _MAX_RADIUS_OFFERS:
            del self.radius[next(iter(self.radius))]
        self.radius[identity] = lease

    def offer_dhcp(self, identity: str, lease: ExternalLease) -> None:
        """The DHCP server's answer for ``identity`` (no address: ``lease.source`` says why),
        asked for by ``AddressPending``; the engine's next ``assign`` takes it."""
        identity = identity[:_MAX_IDENTITY_LENGTH]
        self.dhcp.pop(identity, None)
        while len(self.dhcp) >= _MAX_RADIUS_OFFERS:
            del self.dhcp[next(iter(self.dhcp))]
        self.dhcp[identity] = lease

    def take_dhcp_releases(self) -> list[tuple[str, IPAddress]]:
        released, self.dhcp_released = self.dhcp_released, []
        return released

    def _dhcp_address(
        self, identity: str, version: int
    ) -> tuple[IPAddress | None, list[CpAttribute], str]:
        if version != 4:
            return None, [], "pool dhcp: DHCP gives IPv4 addresses only"
        lease = self.dhcp.pop(identity, None)
        if lease is None or not lease.addresses:
            why = lease.source if lease is not None else "no DHCP answer"
            return None, [], f"pool dhcp: {why}"
        dns = [_named_attribute("dns", str(a)) for a in lease.dns]
        return lease.addresses[0], dns, ""

    def _radius_address(
        self, identity: str, version: int
    ) -> tuple[IPAddress | None, list[CpAttribute], str]:
        """pools = radius: the Access-Accept's address of this family, its DNS attributes,
        or None and why not."""
        lease = self.radius.get(identity)
        if lease is None:
            return (
                None,
                [],
                (
                    f"pool radius: no RADIUS Access-Accept for {identity} (remote auth must be "
                    "eap-radius, the EAP identity being the RADIUS User-Name)"
                ),
            )
        family = [a for a in lease.addresses if a.version == version]
        if not family:
            attribute = "Framed-IP-Address" if version == 4 else "Framed-IPv6-Address"
            return (
                None,
                [],
                (
                    f"pool radius: {lease.source} for {identity} carried no {attribute} (add one "
                    "to the user on the RADIUS server, or name another pool after radius)"
                ),
            )
        dns = [_named_attribute("dns", str(a)) for a in lease.dns if a.version == version]
        return family[0], dns, ""

    def _pools(self, names: Sequence[str]) -> list[MemPool]:
        names = [name for name in names if name not in EXTERNAL_POOLS]
        missing = [name for name in names if name not in self.pools]
        if missing:
            raise ProtocolError(
                f"the connection names pool(s) {', '.join(missing)} that are not defined",
                NotifyType.INTERNAL_ADDRESS_FAILURE,
            )
        return [self.pools[name] for name in names]

    def assign(
        self, pool_names: Sequence[str], identity: str, request: ConfigAttributes, now: float
    ) -> ConfigAttributes:
        """The CFG_REPLY for ``request`` (RFC 7296 sec. 2.19, 3.15.4).

        One address per family asked for (empty attribute or a proposed address), from the
        first of the connection's pools of that family with room; the pool's attributes
        (DNS, subnets, ...) of the families assigned. Raises ProtocolError
        INTERNAL_ADDRESS_FAILURE when addresses were asked for and none could be given; in
        that case no lease is taken.
        """
        if len(identity) > _MAX_IDENTITY_LENGTH:
            identity = identity[:_MAX_IDENTITY_LENGTH]
        pools = self._pools(pool_names)
        wanted: dict[int, IPAddress | None] = {}
        for kind, version in ((T.INTERNAL_IP4_ADDRESS, 4), (T.INTERNAL_IP6_ADDRESS, 6)):
            if kind in request.requested:
                wanted[version] = None
        for address in request.virtual_ips:
            wanted.setdefault(address.version, address)
        if DHCP_POOL in pool_names and 4 in wanted and identity not in self.dhcp:
            # Before any lease is taken: the engine asks again once the DHCP answer is in.
            raise AddressPending(DHCP_POOL, identity)
        reply = ConfigAttributes(CfgType.CFG_REPLY)
        taken: list[tuple[MemPool, IPAddress]] = []
        external: list[tuple[IPAddress, list[CpAttribute]]] = []
        failed: list[str] = []
        for version, requested in sorted(wanted.items(), key=lambda item: item[0]):
            sources = [name for name in EXTERNAL_POOLS if name in pool_names]
            if sources:
                # The external sources are asked first wherever they are named (they never
                # run out), then the configured pools of the family.
                whys = []
                for source in sources:
                    if source == RADIUS_POOL:
                        framed, attributes, why = self._radius_address(identity, version)
                        online = self.radius_online
                    else:
                        framed, attributes, why = self._dhcp_address(identity, version)
                        online = self.dhcp_online
                    if framed is not None:
                        break
                    whys.append(why)
                if framed is not None:
                    external.append((framed, attributes))
                    online[framed] = identity
                    self.log.append(f"assigned {framed} from pool {source} to {identity}")
                    continue
                why = "; ".join(whys)
                family_pools = [p for p in pools if p.settings.version == version]
                if not family_pools:
                    failed.append(f"IPv{version}: {why}")
                    continue
                self.log.append(f"{why}; trying pool(s) {', '.join(p.name for p in family_pools)}")
            family = [pool for pool in pools if pool.settings.version == version]
            if requested is not None and not any(p.settings.contains(requested) for p in family):
                self.log.append(
                    f"{identity} asked for {requested}, which is in none of the pools "
                    f"{', '.join(p.name for p in family) or '(none of IPv' + str(version) + ')'}"
                    ": assigning another address"
                )
            for pool in family:
                got = pool.acquire(identity, requested, now)
                if got is not None:
                    taken.append((pool, got))
                    self.log.append(f"assigned {got} from pool {pool.name} to {identity}")
                    break
            else:
                names = ", ".join(
                    f"{p.name} ({p.settings.addrs_text}: {p.online} online, {p.offline} offline"
                    + (f"; {p.warn_exhausted()}" if isinstance(p, SharedPool) else "")
                    + ")"
                    for p in family
                )
                failed.append(f"IPv{version}: " + (f"pool {names} exhausted" if family else
                              "no pool of this family"))  # fmt: skip
        if wanted and not taken and not external:
            raise ProtocolError(
                f"no virtual IP for {identity}: {'; '.join(failed)}",
                NotifyType.INTERNAL_ADDRESS_FAILURE,
            )
        for line in failed:
            self.log.append(f"{identity}: {line}; the other family was assigned")
        for pool, address in taken:
            if isinstance(address, IPv4Address):
                reply.ip4_addresses.append(address)
            else:
                reply.ip6_addresses.append(IPv6Interface((address, 128)))
            for attribute in pool.settings.attributes:
                reply.other.append(attribute)
        for address, attributes in external:
            if isinstance(address, IPv4Address):
                reply.ip4_addresses.append(address)
            else:
                reply.ip6_addresses.append(IPv6Interface((address, 128)))
            reply.other.extend(attributes)
        # Decode the pools' attributes into their typed fields (DNS, subnets, ...), so the
        # reply is one ConfigAttributes whatever way an attribute was configured.
        typed = ConfigAttributes.from_payload(reply.to_payload())
        if T.SUPPORTED_ATTRIBUTES in request.requested:
            typed.supported_attributes = [
                T.INTERNAL_IP4_ADDRESS,
                T.INTERNAL_IP6_ADDRESS,
                *sorted({a.type for pool in pools for a in pool.settings.attributes}),
            ]
        return typed

    def release(self, identity: str, addresses: Sequence[IPAddress], now: float) -> None:
        """An IKE SA that held ``addresses`` is gone (deleted, expired, failed)."""
        identity = identity[:_MAX_IDENTITY_LENGTH]
        for address in addresses:
            # External leases go by address: the engine releases the addresses the IKE SA
            # held, under its IKE identity, while an EAP peer's lease has its EAP identity.
            owner = self.radius_online.pop(address, None)
            if owner is not None:
                # The Access-Accept's address is the server's to give again; ours no more.
                self.radius.pop(owner, None)
                self.log.append(f"lease {address} of {owner} from pool radius released")
                continue
            owner = self.dhcp_online.pop(address, None)
            if owner is not None:
                self.dhcp_released.append((owner, address))
                self.log.append(f"lease {address} of {owner} from pool dhcp released")
                continue
            for pool in self.pools.values():
                if pool.release(identity, address, now):
                    self.log.append(f"lease {address} of {identity} in pool {pool.name} offline")
                    break

    def listing(self, leases: bool = True) -> list[dict[str, Any]]:
        """What ``aioipsec pools`` shows (``swanctl --list-pools [--leases]``)."""
        out = []
        for pool in self.pools.values():
            entry: dict[str, Any] = {
                "name": pool.name,
                "base": str(pool.settings.base),
                "addrs": pool.settings.addrs_text,
                "size": pool.settings.size,
                "online": pool.online,
                "offline": pool.offline,
            }
            if isinstance(pool, SharedPool):
                # The cluster's table (the store's, as last read): every member's leases.
                entry["online"], entry["offline"] = pool.listing()
                entry["member"] = pool.member
                entry["spares"] = len(pool.spares)
                entry["store"] = "reachable" if pool.store_usable else "unreachable"
                if leases:
                    entry["leases"] = [
                        {"address": str(address), "identity": record.identity,
                         "status": record.state, "member": record.member}
                        for address, record in pool.shared_leases()
                    ]  # fmt: skip
                out.append(entry)
                continue
            if leases:
                entry["leases"] = [
                    {
                        "address": str(lease.address),
                        "identity": lease.identity,
                        "status": "online" if lease.online else "offline",
                    }
                    for lease in pool.leases()
                ]
            out.append(entry)
        for name, base, online in (
            (RADIUS_POOL, "(RADIUS Framed-IP-Address)", self.radius_online),
            (DHCP_POOL, "(DHCP server)", self.dhcp_online),
        ):
            if not online:
                continue
            entry = {"name": name, "base": base, "addrs": "", "size": len(online),
                     "online": len(online), "offline": 0}  # fmt: skip
            if leases:
                entry["leases"] = [
                    {"address": str(address), "identity": identity, "status": "online"}
                    for address, identity in online.items()
                ]
            out.append(entry)
        return out


def format_pools(listing: list[dict[str, Any]]) -> str:
    """``swanctl --list-pools --leases`` layout: name, base, online / offline / size."""
    lines = []
    for pool in listing:
        counts = f"{pool['online']} / {pool['offline']} / {pool['size']}"
        lines.append(f"{pool['name']:<20} {pool['base']:<39} {counts}")
        if "member" in pool:
            lines.append(f"  cluster leases (store {pool['store']}; {pool['spares']} address(es) "
                         f"reserved for {pool['member']})")  # fmt: skip
        for lease in pool.get("leases", []):
            at = f"  at {lease['member']}" if "member" in lease else ""
            lines.append(
                f"  {lease['address']:<39} {lease['status']:<7}  '{lease['identity']}'{at}"
            )
    return "\n".join(lines) + ("\n" if lines else "no pools\n")
