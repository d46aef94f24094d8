"""Configuration payload attributes (RFC 7296 sec. 2.19, 3.15; RFC 8598), typed.

The wire codec of the CP payload itself is :class:`ikev2.payloads.CpPayload` (registered with
the payload parser like every payload): it keeps each attribute as ``(type, value octets)``
so that any CP, including attributes nobody here knows, re-serializes byte for byte. This
module is the layer above it that understands the values: :class:`ConfigAttributes` decodes
a CP payload into addresses, subnets, DNS domains, ... and encodes one back.

Why two layers: an attribute's value format depends on its type (sec. 3.15.1), just as a KE
value's length depends on its group, and such semantic checks belong to the code that
understands them (``ikev2.payloads``, validation policy). A malformed value of a known
attribute raises :class:`ikev2.errors.ProtocolError` (INVALID_SYNTAX) here, naming the
attribute, so the exchange fails before any lease is taken; unknown attributes are kept
verbatim in ``ConfigAttributes.other`` and listed by :meth:`ConfigAttributes.describe`.

RFC 7296 sec. 3.15.1 value formats (lengths in octets; every attribute may be sent empty
in a CFG_REQUEST to ask for "any value", sec. 3.15.1: "zero length ... means request")::

    Attribute Type          Value  Multi-Valued  Length
    ----------------------  -----  ------------  -------------
    INTERNAL_IP4_ADDRESS     1     YES*          0 or 4
    INTERNAL_IP4_NETMASK     2     NO            0 or 4
    INTERNAL_IP4_DNS         3     YES           0 or 4
    INTERNAL_IP4_NBNS        4     YES           0 or 4
    INTERNAL_ADDRESS_EXPIRY  5     NO            0 or 4   (RFC 4306 only)
    INTERNAL_IP4_DHCP        6     YES           0 or 4
    APPLICATION_VERSION      7     NO            0 or more
    INTERNAL_IP6_ADDRESS     8     YES*          0 or 17
    INTERNAL_IP6_DNS        10     YES           0 or 16
    INTERNAL_IP6_DHCP       12     YES           0 or 16
    INTERNAL_IP4_SUBNET     13     YES           0 or 8
    SUPPORTED_ATTRIBUTES    14     NO            Multiple of 2
    INTERNAL_IP6_SUBNET     15     YES           17
    INTERNAL_DNS_DOMAIN     25     YES           0 or more (RFC 8598 sec. 4.1)

    (*) "These attributes may be multi-valued on return only if multiple addresses
        were requested" (sec. 3.15.1).

INTERNAL_IP6_ADDRESS and INTERNAL_IP6_SUBNET: a 16-octet address, then a 1-octet prefix
length (sec. 3.15.1). INTERNAL_IP4_SUBNET: a 4-octet address, then a 4-octet netmask.
SUPPORTED_ATTRIBUTES: a list of 16-bit attribute types. INTERNAL_DNS_DOMAIN (RFC 8598
sec. 4.1): a domain name in presentation format ("example.com"), not NUL-terminated::

                         1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-----------------------------+-------------------------------+
    |R|         Attribute Type      |            Length             |
    +-+-----------------------------+-------------------------------+
    |                                                               |
    ~                          Domain Name                          ~
    |                                                               |
    +---------------------------------------------------------------+
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
    ip_address,
)
from typing import Protocol, Self

from ikev2.enums import CfgType, CpAttributeType, NotifyType
from ikev2.errors import ProtocolError
from ikev2.payloads import CpAttribute, CpPayload, as_enum

T = CpAttributeType

# The IPv4 address attributes: 4 octets (or empty), one address each.
_IP4_LISTS = {
    T.INTERNAL_IP4_ADDRESS: "ip4_addresses",
    T.INTERNAL_IP4_NETMASK: "ip4_netmasks",
    T.INTERNAL_IP4_DNS: "ip4_dns",
    T.INTERNAL_IP4_NBNS: "ip4_nbns",
    T.INTERNAL_IP4_DHCP: "ip4_dhcp",
}
# The IPv6 address attributes without a prefix length: 16 octets (or empty).
_IP6_LISTS = {
    T.INTERNAL_IP6_DNS: "ip6_dns",
    T.INTERNAL_IP6_DHCP: "ip6_dhcp",
}

# RFC 8598 sec. 4.1 asks for an A-label (IDNA, RFC 5890) in presentation format: letters,
# digits, hyphens, dots; underscores appear in real zone names (RFC 8552), so they pass too.
_DOMAIN_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._")
_MAX_DOMAIN_LENGTH = 253  # RFC 1035 sec. 2.3.4: 255 octets on the wire, 253 as text


def _malformed(attribute: int, reason: str) -> ProtocolError:
    name = _type_name(attribute)
    return ProtocolError(f"CP attribute {name}: {reason}", NotifyType.INVALID_SYNTAX)


def _type_name(attribute: int) -> str:
    try:
        return CpAttributeType(attribute).name
    except ValueError:
        return f"type {attribute}"


def _expect_length(attribute: int, value: bytes, *allowed: int) -> None:
    if len(value) not in allowed:
        wanted = " or ".join(str(n) for n in allowed)
        raise _malformed(attribute, f"{len(value)} octets, {wanted} expected (RFC 7296 3.15.1)")


def _netmask_prefix(mask: bytes) -> int | None:
    """The prefix length of a contiguous netmask, None when the mask has holes."""
    value = int.from_bytes(mask, "big")
    inverted = ~value & 0xFFFFFFFF
    if inverted & (inverted + 1):
        return None
    return 32 - inverted.bit_length()


def check_domain(name: str) -> str:
    """An INTERNAL_DNS_DOMAIN value as RFC 8598 sec. 4.1 defines it, or ValueError."""
    if not name:
        raise ValueError("empty (an empty attribute is the request form, RFC 8598 sec. 4.1)")
    if len(name) > _MAX_DOMAIN_LENGTH:
        raise ValueError(f"{len(name)} characters, at most {_MAX_DOMAIN_LENGTH}")
    bad = sorted(set(name) - _DOMAIN_CHARACTERS)
    if bad:
        raise ValueError(f"character {bad[0]!r} is not allowed in a domain name (A-label)")
    labels = name.removesuffix(".").split(".")
    if name != "." and any(not label or len(label) > 63 for label in labels):
        raise ValueError("an empty label, or one longer than 63 characters")
    return name


@dataclass
class ConfigAttributes:
    """The attributes of one CP payload, decoded (RFC 7296 sec. 3.15.1, RFC 8598).

    ``requested`` lists, in order, the attribute types sent with an empty value: in a
    CFG_REQUEST they ask for "any value" (sec. 3.15.1); a CFG_ACK carries only those
    (sec. 3.15: "empty attributes ... indicate acknowledged"). The other fields hold the
    values present, in the order received per type. ``other`` keeps every attribute this
    module does not decode (unknown types, RFC 4306 leftovers, 3GPP attributes, DNSSEC
    trust anchors) verbatim, so nothing a peer sent is lost.

    ``from_payload(p).to_payload()`` emits the attributes grouped by type in a fixed order
    (the values and their order within a type are preserved); ``ConfigAttributes`` values
    survive the round trip exactly: ``from_payload(x.to_payload()) == x``.
    """

    cfg_type: CfgType | int = CfgType.CFG_REQUEST
    requested: list[CpAttributeType | int] = field(default_factory=list)
    ip4_addresses: list[IPv4Address] = field(default_factory=list)
    ip4_netmasks: list[IPv4Address] = field(default_factory=list)
    ip4_dns: list[IPv4Address] = field(default_factory=list)
    ip4_nbns: list[IPv4Address] = field(default_factory=list)
    ip4_dhcp: list[IPv4Address] = field(default_factory=list)
    ip4_subnets: list[IPv4Network] = field(default_factory=list)
    ip6_addresses: list[IPv6Interface] = field(default_factory=list)
    ip6_dns: list[IPv6Address] = field(default_factory=list)
    ip6_dhcp: list[IPv6Address] = field(default_factory=list)
    ip6_subnets: list[IPv6Network] = field(default_factory=list)
    address_expiry: int | None = None  # seconds, INTERNAL_ADDRESS_EXPIRY (RFC 4306)
    application_version: str | None = None  # latin-1, so that any octets round-trip
    # None: absent. Never empty: an empty value is the query form, kept in ``requested``.
    supported_attributes: list[CpAttributeType | int] | None = None
    dns_domains: list[str] = field(default_factory=list)
    other: list[CpAttribute] = field(default_factory=list)

    # ------------------------------------------------------------------ decode

    @classmethod
    def from_payload(cls, payload: CpPayload) -> Self:
        """Decode every attribute; a malformed known attribute raises ProtocolError."""
        decoded = cls(cfg_type=as_enum(CfgType, int(payload.cfg_type)))
        for attribute in payload.attributes:
            decoded._add(attribute.type, bytes(attribute.value))
        return decoded

    @classmethod
    def parse(cls, body: bytes) -> Self:
        """Decode a CP payload body (the octets after the generic payload header)."""
        return cls.from_payload(CpPayload.parse(body))

    def _add(self, kind: int, value: bytes) -> None:
        if not value:
            # Empty value: a request for the attribute (sec. 3.15.1). INTERNAL_IP6_SUBNET
            # is "17 octets" in the table, but clients (strongSwan, Windows) ask for it
            # empty as for the others, so it is accepted too. An unknown type sent empty
            # is also just "requested": the gateway lists it as unsupported. An empty
            # SUPPORTED_ATTRIBUTES is the query "which do you support?" (sec. 3.15.1), an
            # empty INTERNAL_DNS_DOMAIN the request for domains (RFC 8598 sec. 4.1).
            self.requested.append(as_enum(CpAttributeType, kind))
            return
        if kind in _IP4_LISTS:
            _expect_length(kind, value, 0, 4)
            getattr(self, _IP4_LISTS[T(kind)]).append(IPv4Address(value))
        elif kind in _IP6_LISTS:
            _expect_length(kind, value, 0, 16)
            getattr(self, _IP6_LISTS[T(kind)]).append(IPv6Address(value))
        elif kind == T.INTERNAL_IP6_ADDRESS:
            self.ip6_addresses.append(IPv6Interface(self._ip6_prefix(kind, value)))
        elif kind == T.INTERNAL_IP6_SUBNET:
            address, prefix = self._ip6_prefix(kind, value)
            # strict=False: host bits in a subnet attribute are the sender's sloppiness,
            # not a reason to fail the exchange; the network is what the route needs.
            self.ip6_subnets.append(IPv6Network((address, prefix), strict=False))
        elif kind == T.INTERNAL_IP4_SUBNET:
            _expect_length(kind, value, 0, 8)
            mask_prefix = _netmask_prefix(value[4:])
            if mask_prefix is None:
                raise _malformed(kind, f"netmask {IPv4Address(value[4:])} is not contiguous")
            network = IPv4Network((IPv4Address(value[:4]), mask_prefix), strict=False)
            self.ip4_subnets.append(network)
        elif kind == T.INTERNAL_ADDRESS_EXPIRY:
            _expect_length(kind, value, 0, 4)
            if self.address_expiry is not None:
                raise _malformed(kind, "repeated (single-valued, RFC 4306 sec. 3.15.1)")
            self.address_expiry = struct.unpack("!I", value)[0]
        elif kind == T.APPLICATION_VERSION:
            if self.application_version is not None:
                raise _malformed(kind, "repeated (single-valued, sec. 3.15.1)")
            self.application_version = value.decode("latin-1")
        elif kind == T.SUPPORTED_ATTRIBUTES:
            if len(value) % 2:
                raise _malformed(kind, f"{len(value)} octets, a multiple of 2 expected")
            if self.supported_attributes is not None:
                raise _malformed(kind, "repeated (single-valued, sec. 3.15.1)")
            types = struct.unpack(f"!{len(value) // 2}H", value)
            self.supported_attributes = [as_enum(CpAttributeType, t & 0x7FFF) for t in types]
        elif kind == T.INTERNAL_DNS_DOMAIN:
            try:
                self.dns_domains.append(check_domain(value.decode("ascii")))
            except (UnicodeDecodeError, ValueError) as problem:
                raise _malformed(kind, f"not a domain name: {problem}") from None
        else:
            self.other.append(CpAttribute(kind, value))

    @staticmethod
    def _ip6_prefix(kind: int, value: bytes) -> tuple[IPv6Address, int]:
        _expect_length(kind, value, 0, 17)
        prefix = value[16]
        if prefix > 128:
            raise _malformed(kind, f"prefix length {prefix} (at most 128)")
        return IPv6Address(value[:16]), prefix

    # ------------------------------------------------------------------ encode

    def to_attributes(self) -> list[CpAttribute]:
        """The attributes in a fixed order: requests first, then values by type."""
        out = [CpAttribute(int(kind)) for kind in self.requested]

        def add(kind: CpAttributeType, value: bytes) -> None:
            out.append(CpAttribute(kind, value))

        for kind, name in _IP4_LISTS.items():
            if kind == T.INTERNAL_IP4_NETMASK:
                continue  # placed right after the addresses it belongs to, below
            for address in getattr(self, name):
                add(kind, address.packed)
            if kind == T.INTERNAL_IP4_ADDRESS:
                for mask in self.ip4_netmasks:
                    add(T.INTERNAL_IP4_NETMASK, mask.packed)
        for subnet in self.ip4_subnets:
            add(T.INTERNAL_IP4_SUBNET, subnet.network_address.packed + subnet.netmask.packed)
        for interface in self.ip6_addresses:
            add(T.INTERNAL_IP6_ADDRESS, interface.ip.packed + bytes((interface.network.prefixlen,)))
        for kind, name in _IP6_LISTS.items():
            for address in getattr(self, name):
                add(kind, address.packed)
        for subnet6 in self.ip6_subnets:
            add(T.INTERNAL_IP6_SUBNET, subnet6.network_address.packed + bytes((subnet6.prefixlen,)))
        for domain in self.dns_domains:
            add(T.INTERNAL_DNS_DOMAIN, check_domain(domain).encode("ascii"))
        if self.address_expiry is not None:
            add(T.INTERNAL_ADDRESS_EXPIRY, struct.pack("!I", self.address_expiry))
        if self.application_version is not None:
            add(T.APPLICATION_VERSION, self.application_version.encode("latin-1"))
        if self.supported_attributes:
            types = self.supported_attributes
            add(T.SUPPORTED_ATTRIBUTES, struct.pack(f"!{len(types)}H", *types))
        out.extend(self.other)
        return out

    def to_payload(self) -> CpPayload:
        return CpPayload(cfg_type=self.cfg_type, attributes=self.to_attributes())

    # ------------------------------------------------------------------ helpers

    def wants(self, kind: CpAttributeType) -> bool:
        """True when the peer asked for ``kind`` (empty value) or proposed a value for it."""
        if kind in self.requested:
            return True
        name = _IP4_LISTS.get(kind) or _IP6_LISTS.get(kind)
        if name is not None:
            return bool(getattr(self, name))
        return {
            T.INTERNAL_IP6_ADDRESS: bool(self.ip6_addresses),
            T.INTERNAL_IP4_SUBNET: bool(self.ip4_subnets),
            T.INTERNAL_IP6_SUBNET: bool(self.ip6_subnets),
            T.INTERNAL_DNS_DOMAIN: bool(self.dns_domains),
        }.get(kind, False)

    @property
    def virtual_ips(self) -> list[IPv4Address | IPv6Address]:
        """The addresses carried (a client's wish in a request, the lease in a reply)."""
        return [*self.ip4_addresses, *(i.ip for i in self.ip6_addresses)]

    @property
    def dns_servers(self) -> list[IPv4Address | IPv6Address]:
        return [*self.ip4_dns, *self.ip6_dns]

    def describe(self) -> list[str]:
        """One line per attribute, for logs and ``aioipsec decode``; unknown ones listed."""
        lines = [f"{_type_name(kind)} (requested)" for kind in self.requested]
        for attribute in self.to_attributes()[len(self.requested) :]:
            name = _type_name(attribute.type)
            value = bytes(attribute.value)
            if attribute in self.other:
                lines.append(f"{name} {value.hex()} (not interpreted)")
            elif attribute.type in _IP4_LISTS or attribute.type in _IP6_LISTS:
                lines.append(f"{name} {ip_address(value)}")
            elif attribute.type == T.INTERNAL_IP4_SUBNET:
                prefix = _netmask_prefix(value[4:]) or 0
                lines.append(f"{name} {IPv4Address(value[:4])}/{prefix}")
            elif attribute.type in (T.INTERNAL_IP6_ADDRESS, T.INTERNAL_IP6_SUBNET):
                lines.append(f"{name} {IPv6Address(value[:16])}/{value[16]}")
            elif attribute.type == T.INTERNAL_DNS_DOMAIN:
                lines.append(f"{name} {value.decode('ascii')}")
            elif attribute.type == T.SUPPORTED_ATTRIBUTES:
                names = ", ".join(_type_name(t) for t in self.supported_attributes or [])
                lines.append(f"{name} [{names}]")
            elif attribute.type == T.APPLICATION_VERSION:
                lines.append(f"{name} {self.application_version!r}")
            else:
                lines.append(f"{name} {int.from_bytes(value, 'big')}")
        return lines


def cp_request(vips: list[IPv4Address | IPv6Address], *, dns: bool = True) -> ConfigAttributes:
    """A client's CFG_REQUEST (sec. 2.19) for swanctl's ``vips``.

    ``0.0.0.0`` / ``::`` ask for any address of that family (an empty attribute); another
    address asks for that one (the client's previous VIP, so a reconnect keeps it: sec.
    2.19 "the initiator may request a specific address"). With ``dns``, the DNS servers of
    each family asked for are requested too.
    """
    request = ConfigAttributes(CfgType.CFG_REQUEST)
    families = set()
    for vip in vips:
        families.add(vip.version)
        if vip.version == 4:
            if vip.packed == bytes(4):
                request.requested.append(T.INTERNAL_IP4_ADDRESS)
            else:
                request.ip4_addresses.append(IPv4Address(vip))
        elif vip.packed == bytes(16):
            request.requested.append(T.INTERNAL_IP6_ADDRESS)
        else:
            request.ip6_addresses.append(IPv6Interface((vip, 128)))
    if dns:
        if 4 in families:
            request.requested.append(T.INTERNAL_IP4_DNS)
        if 6 in families:
            request.requested.append(T.INTERNAL_IP6_DNS)
    return request


class AddressPending(Exception):
    """Raised by :meth:`ConfigProvider.assign` when the address must first be fetched from
    elsewhere (``pools = dhcp``: a DHCP round trip, which cannot happen inside the engine's
    call). The engine then defers the IKE_AUTH response, emits
    :class:`ikev2.events.AddressRequested`, and asks again when the daemon calls
    ``Dispatcher.address_ready`` (the provider must then answer or raise ProtocolError)."""

    def __init__(self, pool: str, identity: str) -> None:
        super().__init__(f"pool {pool}: the address for {identity} is being fetched")
        self.pool = pool
        self.identity = identity


class ConfigProvider(Protocol):
    """What the engine asks when a peer sends a CFG_REQUEST (the gateway side of sec. 2.19).

    The daemon passes one in (``aioipsec.pools.PoolManager``); it holds the leases in memory
    and does no I/O, and time comes in as ``now``, so calling it keeps the engine sans-I/O.
    ``assign`` raises ProtocolError(INTERNAL_ADDRESS_FAILURE) when no address can be given,
    having taken no lease; ``release`` is called once per IKE SA that held addresses.
    """

    def assign(
        self, pool_names: Sequence[str], identity: str, request: ConfigAttributes, now: float
    ) -> ConfigAttributes: ...

    def release(
        self, identity: str, addresses: Sequence[IPv4Address | IPv6Address], now: float
    ) -> None: ...
