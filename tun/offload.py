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
from typing import Any

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

_IPV4_LENGTH_ID = struct.Struct("!HH")
_UDP_LENGTH_CHECKSUM = struct.Struct("!HH")
# IPv4 (no options) + TCP from octet 2 to the TCP checksum: total length, ID, flags and
# fragment offset, TTL, protocol, header checksum, addresses, ports, sequence number,
# acknowledgment, data offset, TCP flags, window, checksum.
_V4_TCP_SEGMENT = struct.Struct("!HHHBBH8s4sI4sBBHH")
# The fields of it that are the same in every segment: fragment .. TTL, addresses, ports,
# acknowledgment, data offset, window.
_V4_TCP_CONSTANT = struct.Struct("!6xHB3x8s4s4x4sBxH")
_pack_h = struct.Struct("!H").pack_into
_pack_i = struct.Struct("!I").pack_into
_unpack_h = struct.Struct("!H").unpack_from
_unpack_i = struct.Struct("!I").unpack_from

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


# numpy, once imported (load_numpy): _sum16 sums long buffers with it.
_numpy: Any = None


def _fold(value: int) -> int:
    """A sum of 16-bit words folded to 16 bits (end-around carry), 0 only for 0."""
    remainder = value % 0xFFFF
    return 0xFFFF if remainder == 0 and value else remainder


def _sum16(data: memoryview) -> int:
    """The 16-bit big-endian words of DATA added up (not folded); an odd last octet padded
    with zero (RFC 1071). numpy from a few hundred octets on, int.from_bytes below (its
    cost grows with the length, numpy's is mostly per call)."""
    numpy = _numpy
    if numpy is None or len(data) < 256:
        value = int.from_bytes(data, "big")
        return value << 8 if len(data) % 2 else value
    even = len(data) & ~1
    total = int(numpy.frombuffer(data, dtype=">u2", count=even // 2).sum(dtype=numpy.uint64))
    return total + (data[even] << 8 if even < len(data) else 0)


def _ones_complement_sum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """RFC 1071 sum (not complemented) of DATA plus INITIAL, in 0..0xFFFF.

    Because 2**16 == 1 (mod 0xFFFF), the end-around-carry sum of the 16-bit words equals the
    whole buffer read as one big integer modulo 0xFFFF (0xFFFF standing for a non-zero
    multiple): one int.from_bytes instead of a Python loop (~3 us for 1400 octets), or
    numpy's sum for long buffers once it is loaded (:func:`_sum16`).
    """
    return _fold(_sum16(memoryview(data)) + initial)


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
        return [_completed(packet, header.flags, header.csum_start, header.csum_offset)]
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


def _finish_l4_checksum(
    buffer: bytearray | memoryview, ip: int, end: int, start: int, field: int
) -> None:
    """NEEDS_CSUM (virtio): the checksum FIELD holds the pseudo-header sum; add the sum of
    BUFFER[START:END] and write the complement there. IP is where the packet starts."""
    if field + 2 > end or start > end:
        raise OffloadError("checksum offsets outside the packet")
    checksum = ~_fold(_sum16(memoryview(buffer)[start:end])) & 0xFFFF
    if checksum == 0 and _l4_offset(memoryview(buffer)[ip:end])[1] == _IPPROTO_UDP:
        checksum = 0xFFFF  # RFC 768: zero means "no checksum"
    _pack_h(buffer, field, checksum)


def _completed(packet: memoryview, flags: int, start: int, offset: int) -> bytearray:
    """A copy of a plain (not GSO) packet with its L4 checksum completed when the kernel
    left it partial (NEEDS_CSUM)."""
    out = bytearray(packet)
    if flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
        _finish_l4_checksum(out, 0, len(out), start, start + offset)
    return out


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


def coalesce(packets: Iterable[bytes | bytearray | memoryview]) -> list[bytes | bytearray]:
    """Frames (virtio header + packet) to write: runs of in-order TCP segments of one flow
    with equal segment size become one GSO super packet (the last segment may be shorter)."""
    frames: list[bytes | bytearray] = []
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
            frames.append(PLAIN_HEADER + packet)
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


def _merge(run: list[bytes | bytearray | memoryview]) -> bytes | bytearray:
    first = run[0]
    # A run of two or more holds only TCP data segments (coalesce), so flow is None only
    # for a run of one, which goes out as it is.
    flow = _tcp_flow(first) if len(run) > 1 else None
    if flow is None:
        return PLAIN_HEADER + first
    _key, l4, headers, mss, _sequence = flow
    # The frame built in one allocation and one copy of each segment: room for the
    # virtio header, the first segment whole, the others' payloads (bytearray.join), then
    # the header fields written in place (o: where the IP packet starts).
    o = VNET_HDR_SIZE
    merged = bytearray().join([PLAIN_HEADER, first, *[memoryview(p)[headers:] for p in run[1:]]])
    psh = 0
    for packet in run[1:]:
        psh |= packet[l4 + 13]
    merged[o + l4 + 13] |= psh & 0x08  # keep a PSH of a later segment
    length = len(merged) - o
    if merged[o] >> 4 == 4:
        _pack_h(merged, o + 2, length)
        _pack_h(merged, o + 10, 0)
        _pack_h(merged, o + 10, ~_ones_complement_sum(memoryview(merged)[o : o + l4]) & 0xFFFF)
        gso_type = VIRTIO_NET_HDR_GSO_TCPV4
    else:
        _pack_h(merged, o + 4, length - 40)
        gso_type = VIRTIO_NET_HDR_GSO_TCPV6
    # NEEDS_CSUM with the pseudo-header sum in the field: the kernel completes the checksum of
    # each segment it makes (the same contract as a TSO packet we read).
    pseudo = _pseudo_header_sum(memoryview(merged)[o:], _IPPROTO_TCP, length - l4)
    _pack_h(merged, o + l4 + 16, pseudo)
    VNET_HDR.pack_into(
        merged, 0, VIRTIO_NET_HDR_F_NEEDS_CSUM, gso_type, headers, mss, l4, 16
    )  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
    return merged


# --- reading fast: TSO super packets with the checksums summed by numpy -----------------------
#
# ``segment`` sums each segment's octets with ``int.from_bytes`` (~3 us per 1400-octet segment:
# the conversion to a Python int and the division are O(n) in Python's 30-bit digits), which
# costs more than the ~1.3 us read per packet that TSO saves. numpy sums the 16-bit words of
# every segment of a super packet in one call (~0.2 us per segment), and the headers' share of
# each checksum is a few integer additions on sums computed once per super packet (the
# fields that change per segment: lengths, IPv4 ID, TCP sequence number and flags; RFC 1071
# sec. 2: the sum is commutative, so the parts add). numpy is optional: without it the
# forwarder does not ask for TSO at all (``Forwarder.enable_tso``).


def load_numpy() -> bool:
    """Import numpy for :func:`segment_fast` (the daemon does this in a thread at start: the
    import takes 50-150 ms). False when it is not installed."""
    global _numpy
    if _numpy is None:
        try:
            import numpy
        except ImportError:
            return False
        _numpy = numpy
    return True


_CSUM_START_OFFSET = struct.Struct("=HH")  # csum_start, csum_offset: octets 6-9 of the header


def complete_checksum(frame: memoryview, length: int) -> None:
    """A read of LENGTH octets in FRAME (virtio header + one packet, not GSO, NEEDS_CSUM):
    complete its L4 checksum in place. The forwarder's path for every TCP ACK and UDP
    datagram once TSO is on (TUN_F_CSUM makes the kernel leave their checksums to us):
    no copy, one sum (:func:`_sum16`)."""
    start, offset = _CSUM_START_OFFSET.unpack_from(frame, 6)
    start += VNET_HDR_SIZE
    _finish_l4_checksum(frame, VNET_HDR_SIZE, length, start, start + offset)


def _ip_sums(template: bytearray, l4: int, protocol: int) -> tuple[int, int, int]:
    """(IPv4 ID, sum of the IPv4 header without length, ID and checksum, sum of the
    pseudo-header without length) of a super packet's headers, which it zeroes where each
    segment differs; IPv6: (0, 0, pseudo-header sum)."""
    if template[0] >> 4 != 4:
        return 0, 0, int.from_bytes(template[8:40], "big") + protocol
    ip_id = _unpack_h(template, 4)[0]
    _IPV4_LENGTH_ID.pack_into(template, 2, 0, 0)
    _pack_h(template, 10, 0)
    return (
        ip_id,
        int.from_bytes(template[:l4], "big"),
        int.from_bytes(template[12:20], "big") + protocol,
    )


def _payload_sums(payload: memoryview, mss: int) -> list[int]:
    """The 16-bit word sum of each MSS-sized piece of PAYLOAD (the last may be shorter),
    the full pieces in one numpy call. Each piece starts at an even offset of its segment
    (TCP headers are whole 32-bit words, UDP's is 8 octets), so its words are the
    segment's; MSS is even (the caller checks)."""
    full = len(payload) // mss
    sums: list[int] = (
        _numpy.frombuffer(payload, dtype=">u2", count=full * mss // 2)
        .reshape(full, mss // 2)
        .sum(axis=1, dtype=_numpy.uint64)
        .tolist()
    )
    if len(payload) > full * mss:
        last = payload[full * mss :]
        # RFC 1071: an odd last octet is the high half of a word padded with zero.
        tail = int.from_bytes(last, "big")
        sums.append(tail << 8 if len(last) % 2 else tail)
    return sums


def _segment_udp(
    packet: memoryview, mss: int, frame: bytes | bytearray | memoryview
) -> list[bytearray]:
    """A USO super packet (a UDP GSO send: TUN_F_USO4/6) cut into datagrams of MSS octets
    of payload: IP length (and IPv4 ID and header checksum), UDP length and checksum."""
    l4, protocol = _l4_offset(packet)
    headers_length = l4 + 8
    if protocol != _IPPROTO_UDP or len(packet) <= headers_length or l4 % 2:
        return segment(frame)
    ipv4 = packet[0] >> 4 == 4
    template = bytearray(packet[:headers_length])
    _pack_h(template, l4 + 4, 0)  # the UDP length and checksum: per datagram
    _pack_h(template, l4 + 6, 0)
    ports_sum = int.from_bytes(template[l4 : l4 + 4], "big")
    ip_id, ip_sum, pseudo = _ip_sums(template, l4, _IPPROTO_UDP)
    payload = packet[headers_length:]
    datagrams: list[bytearray] = []
    start = 0
    for payload_sum in _payload_sums(payload, mss):
        out = template + payload[start : start + mss]
        start += mss
        total = len(out)
        udp_length = total - l4
        if ipv4:
            identification = ip_id & 0xFFFF
            ip_id += 1
            _IPV4_LENGTH_ID.pack_into(out, 2, total, identification)
            _pack_h(out, 10, 0xFFFF - ((ip_sum + total + identification) % 0xFFFF or 0xFFFF))
        else:
            _pack_h(out, 4, udp_length)
        # The UDP length counts twice: in the pseudo-header and in the UDP header.
        checksum = 0xFFFF - ((pseudo + ports_sum + 2 * udp_length + payload_sum) % 0xFFFF or 0xFFFF)
        _UDP_LENGTH_CHECKSUM.pack_into(out, l4 + 4, udp_length, checksum or 0xFFFF)  # RFC 768
        datagrams.append(out)
    return datagrams


def segment_fast(frame: bytes | bytearray | memoryview) -> list[bytearray]:
    """:func:`segment` for what a TUN device with TSO/USO hands us, faster for TCP and UDP
    super packets and plain packets with a partial checksum (the same packets, byte for
    byte: tests/test_offload_fast.py). Anything else (an odd segment size, IPv6 extension
    headers, no numpy) goes to :func:`segment`."""
    if len(frame) < VNET_HDR_SIZE:
        raise OffloadError("shorter than a virtio_net_hdr")
    flags, gso_type, _hdr_len, mss, start, offset = VNET_HDR.unpack_from(frame, 0)
    gso = gso_type & ~VIRTIO_NET_HDR_GSO_ECN
    numpy = _numpy
    if gso == VIRTIO_NET_HDR_GSO_NONE and numpy is not None:
        return [_completed(memoryview(frame)[VNET_HDR_SIZE:], flags, start, offset)]
    if gso == VIRTIO_NET_HDR_GSO_UDP_L4 and numpy is not None and mss and not mss % 2:
        return _segment_udp(memoryview(frame)[VNET_HDR_SIZE:], mss, frame)
    if (
        numpy is None
        or gso not in (VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6)
        or mss == 0
        or mss % 2
    ):
        return segment(frame)
    packet = memoryview(frame)[VNET_HDR_SIZE:]
    l4, protocol = _l4_offset(packet)
    if protocol != _IPPROTO_TCP or len(packet) < l4 + 20:
        return segment(frame)
    headers_length = l4 + (packet[l4 + 12] >> 4) * 4
    payload = packet[headers_length:]
    if len(packet) < headers_length or not payload:
        return segment(frame)
    ipv4 = packet[0] >> 4 == 4
    template = bytearray(packet[:headers_length])
    # The constant parts of the sums, computed once: the changing fields zeroed first.
    sequence = _unpack_i(template, l4 + 4)[0]
    tcp_flags = template[l4 + 13]
    _pack_i(template, l4 + 4, 0)
    template[l4 + 13] = 0
    _pack_h(template, l4 + 16, 0)
    tcp_sum = int.from_bytes(template[l4:headers_length], "big")
    ip_id, ip_sum, pseudo = _ip_sums(template, l4, _IPPROTO_TCP)
    sums = _payload_sums(payload, mss)
    count = len(sums)
    segments: list[bytearray] = []
    start = 0
    if ipv4 and l4 == 20:
        # IPv4 without options (what the kernel's TCP sends): everything from the total
        # length to the TCP checksum written with one pack_into per segment; the sums
        # (never 0: the pseudo-header holds the protocol) folded with one modulo, 0xFFFF
        # standing for a non-zero multiple, as in _fold.
        pack = _V4_TCP_SEGMENT.pack_into
        (fragment, ttl, addresses, ports, ack, data_offset, window) = _V4_TCP_CONSTANT.unpack_from(
            packet
        )
        middle = tcp_flags & ~_TCP_FIN_PSH & ~_TCP_CWR
        flags_of = [middle] * count  # FIN and PSH on the last only, CWR on the first only
        if count > 1:
            flags_of[0] = tcp_flags & ~_TCP_FIN_PSH
            flags_of[-1] = tcp_flags & ~_TCP_CWR
        else:
            flags_of[0] = tcp_flags
        tcp_base = pseudo + tcp_sum - 20  # + the IP total length = + the TCP length
        seq = sequence
        for payload_sum, flags in zip(sums, flags_of, strict=True):
            out = template + payload[start : start + mss]
            start += mss
            total = len(out)
            identification = ip_id & 0xFFFF
            ip_id += 1
            tcp = tcp_base + total + (seq >> 16) + (seq & 0xFFFF) + flags + payload_sum
            pack(
                out, 2, total, identification, fragment, ttl, _IPPROTO_TCP,
                0xFFFF - ((ip_sum + total + identification) % 0xFFFF or 0xFFFF),
                addresses, ports, seq, ack, data_offset, flags, window,
                0xFFFF - (tcp % 0xFFFF or 0xFFFF),
            )  # fmt: skip
            seq = (seq + mss) & 0xFFFFFFFF
            segments.append(out)
        return segments
    for index, payload_sum in enumerate(sums):
        end = start + mss
        out = template + payload[start:end]
        start = end
        total = len(out)
        segment_flags = tcp_flags
        if index != count - 1:
            segment_flags &= ~_TCP_FIN_PSH
        if index:
            segment_flags &= ~_TCP_CWR
        out[l4 + 13] = segment_flags
        seq = (sequence + index * mss) & 0xFFFFFFFF
        _pack_i(out, l4 + 4, seq)
        tcp_length = total - l4
        if ipv4:
            identification = (ip_id + index) & 0xFFFF
            _IPV4_LENGTH_ID.pack_into(out, 2, total, identification)
            _pack_h(out, 10, ~_fold(ip_sum + total + identification) & 0xFFFF)
        else:
            _pack_h(out, 4, tcp_length)
        checksum = _fold(
            pseudo + tcp_length + tcp_sum + (seq >> 16) + (seq & 0xFFFF) + segment_flags
            + payload_sum
        )  # fmt: skip
        _pack_h(out, l4 + 16, ~checksum & 0xFFFF)
        segments.append(out)
    return segments
