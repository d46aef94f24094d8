"""tun/: MTU arithmetic checked against scapy's ESP, ICMP PMTU errors checked by scapy and by the
Linux kernel, and real TUN devices inside a network namespace."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import socket
import struct
import subprocess
import time

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, ICMPv6PacketTooBig, IPv6
from scapy.layers.ipsec import ESP, SecurityAssociation

from ikev2.enums import EncrId, IntegId
from tun import (
    TunDevice,
    TunError,
    build_frag_needed,
    build_packet_too_big,
    esp_sizes,
    needs_frag_needed,
    tunnel_mtu,
    worst_case_esp_overhead,
)
from tun.icmp import internet_checksum

needs_root = pytest.mark.needs("root", "tun")

# --- MTU --------------------------------------------------------------------------------------

SCAPY_CASES = [
    # (our transform ids, scapy crypt algo, key length, scapy auth algo, auth key length)
    ((EncrId.ENCR_AES_GCM_16, None), "AES-GCM", 36, "NULL", 0),
    ((EncrId.ENCR_AES_CBC, IntegId.AUTH_HMAC_SHA2_256_128), "AES-CBC", 32, "SHA2-256-128", 32),
    ((EncrId.ENCR_AES_CBC, IntegId.AUTH_HMAC_SHA2_512_256), "AES-CBC", 16, "SHA2-512-256", 64),
    ((EncrId.ENCR_AES_CTR, IntegId.AUTH_HMAC_SHA1_96), "AES-CTR", 20, "HMAC-SHA1-96", 20),
    ((EncrId.ENCR_CHACHA20_POLY1305, None), "CHACHA20-POLY1305", 36, "NULL", 0),
    ((EncrId.ENCR_AES_CCM_16, None), "AES-CCM", 19, "NULL", 0),
]


def test_aes_gcm_16_over_udp_ipv4_figure():
    # 20 IPv4 + 8 UDP + 8 ESP + 8 IV + 3 max padding + 2 trailer + 16 ICV
    sizes = esp_sizes(EncrId.ENCR_AES_GCM_16)
    assert worst_case_esp_overhead(sizes, outer_ipv6=False, udp_encap=True) == 65
    assert tunnel_mtu(1500, sizes) == 1435
    assert tunnel_mtu(1500, sizes, outer_ipv6=True, udp_encap=False) == 1500 - 77


@pytest.mark.parametrize(("ids", "crypt", "ckey", "auth", "akey"), SCAPY_CASES)
@pytest.mark.parametrize("outer_ipv6", [False, True])
def test_tunnel_mtu_against_scapy_esp(ids, crypt, ckey, auth, akey, outer_ipv6):
    """Every inner packet up to tunnel_mtu, ESP-in-UDP-encrypted by scapy, fits the outer MTU,
    and the bound is tight to within the padding alignment."""
    outer_mtu = 1500
    sizes = esp_sizes(*ids)
    mtu = tunnel_mtu(outer_mtu, sizes, outer_ipv6=outer_ipv6, udp_encap=True)
    outer_header = (
        IPv6(src="2001:db8::1", dst="2001:db8::2")
        if outer_ipv6
        else IP(src="192.0.2.1", dst="192.0.2.2")
    )
    sa = SecurityAssociation(
        ESP,
        spi=0x1234,
        crypt_algo=crypt,
        crypt_key=bytes(range(ckey)),
        auth_algo=auth,
        auth_key=bytes(range(akey)) if akey else None,
        tunnel_header=outer_header,
        nat_t_header=UDP(sport=4500, dport=4500),
    )
    largest = 0
    for inner_length in range(mtu - 2 * sizes.block_size, mtu + 1):
        payload = b"x" * (inner_length - 28)
        inner = IP(src="10.1.0.1", dst="10.2.0.1") / UDP(sport=1, dport=2) / payload
        assert len(inner) == inner_length
        outer_length = len(bytes(sa.encrypt(inner)))
        assert outer_length <= outer_mtu, (inner_length, outer_length)
        largest = max(largest, outer_length)
    assert largest > outer_mtu - sizes.block_size


def test_tunnel_mtu_takes_the_largest_overhead():
    gcm = esp_sizes(EncrId.ENCR_AES_GCM_16)
    cbc = esp_sizes(EncrId.ENCR_AES_CBC, IntegId.AUTH_HMAC_SHA2_512_256)
    assert tunnel_mtu(1500, [gcm, cbc]) == tunnel_mtu(1500, cbc) < tunnel_mtu(1500, gcm)
    with pytest.raises(ValueError):
        tunnel_mtu(100, cbc)
    with pytest.raises(ValueError):
        esp_sizes(EncrId.ENCR_DES)


# --- ICMP builders ----------------------------------------------------------------------------


def _big_ipv4(df: bool = True, size: int = 1500) -> bytes:
    packet = IP(src="10.1.0.5", dst="10.2.0.9", flags="DF" if df else 0, ttl=63) / UDP(
        sport=1234, dport=53
    )
    return bytes(packet / (b"p" * (size - len(packet))))


def test_needs_frag_needed():
    assert needs_frag_needed(_big_ipv4(df=True, size=1436), 1435)
    assert not needs_frag_needed(_big_ipv4(df=True, size=1435), 1435)
    assert not needs_frag_needed(_big_ipv4(df=False, size=1500), 1435)
    v6 = bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP() / (b"q" * 1400))
    assert needs_frag_needed(v6, 1400)
    assert not needs_frag_needed(v6, len(v6))


def test_frag_needed_parsed_by_scapy():
    offending = _big_ipv4()
    error = build_frag_needed(offending, 1400)
    parsed = IP(error)
    assert parsed.src == "10.2.0.9" and parsed.dst == "10.1.0.5" and parsed.proto == 1
    assert parsed[ICMP].type == 3 and parsed[ICMP].code == 4
    assert parsed[ICMP].nexthopmtu == 1400
    assert len(error) <= 576
    assert bytes(parsed[ICMP].payload)[:28] == offending[:28]
    # scapy recomputes both checksums to the values we wrote.
    rebuilt = parsed.copy()
    del rebuilt.chksum
    del rebuilt[ICMP].chksum
    assert bytes(rebuilt.__class__(bytes(rebuilt))) == error
    assert internet_checksum(error[:20]) == 0
    assert internet_checksum(error[20:]) == 0


def test_frag_needed_refused_for_icmp_errors_and_fragments():
    icmp_error = bytes(IP(src="10.1.0.5", dst="10.2.0.9", flags="DF") / ICMP(type=3, code=1))
    assert build_frag_needed(icmp_error, 1400) is None
    echo = bytes(IP(src="10.1.0.5", dst="10.2.0.9", flags="DF") / ICMP(type=8))
    assert build_frag_needed(echo, 1400) is not None
    fragment = bytes(IP(src="10.1.0.5", dst="10.2.0.9", frag=100) / (b"z" * 100))
    assert build_frag_needed(fragment, 1400) is None
    with pytest.raises(ValueError):
        build_frag_needed(b"\x60" + b"\0" * 39, 1400)


def test_packet_too_big_parsed_by_scapy():
    offending = bytes(
        IPv6(src="2001:db8:1::5", dst="2001:db8:2::9") / ICMPv6EchoRequest(data=b"e" * 1400)
    )
    error = build_packet_too_big(offending, 1300, source="2001:db8:ffff::1")
    parsed = IPv6(error)
    assert parsed.src == "2001:db8:ffff::1" and parsed.dst == "2001:db8:1::5"
    assert parsed.nh == 58
    too_big = parsed[ICMPv6PacketTooBig]
    assert too_big.mtu == 1300
    assert len(error) == 1280  # as much of the offending packet as fits the minimum MTU
    checksum = too_big.cksum
    rebuilt = IPv6(error)
    del rebuilt[ICMPv6PacketTooBig].cksum
    assert IPv6(bytes(rebuilt))[ICMPv6PacketTooBig].cksum == checksum
    # No error about an ICMPv6 error.
    assert build_packet_too_big(error, 1280) is None


# --- real TUN devices in a namespace -----------------------------------------------------------


@pytest.fixture
def lab():
    from aioipsec.netns import Lab

    with Lab("tun") as lab:
        yield lab


def _read_until(tun: TunDevice, match, timeout: float = 5.0) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([tun.fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        packet = tun.read()
        if packet is not None and match(packet):
            return packet
    raise AssertionError("expected packet not read from the TUN device")


def _is_echo_request_v4(packet: bytes) -> bool:
    return packet[0] >> 4 == 4 and packet[9] == 1 and packet[(packet[0] & 15) * 4] == 8


IP_MTU_DISCOVER, IP_PMTUDISC_DO, IP_MTU = 10, 2, 14  # <linux/in.h>
IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO, IPV6_MTU = 23, 2, 24  # <linux/in6.h>


def _check_kernel_takes_pmtu_error(tun: TunDevice, ns, destination: str, tunnel: int) -> None:
    """Send a DF UDP datagram of the device MTU through the tunnel route, answer it with our
    ICMP error, and check that the kernel lowered the path MTU (socket and route cache).

    (ICMP echo would not do: Linux hands errors about echo requests to the ping socket and
    does not update the route for them.)"""
    ipv6 = ":" in destination
    family = socket.AF_INET6 if ipv6 else socket.AF_INET
    level = socket.IPPROTO_IPV6 if ipv6 else socket.IPPROTO_IP
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        if ipv6:
            sock.setsockopt(level, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO)
        else:
            sock.setsockopt(level, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
        sock.connect((destination, 9))
        header = 48 if ipv6 else 28
        sock.send(b"m" * (tun.mtu - header))
        version = 6 if ipv6 else 4

        def is_our_datagram(packet: bytes) -> bool:
            return packet[0] >> 4 == version and packet[6 if ipv6 else 9] == 17

        big = _read_until(tun, is_our_datagram)
        assert len(big) == tun.mtu
        assert needs_frag_needed(big, tunnel)
        error = build_packet_too_big(big, tunnel) if ipv6 else build_frag_needed(big, tunnel)
        tun.write(error)
        deadline = time.monotonic() + 5
        path_mtu = 0
        while time.monotonic() < deadline:
            path_mtu = sock.getsockopt(level, IPV6_MTU if ipv6 else IP_MTU)
            if path_mtu == tunnel:
                break
            time.sleep(0.02)
        assert path_mtu == tunnel
        with pytest.raises(OSError, match="Message too long"):
            sock.send(b"m" * (tun.mtu - header))
    family_flag = "-6" if ipv6 else "-4"
    cached = ns.run("ip", family_flag, "route", "get", destination).stdout
    assert f"mtu {tunnel}" in cached, cached


@needs_root
@pytest.mark.netns
@pytest.mark.timeout(60)
def test_tun_ping_round_trip_routes_and_pmtu(lab):
    ns = lab.namespace("a")
    with ns.entered(), TunDevice.create("ipsec0", mtu=1400) as tun:
        assert tun.mtu == 1400 and tun.is_up
        tun.add_address("10.99.0.1/32")
        tun.add_selector_routes(["10.98.0.0/24"], local_address="10.99.0.1")
        tun.add_selector_routes(["10.97.0.0/24"], local_address="10.55.0.1")  # not ours: no src
        routes = ns.run("ip", "-4", "route", "show", "dev", "ipsec0").stdout
        assert re.search(r"10\.98\.0\.0/24 scope link src 10\.99\.0\.1", routes), routes
        assert re.search(r"^10\.97\.0\.0/24 scope link\s*$", routes, re.M), routes
        route_get = ns.run("ip", "route", "get", "10.98.0.5").stdout
        assert "dev ipsec0 src 10.99.0.1" in route_get

        # The kernel routes a ping into the TUN device; we answer it through the device.
        ping = subprocess.Popen(
            ["ping", "-c", "1", "-W", "5", "10.98.0.5"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            request = _read_until(tun, _is_echo_request_v4)
            parsed = IP(request)
            assert parsed.src == "10.99.0.1" and parsed.dst == "10.98.0.5"
            reply = (
                IP(src=parsed.dst, dst=parsed.src)
                / ICMP(type=0, id=parsed[ICMP].id, seq=parsed[ICMP].seq)
                / bytes(parsed[ICMP].payload)
            )
            tun.write(bytes(reply))
            output, _ = ping.communicate(timeout=10)
        finally:
            if ping.poll() is None:
                ping.kill()
                ping.wait()
        assert ping.returncode == 0, output
        assert "1 received" in output

        # PMTU: a DF packet larger than the tunnel MTU gets "fragmentation needed"; the kernel
        # believes it: the socket's path MTU and the route cache drop to the tunnel MTU.
        _check_kernel_takes_pmtu_error(tun, ns, "10.98.0.6", 1300)

        tun.remove_route("10.98.0.0/24")
        assert "10.98.0.0/24" not in ns.run("ip", "-4", "route", "show", "dev", "ipsec0").stdout
    # Closing removed the device.
    assert ns.run("ip", "link", "show", "ipsec0", check=False).returncode != 0


@needs_root
@pytest.mark.netns
@pytest.mark.timeout(60)
def test_tun_ipv6_packet_too_big_reaches_the_kernel(lab):
    ns = lab.namespace("b")
    with ns.entered(), TunDevice.create("tun6", mtu=1400) as tun:
        tun.add_address("fd00:99::1/128")
        tun.add_selector_routes(["fd00:98::/64"], local_address="fd00:99::1")
        assert "src fd00:99::1" in ns.run("ip", "-6", "route", "get", "fd00:98::5").stdout
        _check_kernel_takes_pmtu_error(tun, ns, "fd00:98::5", 1300)


@needs_root
@pytest.mark.netns
@pytest.mark.timeout(60)
def test_stale_tun_removed_other_kinds_refused(lab):
    ns = lab.namespace("c")
    ns.run("ip", "tuntap", "add", "dev", "ipsec0", "mode", "tun")  # persistent: survives us
    ns.run("ip", "link", "add", "dummy0", "type", "veth", "peer", "name", "dummy1")
    with ns.entered():
        with TunDevice.create("ipsec0") as tun:
            info = json.loads(ns.run("ip", "-d", "-j", "link", "show", "ipsec0").stdout)[0]
            assert info["linkinfo"]["info_data"]["persist"] is False  # ours, not the stale one
            assert tun.name == "ipsec0"
        with pytest.raises(TunError, match="not a TUN device"):
            TunDevice.create("dummy0")
        with pytest.raises(TunError):
            TunDevice.create("bad/name")
    assert ns.run("ip", "link", "show", "ipsec0", check=False).returncode != 0
    assert ns.run("ip", "link", "show", "dummy0", check=False).returncode == 0


# --- offloads: TSO super packets through our segmentation and coalescing ---------------------


def _bridge_tcp_transfer(lab, coalesce_writes: bool, size: int, ipv6: bool) -> dict:
    """Two namespaces whose only link is this test: TUN "ta" in A and "tb" in B, both with
    virtio headers and TSO; a TCP connection from A to B; every frame read from one TUN goes
    through tun.offload.segment (and optionally coalesce) into the other. The kernel's TCP
    is the oracle: a wrong checksum, length or sequence number stalls or corrupts the transfer.
    """
    from tun import offload

    a, b = lab.namespace("oa"), lab.namespace("ob")
    flags = offload.TUN_F_CSUM | offload.TUN_F_TSO4 | offload.TUN_F_TSO6
    if ipv6:
        addr_a, addr_b, net_a, net_b = "fd00:71::1", "fd00:72::1", "fd00:71::/64", "fd00:72::/64"
        family = socket.AF_INET6
    else:
        addr_a, addr_b, net_a, net_b = "10.71.0.1", "10.72.0.1", "10.71.0.0/24", "10.72.0.0/24"
        family = socket.AF_INET
    with a.entered():
        ta = TunDevice.create("ta", mtu=1500, vnet_hdr=True)
        ta.set_offload(flags)
        ta.add_address(addr_a)
        ta.add_route(net_b, source=addr_a)
        client = socket.socket(family, socket.SOCK_STREAM)
    with b.entered():
        tb = TunDevice.create("tb", mtu=1500, vnet_hdr=True)
        tb.set_offload(flags)
        tb.add_address(addr_b)
        tb.add_route(net_a, source=addr_b)
        server = socket.socket(family, socket.SOCK_STREAM)
        server.bind((addr_b, 5001))
        server.listen(1)
    payload = os.urandom(size)
    received = bytearray()
    stats = {"reads": 0, "super_reads": 0, "writes": 0, "gso_writes": 0}
    try:
        client.setblocking(False)
        client.connect_ex((addr_b, 5001))
        connection = None
        sent = 0
        deadline = time.monotonic() + 30
        while len(received) < size and time.monotonic() < deadline:
            readers = [ta.fd, tb.fd] + ([connection] if connection else [server])
            writers = [client] if sent < size else []
            ready_r, ready_w, _ = select.select(readers, writers, [], 0.5)
            for source, sink in ((ta, tb), (tb, ta)):
                if source.fd not in ready_r:
                    continue
                while (frame := source.read()) is not None:
                    stats["reads"] += 1
                    stats["super_reads"] += len(frame) - 10 > 1500
                    packets = offload.segment(frame)
                    frames = (
                        offload.coalesce(packets)
                        if coalesce_writes
                        else [offload.PLAIN_HEADER + bytes(p) for p in packets]
                    )
                    for out in frames:
                        stats["writes"] += 1
                        stats["gso_writes"] += out[1] != offload.VIRTIO_NET_HDR_GSO_NONE
                        sink.write(out)
            if connection is None and server in ready_r:
                connection, _ = server.accept()
                connection.setblocking(False)
            elif connection is not None and connection in ready_r:
                with contextlib.suppress(BlockingIOError):
                    received += connection.recv(1 << 20)
            if client in ready_w:
                with contextlib.suppress(BlockingIOError):
                    sent += client.send(payload[sent : sent + (1 << 18)])
    finally:
        client.close()
        server.close()
        if "connection" in locals() and connection is not None:
            connection.close()
        ta.close()
        tb.close()
    assert bytes(received) == payload
    return stats


@needs_root
@pytest.mark.netns
@pytest.mark.timeout(90)
@pytest.mark.parametrize("coalesce_writes", [False, True], ids=["segments", "coalesced"])
@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_tso_super_packets_segmented_and_coalesced(lab, coalesce_writes, ipv6):
    stats = _bridge_tcp_transfer(lab, coalesce_writes, 2_000_000, ipv6)
    assert stats["super_reads"] > 0  # the kernel really handed us TSO super packets
    if coalesce_writes:
        assert stats["gso_writes"] > 0  # and took our super packets back
    else:
        assert stats["gso_writes"] == 0


def test_coalesce_keeps_flows_apart_and_order():
    from tun import offload

    def segment_of(seq: int, data: bytes, dport: int = 80, flags: str = "A") -> bytes:
        return bytes(
            IP(src="10.0.0.1", dst="10.0.0.2")
            / TCP(sport=1000, dport=dport, seq=seq, ack=1, flags=flags, window=500)
            / data
        )

    packets = [
        segment_of(1, b"a" * 100),
        segment_of(101, b"b" * 100),
        segment_of(201, b"c" * 50),  # short: ends the run
        segment_of(251, b"d" * 100),  # a new run
        segment_of(351, b"e" * 100, dport=81),  # another flow
        segment_of(451, b"f" * 100, flags="FA"),  # FIN goes alone
        segment_of(999, b"g" * 100),  # out of order
    ]
    frames = offload.coalesce(packets)
    headers = [offload.VnetHeader.parse(f) for f in frames]
    assert [h.gso_type for h in headers] == [offload.VIRTIO_NET_HDR_GSO_TCPV4] + [0] * 4
    merged = IP(frames[0][10:])
    assert bytes(merged[TCP].payload) == b"a" * 100 + b"b" * 100 + b"c" * 50
    assert headers[0].gso_size == 100 and headers[0].hdr_len == 40
    assert merged.len == len(frames[0]) - 10
    # Each frame that was not merged is the packet unchanged behind a plain header.
    assert [f[10:] for f in frames[1:]] == [bytes(p) for p in packets[3:]]


@pytest.mark.parametrize(
    "packet",
    [
        IP(src="10.0.0.1", dst="10.0.0.2", id=7)
        / TCP(sport=1, dport=2, flags="PA", seq=1000)
        / (b"a" * 3000),
        IPv6(src="fd00::1", dst="fd00::2")
        / TCP(sport=1, dport=2, flags="A", seq=2**32 - 100)  # the sequence number wraps
        / (b"b" * 2999),
        IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2) / (b"c" * 2500),
    ],
    ids=["tcp4", "tcp6-wrap", "udp4"],
)
def test_segment_against_scapy(packet):
    """Segments of a GSO super packet carry the right lengths, sequence numbers, flags and
    checksums: scapy recomputes every checksum to the value we wrote."""
    from tun import offload

    raw = bytes(packet)
    ipv6 = raw[0] >> 4 == 6
    l4 = 40 if ipv6 else 20
    udp = packet.haslayer(UDP)
    gso_type = (
        offload.VIRTIO_NET_HDR_GSO_UDP_L4
        if udp
        else offload.VIRTIO_NET_HDR_GSO_TCPV6
        if ipv6
        else offload.VIRTIO_NET_HDR_GSO_TCPV4
    )
    header = offload.VnetHeader(
        offload.VIRTIO_NET_HDR_F_NEEDS_CSUM, gso_type, l4 + (8 if udp else 20), 1000, l4,
        6 if udp else 16,
    )  # fmt: skip
    segments = offload.segment(header.pack() + raw)
    layer = UDP if udp else TCP
    assert len(segments) == 3
    data = b""
    for index, segment in enumerate(segments):
        parsed = (IPv6 if ipv6 else IP)(bytes(segment))
        check = parsed.copy()
        if not ipv6:
            del check.chksum
            assert parsed.id == packet.id + index
        del check[layer].chksum
        assert bytes((IPv6 if ipv6 else IP)(bytes(check))) == bytes(segment)
        if not udp:
            assert parsed[TCP].seq == (packet[TCP].seq + 1000 * index) % 2**32
            original_push = "P" in str(packet[TCP].flags)
            assert ("P" in str(parsed[TCP].flags)) == (index == 2 and original_push)
        data += bytes(parsed[layer].payload)
    assert data == bytes(packet[layer].payload)


def test_segment_completes_a_partial_checksum():
    from tun import offload

    packet = bytearray(bytes(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=5, dport=6) / b"xyz"))
    correct = bytes(packet)
    # What the kernel hands over with TUN_F_CSUM: the pseudo-header sum in the field.
    struct.pack_into("!H", packet, 26, offload._pseudo_header_sum(packet, 17, len(packet) - 20))
    header = offload.VnetHeader(offload.VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 20, 6)
    assert offload.segment(header.pack() + bytes(packet)) == [bytearray(correct)]
    with pytest.raises(offload.OffloadError):
        offload.segment(b"\x00" * 5)
