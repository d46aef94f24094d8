"""ICMP errors that make Path MTU Discovery work through the tunnel.

When an inner packet read from the TUN device is too big for the tunnel (its ESP form would
exceed the outer MTU) and may not be fragmented, the gateway answers the sender with an ICMP
error carrying the tunnel MTU and writes it back into the TUN device (RFC 4301 sec. 8.2 and
8.3: the IPsec implementation takes part in PMTU discovery on behalf of the SA):

- IPv4: Destination Unreachable, code 4 "fragmentation needed and DF set", with the Next-Hop MTU
  in the second half of the formerly unused word (RFC 792, RFC 1191 sec. 4).
- IPv6: Packet Too Big, type 2 code 0, with a 32-bit MTU (RFC 4443 sec. 3.2). IPv6 routers never
  fragment, so every too-big IPv6 packet gets one (RFC 8200 sec. 5).

ICMP errors are never sent about ICMP errors, about non-initial fragments, or to a source that
does not identify a single host (RFC 1122 sec. 3.2.2, RFC 1812 sec. 4.3.2.7, RFC 4443 sec. 2.4
(e)); the builders return None for such packets.
"""

from __future__ import annotations

import ipaddress
import struct

ICMPV4_PROTOCOL = 1
ICMPV6_NEXT_HEADER = 58
ICMPV4_DEST_UNREACHABLE = 3
ICMPV4_CODE_FRAG_NEEDED = 4
ICMPV6_PACKET_TOO_BIG = 2

# RFC 1812 sec. 4.3.2.3: an ICMPv4 error quotes as much of the offending datagram as fits in
# 576 octets in total. RFC 4443 sec. 2.4 (c): an ICMPv6 error fits in the minimum MTU, 1280.
ICMPV4_ERROR_MAX = 576
ICMPV6_ERROR_MAX = 1280

# ICMPv4 types that are errors (RFC 792, RFC 1122 sec. 3.2.2): no error is sent about them.
_ICMPV4_ERROR_TYPES = frozenset({3, 4, 5, 11, 12})

_IPV4_DF = 0x4000
_IPV4_OFFSET_MASK = 0x1FFF

_DEFAULT_TTL = 64


def internet_checksum(data: bytes | bytearray | memoryview) -> int:
    """RFC 1071 one's-complement checksum (the value to put in the checksum field)."""
    if len(data) % 2:
        data = bytes(data) + b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ip_version(packet: bytes | bytearray | memoryview) -> int:
    return packet[0] >> 4 if packet else 0


def needs_frag_needed(packet: bytes | bytearray | memoryview, mtu: int) -> bool:
    """True when PACKET is larger than MTU and may not be fragmented on the way.

    IPv4: only with DF set (without DF the caller may fragment the inner packet instead).
    IPv6: always when too big (RFC 8200 sec. 5: only the source fragments).
    """
    if len(packet) <= mtu:
        return False
    version = ip_version(packet)
    if version == 4:
        return len(packet) >= 20 and bool(struct.unpack_from("!H", packet, 6)[0] & _IPV4_DF)
    return version == 6


def build_frag_needed(
    packet: bytes | bytearray | memoryview,
    mtu: int,
    *,
    source: str | ipaddress.IPv4Address | None = None,
) -> bytes | None:
    """An ICMPv4 "fragmentation needed" (type 3 code 4) answering the IPv4 PACKET.

    The error goes to the packet's source; it comes from SOURCE, by default the packet's
    destination (a source routed through the tunnel passes the kernel's reverse-path filter on
    the TUN device). Returns None when RFC 1122/1812 forbid an error for this packet.
    """
    if len(packet) < 20 or ip_version(packet) != 4:
        raise ValueError("not an IPv4 packet")
    header_length = (packet[0] & 0x0F) * 4
    if header_length < 20 or len(packet) < header_length:
        raise ValueError("truncated IPv4 header")
    flags_offset = struct.unpack_from("!H", packet, 6)[0]
    protocol = packet[9]
    original_source = ipaddress.IPv4Address(bytes(packet[12:16]))
    original_destination = ipaddress.IPv4Address(bytes(packet[16:20]))
    if flags_offset & _IPV4_OFFSET_MASK:
        return None  # a non-initial fragment
    if (
        original_source.is_multicast
        or original_source.is_unspecified
        or original_source == ipaddress.IPv4Address("255.255.255.255")
    ):
        return None
    if (
        protocol == ICMPV4_PROTOCOL
        and len(packet) > header_length
        and packet[header_length] in _ICMPV4_ERROR_TYPES
    ):
        return None
    error_source = ipaddress.IPv4Address(source) if source is not None else original_destination

    quoted = bytes(packet[: ICMPV4_ERROR_MAX - 20 - 8])
    icmp = bytearray(
        struct.pack("!BBHHH", ICMPV4_DEST_UNREACHABLE, ICMPV4_CODE_FRAG_NEEDED, 0, 0, mtu & 0xFFFF)
    )
    icmp += quoted
    struct.pack_into("!H", icmp, 2, internet_checksum(icmp))

    ip_header = bytearray(
        struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0xC0,  # DSCP CS6 "internetwork control", as kernels mark their ICMP errors
            20 + len(icmp),
            0,
            0,
            _DEFAULT_TTL,
            ICMPV4_PROTOCOL,
            0,
            error_source.packed,
            original_source.packed,
        )
    )
    struct.pack_into("!H", ip_header, 10, internet_checksum(ip_header))
    return bytes(ip_header + icmp)


def _icmpv6_checksum(
    source: ipaddress.IPv6Address, destination: ipaddress.IPv6Address, icmp: bytes | bytearray
) -> int:
    # RFC 8200 sec. 8.1 pseudo-header: source, destination, upper-layer length, 3 zero octets,
    # next header.
    pseudo = source.packed + destination.packed + struct.pack("!I3xB", len(icmp), 58)
    return internet_checksum(pseudo + bytes(icmp))


def build_packet_too_big(
    packet: bytes | bytearray | memoryview,
    mtu: int,
    *,
    source: str | ipaddress.IPv6Address | None = None,
) -> bytes | None:
    """An ICMPv6 Packet Too Big (type 2 code 0) answering the IPv6 PACKET.

    Returns None when RFC 4443 sec. 2.4 forbids an error (the packet is itself an ICMPv6 error
    or its source is unspecified/multicast). Extension headers before an ICMPv6 error are not
    walked: such a packet still gets its Packet Too Big, which errs on the side of PMTUD working.
    """
    if len(packet) < 40 or ip_version(packet) != 6:
        raise ValueError("not an IPv6 packet")
    next_header = packet[6]
    original_source = ipaddress.IPv6Address(bytes(packet[8:24]))
    original_destination = ipaddress.IPv6Address(bytes(packet[24:40]))
    if original_source.is_unspecified or original_source.is_multicast:
        return None
    if next_header == ICMPV6_NEXT_HEADER and len(packet) > 40 and packet[40] < 128:
        return None  # types 0-127 are errors (RFC 4443 sec. 2.1)
    error_source = ipaddress.IPv6Address(source) if source is not None else original_destination
    if error_source.is_multicast:
        return None  # the destination was multicast and the caller gave no unicast source

    quoted = bytes(packet[: ICMPV6_ERROR_MAX - 40 - 8])
    icmp = bytearray(struct.pack("!BBHI", ICMPV6_PACKET_TOO_BIG, 0, 0, mtu))
    icmp += quoted
    struct.pack_into("!H", icmp, 2, _icmpv6_checksum(error_source, original_source, icmp))
    ip_header = struct.pack(
        "!IHBB16s16s",
        6 << 28,
        len(icmp),
        ICMPV6_NEXT_HEADER,
        _DEFAULT_TTL,
        error_source.packed,
        original_source.packed,
    )
    return ip_header + bytes(icmp)


def build_too_big(
    packet: bytes | bytearray | memoryview, mtu: int, *, source: str | None = None
) -> bytes | None:
    """The right PMTU error for PACKET's IP version (see the two builders)."""
    if ip_version(packet) == 4:
        return build_frag_needed(packet, mtu, source=source)
    return build_packet_too_big(packet, mtu, source=source)
