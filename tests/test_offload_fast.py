"""tun.offload.segment_fast (TSO reads with numpy-summed checksums) against segment, and
segment against scapy's checksums (tests/test_tun.py checks segment itself)."""

from __future__ import annotations

import random
import struct

import pytest

from tun import offload

pytestmark = pytest.mark.skipif(not offload.load_numpy(), reason="numpy is not installed")


def _super_packet(ipv6: bool, payload: bytes, flags: int, options: bytes = b"") -> bytes:
    tcp = (
        struct.pack(
            "!HHIIBBHHH",
            40000,
            5201,
            0xFFFFFF00,
            77,
            (5 + len(options) // 4) << 4,
            flags,
            512,
            0,
            0,
        )
        + options
    )
    if ipv6:
        ip = struct.pack("!IHBB16s16s", 0x60000000, len(tcp) + len(payload), 6, 64,
                         bytes(range(16)), bytes(range(16, 32)))  # fmt: skip
    else:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), 0xFFFE, 0x4000,
                         64, 6, 0, bytes([10, 0, 0, 1]), bytes([10, 0, 1, 2]))  # fmt: skip
    return ip + tcp + payload


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("length", [1348, 2 * 1348, 48 * 1348 - 1, 1000 * 7 + 1, 5])
def test_segment_fast_equals_segment(ipv6: bool, length: int) -> None:
    rng = random.Random(length)
    payload = bytes(rng.getrandbits(8) for _ in range(length))
    options = bytes([1, 1, 8, 10]) + rng.randbytes(8)  # NOP NOP timestamps
    packet = _super_packet(ipv6, payload, 0x80 | 0x18 | 0x01, options)  # CWR PSH ACK FIN
    l4 = 40 if ipv6 else 20
    mss = 1348 if length > 1000 else 2
    header = offload.VnetHeader(
        offload.VIRTIO_NET_HDR_F_NEEDS_CSUM,
        offload.VIRTIO_NET_HDR_GSO_TCPV6 if ipv6 else offload.VIRTIO_NET_HDR_GSO_TCPV4,
        l4 + 32, mss, l4, 16,
    )  # fmt: skip
    frame = header.pack() + packet
    expected = offload.segment(frame)
    got = offload.segment_fast(memoryview(frame))
    assert [bytes(p) for p in got] == [bytes(p) for p in expected]
    assert len(got) == -(-length // mss)


def test_segment_fast_hands_the_rest_to_segment() -> None:
    # An odd segment size, and a plain packet with a partial checksum: segment's answer.
    packet = _super_packet(False, bytes(range(200)) * 3, 0x10)
    odd = offload.VnetHeader(offload.VIRTIO_NET_HDR_F_NEEDS_CSUM,
                             offload.VIRTIO_NET_HDR_GSO_TCPV4, 40, 101, 20, 16).pack()  # fmt: skip
    assert offload.segment_fast(odd + packet) == offload.segment(odd + packet)
    plain = offload.VnetHeader(offload.VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 20, 16).pack()
    assert offload.segment_fast(plain + packet) == offload.segment(plain + packet)
    with pytest.raises(offload.OffloadError):
        offload.segment_fast(b"\x01")


def _partial(length: int, protocol: int) -> bytes:
    """Virtio header (NEEDS_CSUM) + an IPv4 TCP or UDP packet with the pseudo-header sum in
    its checksum field, as the kernel hands it over with TUN_F_CSUM."""
    rng = random.Random(length * protocol)
    payload = rng.randbytes(length)
    l4 = (
        struct.pack("!HHIIBBHHH", 1, 2, 3, 4, 0x50, 0x18, 5, 0, 0)
        if protocol == 6
        else struct.pack("!HHHH", 1, 2, 8 + length, 0)
    )
    packet = bytearray(
        struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4) + length, 1, 0x4000, 64, protocol, 0,
                    bytes([10, 0, 0, 1]), bytes([10, 0, 1, 2])) + l4 + payload
    )  # fmt: skip
    field = 16 if protocol == 6 else 6
    struct.pack_into(
        "!H", packet, 20 + field, offload._pseudo_header_sum(packet, protocol, len(packet) - 20)
    )
    header = offload.VnetHeader(offload.VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 20, field).pack()
    return header + packet


@pytest.mark.parametrize("length", [0, 1, 31, 300, 1371])
@pytest.mark.parametrize("protocol", [6, 17], ids=["tcp", "udp"])
def test_partial_checksum_completed_as_segment_does(length: int, protocol: int) -> None:
    frame = _partial(length, protocol)
    assert offload.segment_fast(frame) == offload.segment(frame)


@pytest.mark.parametrize("length", [0, 1, 300, 1371])
@pytest.mark.parametrize("protocol", [6, 17], ids=["tcp", "udp"])
def test_complete_checksum_in_place(length: int, protocol: int) -> None:
    frame = bytearray(_partial(length, protocol))
    frame += bytes(7)  # what follows the read in the forwarder's buffer is not summed
    expected = offload.segment(bytes(frame[: len(frame) - 7]))[0]
    offload.complete_checksum(memoryview(frame), len(frame) - 7)
    assert frame[offload.VNET_HDR_SIZE : len(frame) - 7] == expected
    with pytest.raises(offload.OffloadError):
        offload.complete_checksum(memoryview(frame), 30)


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize(("mss", "length"), [(1372, 46 * 1372 + 9), (36, 36 * 10 + 7), (36, 36)])
def test_udp_super_packet_equals_segment(ipv6: bool, mss: int, length: int) -> None:
    payload = random.Random(length).randbytes(length)
    udp = struct.pack("!HHHH", 40000, 5301, 8 + length, 0)
    if ipv6:
        ip = struct.pack("!IHBB16s16s", 0x60000000, 8 + length, 17, 64,
                         bytes(range(16)), bytes(range(16, 32)))  # fmt: skip
    else:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + length, 7, 0x4000, 64, 17, 0,
                         bytes([10, 0, 0, 1]), bytes([10, 0, 1, 2]))  # fmt: skip
    l4 = len(ip)
    header = offload.VnetHeader(offload.VIRTIO_NET_HDR_F_NEEDS_CSUM,
                                offload.VIRTIO_NET_HDR_GSO_UDP_L4, l4 + 8, mss, l4, 6)  # fmt: skip
    frame = header.pack() + ip + udp + payload
    got = offload.segment_fast(memoryview(frame))
    assert [bytes(p) for p in got] == [bytes(p) for p in offload.segment(frame)]
    assert len(got) == -(-length // mss)
