"""Traffic selectors (RFC 4301 sec. 4.4.1.1) and extraction of selector fields from packets.

A selector is ranges of integers: source and destination address ranges (one family),
an IP protocol (0 = any) and source/destination port ranges. For ICMP and ICMPv6 the
"port" of a packet is ``type << 8 | code`` in both port fields, as IKEv2 traffic selectors
carry them (RFC 7296 sec. 3.13.1; RFC 4301 sec. 4.4.1.3).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass

from esp.constants import IpProto

IPPROTO_ICMP = int(IpProto.ICMP)
IPPROTO_TCP = int(IpProto.TCP)
IPPROTO_UDP = int(IpProto.UDP)
IPPROTO_ICMPV6 = int(IpProto.ICMPV6)
IPPROTO_SCTP = int(IpProto.SCTP)
IPPROTO_UDPLITE = int(IpProto.UDPLITE)
_PORT_PROTOCOLS = frozenset({IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP, IPPROTO_UDPLITE})
# IPv6 extension headers that are walked to find the upper-layer protocol (RFC 8200 sec. 4).
_IPV6_EXTENSIONS = frozenset(
    int(p) for p in (IpProto.HOPOPT, IpProto.IPV6_ROUTE, IpProto.IPV6_OPTS, IpProto.AH)
)
_IPV6_FRAGMENT = int(IpProto.IPV6_FRAG)

ANY_PORT = (0, 65535)


@dataclass(frozen=True, slots=True)
class PacketFields:
    """The selector fields of one packet (addresses as integers)."""

    version: int
    src: int
    dst: int
    protocol: int
    src_port: int  # -1 when the packet carries no port (or is a non-first fragment)
    dst_port: int

    def src_text(self) -> str:
        return str(_address(self.version, self.src))

    def dst_text(self) -> str:
        return str(_address(self.version, self.dst))


def _address(version: int, value: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value)


def packet_fields(packet: bytes | bytearray | memoryview) -> PacketFields | None:
    """Selector fields of an IPv4 or IPv6 packet, or None if the header is malformed."""
    n = len(packet)
    if n < 20:
        return None
    version = packet[0] >> 4
    if version == 4:
        ihl = (packet[0] & 0x0F) * 4
        if ihl < 20 or n < ihl:
            return None
        src = int.from_bytes(packet[12:16], "big")
        dst = int.from_bytes(packet[16:20], "big")
        protocol = packet[9]
        first_fragment = (int.from_bytes(packet[6:8], "big") & 0x1FFF) == 0
        offset = ihl
    elif version == 6:
        if n < 40:
            return None
        src = int.from_bytes(packet[8:24], "big")
        dst = int.from_bytes(packet[24:40], "big")
        protocol = packet[6]
        offset = 40
        first_fragment = True
        while protocol in _IPV6_EXTENSIONS or protocol == _IPV6_FRAGMENT:
            if offset + 8 > n:
                return None
            if protocol == _IPV6_FRAGMENT:
                first_fragment = (int.from_bytes(packet[offset + 2 : offset + 4], "big") >> 3) == 0
                length = 8
            elif protocol == 51:  # AH: payload length in 4-octet units minus 2
                length = (packet[offset + 1] + 2) * 4
            else:
                length = (packet[offset + 1] + 1) * 8
            protocol = packet[offset]
            offset += length
    else:
        return None
    src_port = dst_port = -1
    if first_fragment:
        if protocol in _PORT_PROTOCOLS and offset + 4 <= n:
            src_port = int.from_bytes(packet[offset : offset + 2], "big")
            dst_port = int.from_bytes(packet[offset + 2 : offset + 4], "big")
        elif protocol in (IPPROTO_ICMP, IPPROTO_ICMPV6) and offset + 2 <= n:
            src_port = dst_port = (packet[offset] << 8) | packet[offset + 1]
    return PacketFields(version, src, dst, protocol, src_port, dst_port)


def _parse_range(text: str) -> tuple[int, int, int]:
    """'10.0.0.0/24', '10.0.0.1-10.0.0.9', '2001:db8::1' or 'any4'/'any6' ->
    (version, first, last)."""
    text = text.strip()
    if text in ("any", "any4", "0.0.0.0/0"):
        return 4, 0, (1 << 32) - 1
    if text in ("any6", "::/0"):
        return 6, 0, (1 << 128) - 1
    if "-" in text:
        first_s, last_s = text.split("-", 1)
        first = ipaddress.ip_address(first_s.strip())
        last = ipaddress.ip_address(last_s.strip())
        if first.version != last.version or int(first) > int(last):
            raise ValueError(f"bad address range {text!r}")
        return first.version, int(first), int(last)
    net = ipaddress.ip_network(text, strict=False)
    return net.version, int(net.network_address), int(net.broadcast_address)


def _range_text(version: int, first: int, last: int) -> str:
    bits = 32 if version == 4 else 128
    size = last - first + 1
    if size & (size - 1) == 0 and first % size == 0:
        prefix = bits - (size.bit_length() - 1)
        return f"{_address(version, first)}/{prefix}"
    return f"{_address(version, first)}-{_address(version, last)}"


def _pair(ports: tuple[int, int] | list[int]) -> tuple[int, int]:
    low, high = ports
    return (low, high)


@dataclass(frozen=True, slots=True)
class Selector:
    """One traffic selector; build it with ``Selector.make("10.0.0.0/24", "10.1.0.0/16")``."""

    version: int
    src_first: int
    src_last: int
    dst_first: int
    dst_last: int
    protocol: int = 0
    src_ports: tuple[int, int] = ANY_PORT
    dst_ports: tuple[int, int] = ANY_PORT

    @classmethod
    def make(
        cls, src: str, dst: str, protocol: int = 0,
        src_ports: tuple[int, int] | int = ANY_PORT, dst_ports: tuple[int, int] | int = ANY_PORT,
    ) -> Selector:  # fmt: skip
        src_v, src_first, src_last = _parse_range(src)
        dst_v, dst_first, dst_last = _parse_range(dst)
        if src_v != dst_v:
            raise ValueError("source and destination of a selector must be one family")
        sp = (src_ports, src_ports) if isinstance(src_ports, int) else _pair(src_ports)
        dp = (dst_ports, dst_ports) if isinstance(dst_ports, int) else _pair(dst_ports)
        for low, high in (sp, dp):
            if not 0 <= low <= high <= 65535:
                raise ValueError(f"bad port range {low}-{high}")
        if not 0 <= protocol <= 255:
            raise ValueError(f"bad protocol {protocol}")
        return cls(src_v, src_first, src_last, dst_first, dst_last, protocol, sp, dp)

    def matches(self, fields: PacketFields) -> bool:
        if fields.version != self.version:
            return False
        if not (self.src_first <= fields.src <= self.src_last):
            return False
        if not (self.dst_first <= fields.dst <= self.dst_last):
            return False
        if self.protocol and fields.protocol != self.protocol:
            return False
        sp, dp = self.src_ports, self.dst_ports
        if sp != ANY_PORT and (fields.src_port < 0 or not sp[0] <= fields.src_port <= sp[1]):
            return False
        return dp == ANY_PORT or (fields.dst_port >= 0 and dp[0] <= fields.dst_port <= dp[1])

    def reversed(self) -> Selector:
        """The same traffic seen in the other direction (inbound selector of an SA)."""
        return Selector(
            self.version, self.dst_first, self.dst_last, self.src_first, self.src_last,
            self.protocol, self.dst_ports, self.src_ports,
        )  # fmt: skip

    @property
    def src_text(self) -> str:
        return _range_text(self.version, self.src_first, self.src_last)

    @property
    def dst_text(self) -> str:
        return _range_text(self.version, self.dst_first, self.dst_last)

    def text(self) -> str:
        """``ip xfrm policy`` style: 'src 10.0.0.0/24 dst 10.1.0.0/16 proto tcp dport 80'."""
        parts = [f"src {self.src_text} dst {self.dst_text}"]
        if self.protocol:
            parts.append(f"proto {_PROTOCOL_NAMES.get(self.protocol, str(self.protocol))}")
        for name, ports in (("sport", self.src_ports), ("dport", self.dst_ports)):
            if ports != ANY_PORT:
                parts.append(
                    f"{name} {ports[0]}" + (f"-{ports[1]}" if ports[1] != ports[0] else "")
                )
        return " ".join(parts)

    def to_json(self) -> dict[str, object]:
        return {
            "src": self.src_text,
            "dst": self.dst_text,
            "proto": self.protocol,
            "sport": list(self.src_ports),
            "dport": list(self.dst_ports),
        }


_PROTOCOL_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 132: "sctp"}


_V4_FIELDS = struct.Struct("!9xB2xII").unpack_from  # protocol, source, destination
_V6_FIELDS = struct.Struct("!6xB1xQQQQ").unpack_from  # next header, src hi/lo, dst hi/lo


def fixed_header_fields(
    packet: bytes | bytearray | memoryview,
) -> tuple[int, int, int, int] | None:
    """(version, protocol, source, destination) of an IPv4/IPv6 packet, or None if the
    header is malformed. For IPv6 the protocol is the upper layer after the extension
    headers (walked only when there are some)."""
    n = len(packet)
    if n < 20:
        return None
    version = packet[0] >> 4
    if version == 4:
        if n < (packet[0] & 0x0F) * 4 or packet[0] & 0x0F < 5:
            return None
        protocol, src, dst = _V4_FIELDS(packet, 0)
        return 4, protocol, src, dst
    if version != 6 or n < 40:
        return None
    protocol, src_hi, src_lo, dst_hi, dst_lo = _V6_FIELDS(packet, 0)
    if protocol in _IPV6_EXTENSIONS or protocol == _IPV6_FRAGMENT:
        fields = packet_fields(packet)
        if fields is None:
            return None
        protocol = fields.protocol
    return 6, protocol, (src_hi << 64) | src_lo, (dst_hi << 64) | dst_lo


# ICMP errors that quote the packet they are about (RFC 792, RFC 4443 sec. 3): destination
# unreachable (and fragmentation needed), source quench, time exceeded, parameter problem;
# ICMPv6 destination unreachable, packet too big, time exceeded, parameter problem.
_ICMP4_ERRORS = frozenset({3, 4, 11, 12})
_ICMP6_ERRORS = frozenset({1, 2, 3, 4})


def icmp_error_fields(packet: bytes | bytearray | memoryview) -> PacketFields | None:
    """For an ICMP error: the selector fields of the packet it quotes, reversed (source
    and destination, and their ports, swapped), or None for any other packet.

    The quoted packet flowed the other way; reversed, it is what the policy of the
    error's own direction protects. strongSwan's ``icmp = yes`` lets the kernel forward an
    error from a router outside the selectors by this reverse lookup (swanctl.conf)."""
    fields = packet_fields(packet)
    if fields is None:
        return None
    if fields.version == 4:
        errors, header = _ICMP4_ERRORS, (packet[0] & 0x0F) * 4
        if fields.protocol != IPPROTO_ICMP:
            return None
    else:
        errors, header = _ICMP6_ERRORS, 40
        if fields.protocol != IPPROTO_ICMPV6 or packet[6] != IPPROTO_ICMPV6:
            return None  # an extension header before ICMPv6: not looked into
    if len(packet) < header + 8 or packet[header] not in errors:
        return None
    quoted = packet_fields(memoryview(packet)[header + 8 :])
    if quoted is None or quoted.version != fields.version:
        return None
    return PacketFields(
        quoted.version, quoted.dst, quoted.src, quoted.protocol, quoted.dst_port, quoted.src_port
    )


def compile_selectors(
    selectors: tuple[Selector, ...], *, icmp: bool = False
) -> Callable[[bytes | bytearray | memoryview, int], bool] | None:
    """A matcher ``match(packet, length) -> bool`` for the policy check of decrypted
    packets, or None for no selectors (everything matches).

    ``packet_fields`` builds an object per packet (about 1.7 us); when every selector is
    addresses and protocol only (the usual IKEv2 traffic selectors) the matcher reads the
    fixed header fields with one ``unpack_from`` instead. ``packet`` must hold a complete
    IP header (the tunnel-mode length check has run).

    ``icmp``: an ICMP error that does not match is checked again by the packet it quotes
    (:func:`icmp_error_fields`), only after the ordinary check failed.
    """
    if not selectors:
        return None
    if icmp:
        plain = compile_selectors(selectors)
        assert plain is not None

        def match_or_icmp_error(packet: bytes | bytearray | memoryview, length: int) -> bool:
            if plain(packet, length):
                return True
            quoted = icmp_error_fields(memoryview(packet)[:length])
            return quoted is not None and any(s.matches(quoted) for s in selectors)

        return match_or_icmp_error
    if any(s.src_ports != ANY_PORT or s.dst_ports != ANY_PORT for s in selectors):

        def match_fields(packet: bytes | bytearray | memoryview, length: int) -> bool:
            fields = packet_fields(memoryview(packet)[:length])
            return fields is not None and any(s.matches(fields) for s in selectors)

        return match_fields

    v4 = tuple((s.src_first, s.src_last, s.dst_first, s.dst_last, s.protocol)
               for s in selectors if s.version == 4)  # fmt: skip
    v6 = tuple((s.src_first, s.src_last, s.dst_first, s.dst_last, s.protocol)
               for s in selectors if s.version == 6)  # fmt: skip

    def match_addresses(packet: bytes | bytearray | memoryview, length: int) -> bool:
        if packet[0] >> 4 == 4:
            protocol, src, dst = _V4_FIELDS(packet, 0)
            candidates = v4
        else:
            if not v6:
                return False
            protocol, src_hi, src_lo, dst_hi, dst_lo = _V6_FIELDS(packet, 0)
            src = (src_hi << 64) | src_lo
            dst = (dst_hi << 64) | dst_lo
            if protocol in _IPV6_EXTENSIONS or protocol == _IPV6_FRAGMENT:
                fields = packet_fields(memoryview(packet)[:length])  # walk the chain
                if fields is None:
                    return False
                protocol = fields.protocol
            candidates = v6
        for src_first, src_last, dst_first, dst_last, wanted in candidates:
            if (
                src_first <= src <= src_last
                and dst_first <= dst <= dst_last
                and (not wanted or wanted == protocol)
            ):
                return True
        return False

    return match_addresses
