"""TUN offloads: the virtio-net header, GSO segmentation of what we read, and GRO-style
coalescing of what we write (the batching that performance-notes.md measures).

With ``IFF_VNET_HDR`` every packet read from or written to the TUN device is preceded by a
``struct virtio_net_hdr`` (<linux/virtio_net.h>, 10 octets, host byte order)::

    u8  flags        VIRTIO_NET_HDR_F_NEEDS_CSUM: the L4 checksum at csum_start+csum_offset
                     holds only the pseudo-header sum; DATA_VALID: checksums already checked
    u8  gso_type     NONE / TCPV4 / TCPV6 / UDP_L4 (| ECN)
    u16 hdr_len      length of the IP + L4 headers
    u16 gso_size     payload octets per segment (the MSS)
    u16 csum_start   where the checksummed L4 header starts
    u16 csum_offset  where in it the checksum field is

After ``TUNSETOFFLOAD`` with ``TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6`` the kernel hands us TCP
"super packets" of up to 64 KB (one read instead of ~44) with the checksum left to us:
:func:`segment` cuts one into wire-sized packets with correct headers and checksums (ESP then
encrypts each). In the other direction :func:`coalesce` merges consecutive in-order TCP
segments of one flow into one super packet the kernel accepts in one write.
"""

from __future__ import annotations

import fcntl
import struct
from collections.abc import Iterable
from dataclasses import dataclass

TUNSETOFFLOAD = 0x400454D0
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
TUN_F_USO4 = 0x20
TUN_F_USO6 = 0x40

VIRTIO_NET_HDR_F_NEEDS_CSUM = 0x01
VIRTIO_NET_HDR_F_DATA_VALID = 0x02
VIRTIO_NET_HDR_GSO_NONE = 0
VIRTIO_NET_HDR_GSO_TCPV4 = 1
VIRTIO_NET_HDR_GSO_UDP = 3
VIRTIO_NET_HDR_GSO_TCPV6 = 4
VIRTIO_NET_HDR_GSO_UDP_L4 = 5
VIRTIO_NET_HDR_GSO_ECN = 0x80

VNET_HDR = struct.Struct("=BBHHHH")
VNET_HDR_SIZE = VNET_HDR.size  # 10

_IPPROTO_TCP = 6
_IPPROTO_UDP = 17
_TCP_FIN_PSH = 0x09
_TCP_CWR = 0x80
_MAX_SUPER_PACKET = 65535


class OffloadError(ValueError):
    """A packet from the TUN device does not fit what its virtio header says."""


@dataclass(frozen=True)
class VnetHeader:
    flags: int = 0
    gso_type: int = VIRTIO_NET_HDR_GSO_NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> VnetHeader:
        if len(data) < VNET_HDR_SIZE:
            raise OffloadError("shorter than a virtio_net_hdr")
        return cls(*VNET_HDR.unpack_from(data, 0))

    def pack(self) -> bytes:
        return VNET_HDR.pack(
            self.flags, self.gso_type, self.hdr_len, self.gso_size, self.csum_start,
            self.csum_offset,
        )  # fmt: skip


PLAIN_HEADER = VnetHeader().pack()
# For packets whose checksums we have just verified by decrypting them intact, the kernel
# need not check them again.
DATA_VALID_HEADER = VnetHeader(flags=VIRTIO_NET_HDR_F_DATA_VALID).pack()


def set_offload(fd: int, flags: int) -> None:
    """``TUNSETOFFLOAD``: which offloads the kernel may leave to us (needs IFF_VNET_HDR)."""
    fcntl.ioctl(fd, TUNSETOFFLOAD, flags)


# --- checksums --------------------------------------------------------------------------------


def _ones_complement_sum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """RFC 1071 sum (not complemented) of DATA plus INITIAL, in 0..0xFFFF.

    Because 2**16 == 1 (mod 0xFFFF), the end-around-carry sum of the 16-bit words equals the
    whole buffer read as one big integer modulo 0xFFFF (0xFFFF standing for a non-zero
    multiple): one int.from_bytes instead of a Python loop (~3 us for 1400 octets).
    """
    if len(data) % 2:
        data = bytes(data) + b"\0"
    value = int.from_bytes(data, "big") + initial
    remainder = value % 0xFFFF
    return 0xFFFF if remainder == 0 and value else remainder


def _pseudo_header_sum(packet: bytes | bytearray | memoryview, protocol: int, length: int) -> int:
    """Sum of the IPv4 (RFC 793) or IPv6 (RFC 8200 sec. 8.1) pseudo-header."""
    if packet[0] >> 4 == 4:
        pseudo = bytes(packet[12:20]) + struct.pack("!HH", protocol, length)
    else:
        pseudo = bytes(packet[8:40]) + struct.pack("!II", length, protocol)
    return _ones_complement_sum(pseudo)


def _l4_checksum(packet: bytearray, l4_offset: int, protocol: int, field: int) -> None:
    """Fill in the TCP/UDP checksum of PACKET (field offset inside the L4 header)."""
    struct.pack_into("!H", packet, l4_offset + field, 0)
    segment_length = len(packet) - l4_offset
    total = _ones_complement_sum(
        memoryview(packet)[l4_offset:], _pseudo_header_sum(packet, protocol, segment_length)
    )
    checksum = ~total & 0xFFFF
    if protocol == _IPPROTO_UDP and checksum == 0:
        checksum = 0xFFFF  # RFC 768: zero means "no checksum"
    struct.pack_into("!H", packet, l4_offset + field, checksum)


def _ipv4_header_checksum(packet: bytearray, header_length: int) -> None:
    struct.pack_into("!H", packet, 10, 0)
    struct.pack_into(
        "!H", packet, 10, ~_ones_complement_sum(memoryview(packet)[:header_length]) & 0xFFFF
    )


# --- reading: super packets -> wire packets ---------------------------------------------------


def _l4_offset(packet: bytes | bytearray | memoryview) -> tuple[int, int]:
    """(L4 header offset, protocol). IPv6 extension headers are not walked (GSO never
    produces them for locally generated TCP/UDP)."""
    version = packet[0] >> 4
    if version == 4:
        return (packet[0] & 0x0F) * 4, packet[9]
    if version == 6:
        return 40, packet[6]
    raise OffloadError(f"IP version {version}")


def segment(frame: bytes | bytearray | memoryview) -> list[bytearray]:
    """Turn one read (virtio header + packet) into wire-ready IP packets.

    No GSO: the packet itself, with its checksum completed when the kernel left it partial.
    TCP (TSO4/TSO6) and UDP (USO): one packet per ``gso_size`` octets of payload, with IP
    lengths, IPv4 IDs, TCP sequence numbers and flags, and all checksums set.
    """
    header = VnetHeader.parse(frame)
    packet = memoryview(frame)[VNET_HDR_SIZE:]
    gso = header.gso_type & ~VIRTIO_NET_HDR_GSO_ECN
    if gso == VIRTIO_NET_HDR_GSO_NONE:
        single = bytearray(packet)
        if header.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
            _complete_partial_checksum(single, header)
        return [single]
    if gso not in (VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP_L4):
        raise OffloadError(f"unsupported gso_type {header.gso_type}")
    if header.gso_size == 0:
        raise OffloadError("GSO packet with gso_size 0")
    version = packet[0] >> 4
    l4_offset, protocol = _l4_offset(packet)
    if protocol == _IPPROTO_TCP:
        if len(packet) < l4_offset + 20:
            raise OffloadError("truncated TCP header")
        headers_length = l4_offset + (packet[l4_offset + 12] >> 4) * 4
    elif protocol == _IPPROTO_UDP:
        headers_length = l4_offset + 8
    else:
        raise OffloadError(f"GSO for IP protocol {protocol}")
    if len(packet) < headers_length:
        raise OffloadError("truncated headers")
    headers = bytes(packet[:headers_length])
    payload = packet[headers_length:]
    mss = header.gso_size
    segments: list[bytearray] = []
    if version == 4:
        ip_id = struct.unpack_from("!H", headers, 4)[0]
    if protocol == _IPPROTO_TCP:
        sequence = struct.unpack_from("!I", headers, l4_offset + 4)[0]
        tcp_flags = headers[l4_offset + 13]
    count = max(1, -(-len(payload) // mss))
    for index in range(count):
        chunk = payload[index * mss : (index + 1) * mss]
        out = bytearray(headers)
        out += chunk
        total = len(out)
        if version == 4:
            struct.pack_into("!H", out, 2, total)
            struct.pack_into("!H", out, 4, (ip_id + index) & 0xFFFF)
            _ipv4_header_checksum(out, l4_offset)
        else:
            struct.pack_into("!H", out, 4, total - 40)
        if protocol == _IPPROTO_TCP:
            struct.pack_into("!I", out, l4_offset + 4, (sequence + index * mss) & 0xFFFFFFFF)
            flags = tcp_flags
            if index != count - 1:
                flags &= ~_TCP_FIN_PSH
            if index != 0:
                flags &= ~_TCP_CWR
            out[l4_offset + 13] = flags
            _l4_checksum(out, l4_offset, _IPPROTO_TCP, 16)
        else:
            struct.pack_into("!H", out, l4_offset + 4, total - l4_offset)
            _l4_checksum(out, l4_offset, _IPPROTO_UDP, 6)
        segments.append(out)
    return segments


def _complete_partial_checksum(packet: bytearray, header: VnetHeader) -> None:
    """NEEDS_CSUM: the field holds the pseudo-header sum; add the sum of the rest."""
    start, field = header.csum_start, header.csum_start + header.csum_offset
    if field + 2 > len(packet) or start > len(packet):
        raise OffloadError("checksum offsets outside the packet")
    total = _ones_complement_sum(memoryview(packet)[start:])
    checksum = ~total & 0xFFFF
    protocol = _l4_offset(packet)[1]
    if protocol == _IPPROTO_UDP and checksum == 0:
        checksum = 0xFFFF
    struct.pack_into("!H", packet, field, checksum)


# --- writing: wire packets -> super packets ---------------------------------------------------


# IPv4 without options + the TCP fixed header, the fields a run must share, in one unpack:
# version/IHL, TOS, flags/fragment offset, TTL, protocol, addresses, ports, sequence,
# acknowledgment, data offset, TCP flags, window, urgent pointer.
_V4_TCP = struct.Struct("!BBxxxxHBB2x8s4sI4sBBHxxH")
FlowKey = tuple[object, ...] | bytes


def _tcp_flow(packet: bytes | bytearray | memoryview) -> tuple[FlowKey, int, int, int, int] | None:
    """(flow key, L4 offset, headers length, payload length, sequence) of a plain TCP data
    segment that may be merged, or None.

    The common case, IPv4 without options, takes one ``unpack_from`` (the receiver runs
    this for every decrypted packet: ~0.8 us instead of ~2 us with slices, see
    docs/performance.md); IPv6 and the rest take the general path below.
    """
    if len(packet) >= 40 and packet[0] == 0x45:
        (_v, tos, fragment, ttl, protocol, addresses, ports, sequence, ack, offset, flags,
         window, urgent) = _V4_TCP.unpack_from(packet)  # fmt: skip
        # Only ACK / PSH|ACK data segments, unfragmented: see the general path.
        if protocol != _IPPROTO_TCP or fragment & 0x3FFF or flags & ~0x18 or not flags & 0x10:
            return None
        headers = 20 + (offset >> 4) * 4
        payload = len(packet) - headers
        if payload <= 0 or headers < 40:
            return None
        # The same fields as the general path's key (there: bytes), options included.
        fields = (
            addresses,
            ports,
            ack,
            offset,
            window,
            urgent,
            tos,
            ttl,
            bytes(packet[40:headers]),
        )
        return fields, 20, headers, payload, sequence
    if not packet:
        return None
    version = packet[0] >> 4
    if version == 4:
        if len(packet) < 20 or packet[9] != _IPPROTO_TCP:
            return None
        l4 = (packet[0] & 0x0F) * 4
        if l4 != 20 or struct.unpack_from("!H", packet, 6)[0] & 0x3FFF:  # options / fragments
            return None
        key = bytes(packet[12:20])
    elif version == 6:
        if len(packet) < 40 or packet[6] != _IPPROTO_TCP:
            return None
        l4 = 40
        key = bytes(packet[8:40])
    else:
        return None
    if len(packet) < l4 + 20:
        return None
    headers = l4 + (packet[l4 + 12] >> 4) * 4
    flags = packet[l4 + 13]
    # Only ACK / PSH|ACK data segments: anything with SYN/FIN/RST/URG/ECE/CWR goes alone.
    if flags & ~0x18 != 0 or not flags & 0x10:
        return None
    payload = len(packet) - headers
    if payload <= 0:
        return None
    # The flow includes ports, the whole TCP header except the sequence number, the flags (PSH
    # may differ) and the checksum: ACK, window and options such as timestamps must be equal
    # for segments to merge.
    tcp = bytes(packet[l4:headers])
    key += tcp[0:4] + tcp[8:13] + tcp[14:16] + tcp[18:] + bytes([version])
    if version == 4:
        key += bytes(packet[1:2]) + bytes(packet[8:9])  # TOS and TTL
    sequence = struct.unpack_from("!I", packet, l4 + 4)[0]
    return key, l4, headers, payload, sequence


def coalesce(packets: Iterable[bytes | bytearray | memoryview]) -> list[bytes]:
    """Frames (virtio header + packet) to write: runs of in-order TCP segments of one flow
    with equal segment size become one GSO super packet (the last segment may be shorter)."""
    frames: list[bytes] = []
    run: list[bytes | bytearray | memoryview] = []
    run_key: FlowKey | None = None
    run_mss = 0
    next_sequence = 0
    run_length = 0
    for packet in packets:
        info = _tcp_flow(packet)
        if info is not None and run and info[0] == run_key and info[4] == next_sequence:
            _key, _l4, headers, payload, _seq = info
            if (
                run_length + payload <= _MAX_SUPER_PACKET
                and payload <= run_mss
                and len(run[-1]) - headers == run_mss  # only the last may be short
            ):
                run.append(packet)
                run_length += payload
                next_sequence = (next_sequence + payload) & 0xFFFFFFFF
                continue
        if run:
            frames.append(_merge(run))
            run = []
        if info is None:
            frames.append(PLAIN_HEADER + bytes(packet))
            run_key = None
            continue
        run_key, _l4, headers, payload, sequence = info
        run = [packet]
        run_mss = payload
        run_length = len(packet)
        next_sequence = (sequence + payload) & 0xFFFFFFFF
    if run:
        frames.append(_merge(run))
    return frames


def _merge(run: list[bytes | bytearray | memoryview]) -> bytes:
    first = run[0]
    # A run of two or more holds only TCP data segments (coalesce), so flow is None only
    # for a run of one, which goes out as it is.
    flow = _tcp_flow(first) if len(run) > 1 else None
    if flow is None:
        return PLAIN_HEADER + bytes(first)
    _key, l4, headers, mss, _sequence = flow
    merged = bytearray(first)
    merged += b"".join([memoryview(packet)[headers:] for packet in run[1:]])
    for packet in run[1:]:
        merged[l4 + 13] |= packet[l4 + 13] & 0x08  # keep a PSH of a later segment
    version = merged[0] >> 4
    if version == 4:
        struct.pack_into("!H", merged, 2, len(merged))
        _ipv4_header_checksum(merged, l4)
        gso_type = VIRTIO_NET_HDR_GSO_TCPV4
    else:
        struct.pack_into("!H", merged, 4, len(merged) - 40)
        gso_type = VIRTIO_NET_HDR_GSO_TCPV6
    # NEEDS_CSUM with the pseudo-header sum in the field: the kernel completes the checksum of
    # each segment it makes (the same contract as a TSO packet we read).
    pseudo = _pseudo_header_sum(merged, _IPPROTO_TCP, len(merged) - l4)
    struct.pack_into("!H", merged, l4 + 16, pseudo)
    header = VnetHeader(
        flags=VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type=gso_type,
        hdr_len=headers,
        gso_size=mss,
        csum_start=l4,
        csum_offset=16,
    )
    return header.pack() + bytes(merged)
