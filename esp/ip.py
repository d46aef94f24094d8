"""IPv4/IPv6 header helpers for tunnel encapsulation and transport mode.

Outside the per-packet fast path (the daemon writes inner packets to TUN and ESP to a UDP
socket, so the kernel builds outer headers). Used for raw outer packets, transport mode
and the scapy oracle tests.
"""

from __future__ import annotations

import ipaddress
import struct

from esp.constants import IpProto

IPPROTO_ESP = IpProto.ESP
IPPROTO_AH = IpProto.AH
IPPROTO_UDP = IpProto.UDP
_ipv4 = struct.Struct("!BBHHHBBH4s4s")
_ipv6 = struct.Struct("!IHBB16s16s")


def internet_checksum(data: bytes | bytearray | memoryview) -> int:
    """RFC 1071 one's-complement sum (the ``int.from_bytes`` trick: one big addition)."""
    data = bytes(data)
    if len(data) % 2:
        data += b"\x00"
    total = int.from_bytes(data, "big")
    # Fold the big integer into 16 bits: summing 16-bit words == value mod 0xFFFF.
    folded = total % 0xFFFF
    if folded == 0 and total:
        folded = 0xFFFF
    return (~folded) & 0xFFFF


def ipv4_header(
    src: str, dst: str, protocol: int, payload_len: int, *, ttl: int = 64, ident: int = 0,
    tos: int = 0, dont_fragment: bool = False,
) -> bytes:  # fmt: skip
    """A 20-byte IPv4 header (no options) with a correct checksum."""
    total = 20 + payload_len
    if total > 0xFFFF:
        raise ValueError("IPv4 packet too long")
    header = bytearray(
        _ipv4.pack(
            0x45, tos, total, ident, 0x4000 if dont_fragment else 0, ttl, protocol, 0,
            ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed,
        )
    )  # fmt: skip
    struct.pack_into("!H", header, 10, internet_checksum(header))
    return bytes(header)


def ipv6_header(
    src: str, dst: str, next_header: int, payload_len: int, *, hop_limit: int = 64,
    traffic_class: int = 0, flow_label: int = 0,
) -> bytes:  # fmt: skip
    """A 40-byte IPv6 header."""
    if payload_len > 0xFFFF:
        raise ValueError("IPv6 payload too long (no jumbograms)")
    first = (6 << 28) | (traffic_class << 20) | flow_label
    return _ipv6.pack(
        first, payload_len, next_header, hop_limit,
        ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed,
    )  # fmt: skip


def address_text(packet: bytes | bytearray | memoryview, offset: int) -> str:
    """The IPv6 address at ``packet[offset:offset + 16]`` as text."""
    return str(ipaddress.IPv6Address(bytes(packet[offset : offset + 16])))


def ip_header(src: str, dst: str, protocol: int, payload_len: int) -> bytes:
    """IPv4 or IPv6 header, by the family of ``src``."""
    if ipaddress.ip_address(src).version == 4:
        return ipv4_header(src, dst, protocol, payload_len)
    return ipv6_header(src, dst, protocol, payload_len)


def fix_ipv4_checksum(header: bytearray | memoryview, ihl: int) -> None:
    header[10] = header[11] = 0
    struct.pack_into("!H", header, 10, internet_checksum(header[:ihl]))


# IPv6 extension headers that stay in front of ESP/AH in transport mode (RFC 4303
# sec. 3.1.1, RFC 4302 sec. 3.1.1 leave the place of destination options open; this follows
# Linux, as scapy does): hop-by-hop, routing, and destination options met before a routing
# header. Destination options after a routing header are for the final destination only
# and go inside.
_HOP_BY_HOP = 0
_ROUTING = 43
_FRAGMENT = 44
_DEST_OPTS = 60


def transport_split(packet: bytes | bytearray | memoryview) -> tuple[int, int]:
    """Where transport-mode ESP/AH goes: ``(offset, next_header_field_offset)``.

    ``offset`` is the length of the headers that stay in front; the byte at
    ``next_header_field_offset`` is the protocol/next-header field to rewrite.
    Raises ValueError for something that is not a well-formed IPv4/IPv6 packet.
    """
    n = len(packet)
    if n < 1:
        raise ValueError("empty packet")
    version = packet[0] >> 4
    if version == 4:
        ihl = (packet[0] & 0x0F) * 4
        if ihl < 20 or n < ihl:
            raise ValueError("bad IPv4 header length")
        return ihl, 9
    if version != 6 or n < 40:
        raise ValueError("not an IPv4/IPv6 packet")
    field = 6
    offset = 40
    nh = packet[6]
    seen_routing = False
    while nh in (_HOP_BY_HOP, _ROUTING, _DEST_OPTS):
        if nh == _DEST_OPTS and seen_routing:
            break
        if offset + 2 > n:
            raise ValueError("truncated IPv6 extension header")
        seen_routing = seen_routing or nh == _ROUTING
        length = (packet[offset + 1] + 1) * 8
        if offset + length > n:
            raise ValueError("truncated IPv6 extension header")
        field = offset
        nh = packet[offset]
        offset += length
    return offset, field


def find_ipsec_header(packet: bytes | bytearray | memoryview, protocol: int) -> tuple[int, int]:
    """Offset of the ESP/AH header (``protocol`` 50/51) in a received packet and of the
    next-header field that names it. Raises ValueError if it is not there."""
    n = len(packet)
    if n < 20:
        raise ValueError("shorter than an IP header")
    version = packet[0] >> 4
    if version == 4:
        ihl = (packet[0] & 0x0F) * 4
        if ihl < 20 or n < ihl or packet[9] != protocol:
            raise ValueError("no ESP/AH after the IPv4 header")
        return ihl, 9
    if version != 6 or n < 40:
        raise ValueError("not an IPv4/IPv6 packet")
    field, offset, nh = 6, 40, packet[6]
    while nh != protocol:
        if nh not in (_HOP_BY_HOP, _ROUTING, _DEST_OPTS, _FRAGMENT) or offset + 8 > n:
            raise ValueError("no ESP/AH in the IPv6 header chain")
        length = 8 if nh == _FRAGMENT else (packet[offset + 1] + 1) * 8
        field, nh = offset, packet[offset]
        offset += length
    if offset > n:
        raise ValueError("truncated IPv6 header chain")
    return offset, field


def set_lengths(packet: bytearray) -> None:
    """Fix the IPv4 total length and checksum, or the IPv6 payload length, in place."""
    if packet[0] >> 4 == 4:
        ihl = (packet[0] & 0x0F) * 4
        struct.pack_into("!H", packet, 2, len(packet))
        fix_ipv4_checksum(packet, ihl)
    else:
        struct.pack_into("!H", packet, 4, len(packet) - 40)
