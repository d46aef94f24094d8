"""UDP encapsulation of ESP (RFC 3948), framing only.

ESP-in-UDP is the unchanged ESP packet as the payload of a UDP datagram (RFC 3948 sec. 2.1):
the SPI is the first word of the UDP payload and is never zero. Telling ESP from IKE on
port 4500 (the 4-byte zero non-ESP marker) and keepalives belongs to ``nat_t``; when the
daemon sends through a UDP socket the kernel writes the UDP header, so these helpers are
for raw packets (captures, transport-mode tests, the scapy oracle).

The UDP checksum is sent as zero for IPv4 (RFC 3948 sec. 2.1: "SHOULD be transmitted as
a zero value"); over IPv6 a zero checksum is not allowed (RFC 8200 sec. 8.1), so
``udp_header`` computes it when given the IPv6 addresses.
"""

from __future__ import annotations

import ipaddress
import struct

from esp.ip import internet_checksum

NAT_T_PORT = 4500
UDP_HEADER_LEN = 8
_udp = struct.Struct("!HHHH")


def udp_header(
    src_port: int, dst_port: int, payload: bytes | bytearray | memoryview,
    ipv6_addresses: tuple[str, str] | None = None,
) -> bytes:  # fmt: skip
    """The 8-byte UDP header for ``payload``; checksum 0 unless IPv6 addresses are given."""
    length = UDP_HEADER_LEN + len(payload)
    if length > 0xFFFF:
        raise ValueError("UDP payload too long")
    checksum = 0
    if ipv6_addresses is not None:
        src = ipaddress.IPv6Address(ipv6_addresses[0]).packed
        dst = ipaddress.IPv6Address(ipv6_addresses[1]).packed
        pseudo = src + dst + struct.pack("!IxxxB", length, 17)
        checksum = internet_checksum(
            pseudo + _udp.pack(src_port, dst_port, length, 0) + bytes(payload)
        ) or 0xFFFF  # fmt: skip
    return _udp.pack(src_port, dst_port, length, checksum)


def wrap(
    esp_packet: bytes | bytearray | memoryview, src_port: int = NAT_T_PORT,
    dst_port: int = NAT_T_PORT, ipv6_addresses: tuple[str, str] | None = None,
) -> bytes:  # fmt: skip
    """UDP header || ESP packet."""
    return udp_header(src_port, dst_port, esp_packet, ipv6_addresses) + bytes(esp_packet)


def write_udp_header_into(
    buf: bytearray | memoryview, offset: int, src_port: int, dst_port: int, payload_len: int
) -> None:
    """Write a zero-checksum UDP header at ``buf[offset:offset + 8]`` for a payload of
    ``payload_len`` bytes that follows it (reserve 8 bytes before ``encrypt_into``)."""
    _udp.pack_into(buf, offset, src_port, dst_port, UDP_HEADER_LEN + payload_len, 0)


def unwrap(datagram: bytes | bytearray | memoryview) -> memoryview:
    """The ESP packet inside a UDP datagram (header included); checks the length field.

    Raises ``ValueError`` for a datagram shorter than its header or with a length field
    that does not match.
    """
    mv = memoryview(datagram)
    if len(mv) < UDP_HEADER_LEN:
        raise ValueError("shorter than a UDP header")
    length = (mv[4] << 8) | mv[5]
    if length < UDP_HEADER_LEN or length > len(mv):
        raise ValueError("UDP length field does not match the datagram")
    return mv[UDP_HEADER_LEN:length]
