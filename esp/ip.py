"""IPv4/IPv6 header helpers for tunnel encapsulation and transport mode.

Outside the per-packet fast path (the daemon writes inner packets to TUN and ESP to a UDP
socket, so the kernel builds outer headers). Used for raw outer packets, transport mode
and the scapy oracle tests.
"""

from __future__ import annotations

import ipaddress
import struct

IPPROTO_ESP = 50
IPPROTO_AH = 51
IPPROTO_UDP = 17
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


def ip_header(src: str, dst: str, protocol: int, payload_len: int) -> bytes:
    """IPv4 or IPv6 header, by the family of ``src``."""
    if ipaddress.ip_address(src).version == 4:
        return ipv4_header(src, dst, protocol, payload_len)
    return ipv6_header(src, dst, protocol, payload_len)


def fix_ipv4_checksum(header: bytearray | memoryview, ihl: int) -> None:
    header[10] = header[11] = 0
    struct.pack_into("!H", header, 10, internet_checksum(header[:ihl]))
