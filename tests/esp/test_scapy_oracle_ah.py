"""scapy's ``SecurityAssociation`` as an oracle for AH (RFC 4302), both directions."""

from __future__ import annotations

import os

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop, RouterAlert
from scapy.layers.ipsec import AH, SecurityAssociation

from esp.ah import AhSa
from esp.errors import DropReason, EspDrop
from ikev2.enums import IntegId
from tests.esp.helpers import ipv4_packet, ipv6_packet

ALGORITHMS = {
    IntegId.AUTH_HMAC_SHA1_96: (20, "HMAC-SHA1-96"),
    IntegId.AUTH_HMAC_SHA2_256_128: (32, "SHA2-256-128"),
    IntegId.AUTH_HMAC_SHA2_384_192: (48, "SHA2-384-192"),
    IntegId.AUTH_HMAC_SHA2_512_256: (64, "SHA2-512-256"),
}
SPI = 0x00ABCDEF


def make(integ: IntegId, mode: str, family: int, esn: bool = False):
    klen, scapy_name = ALGORITHMS[integ]
    key = os.urandom(klen)
    src, dst = ("192.0.2.1", "192.0.2.2") if family == 4 else ("2001:db8::a", "2001:db8::b")
    ours_out = AhSa(SPI, "out", integ, key, mode=mode, src=src, dst=dst, esn=esn)
    ours_in = AhSa(SPI, "in", integ, key, mode=mode, src=src, dst=dst, esn=esn)
    tunnel = None
    if mode == "tunnel":
        tunnel = IP(src=src, dst=dst) if family == 4 else IPv6(src=src, dst=dst)
    theirs = SecurityAssociation(
        AH, spi=SPI, auth_algo=scapy_name, auth_key=key, tunnel_header=tunnel, esn_en=esn
    )
    return ours_out, ours_in, theirs


def parse(data: bytes):
    return IP(data) if data[0] >> 4 == 4 else IPv6(data)


@pytest.mark.parametrize("integ", list(ALGORITHMS))
@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("mode", ["tunnel", "transport"])
def test_both_directions(integ: IntegId, family: int, mode: str) -> None:
    ours_out, ours_in, theirs = make(integ, mode, family)
    for size in (80, 1000):
        inner = ipv4_packet(size) if family == 4 else ipv6_packet(size)
        wire = ours_out.protect(inner)
        assert parse(wire).haslayer(AH)
        assert bytes(theirs.decrypt(parse(wire))) == inner
        wire = bytes(theirs.encrypt(parse(inner)))
        assert ours_in.unprotect(wire) == inner


@pytest.mark.parametrize("integ", [IntegId.AUTH_HMAC_SHA2_256_128, IntegId.AUTH_HMAC_SHA1_96])
def test_mutable_fields_do_not_count(integ: IntegId) -> None:
    """A router changing TTL/TOS/flags (IPv4) or hop limit/flow label (IPv6) in transit
    must not break the ICV; changing an immutable field must."""
    ours_out, ours_in, _ = make(integ, "transport", 4)
    pkt = IP(ours_out.protect(ipv4_packet(100)))
    pkt.ttl = 3
    pkt.tos = 0x10
    pkt.flags = "DF"
    del pkt.chksum
    assert ours_in.unprotect(bytes(pkt))
    pkt = IP(ours_out.protect(ipv4_packet(100)))
    pkt.id ^= 1
    del pkt.chksum
    with pytest.raises(EspDrop) as err:
        ours_in.unprotect(bytes(pkt))
    assert err.value.reason is DropReason.ICV_FAILURE

    ours_out, ours_in, _ = make(integ, "transport", 6)
    pkt = IPv6(ours_out.protect(ipv6_packet(100)))
    pkt.hlim = 1
    pkt.fl = 12345
    pkt.tc = 7
    assert ours_in.unprotect(bytes(pkt))


def test_ipv4_options_and_ipv6_extension_headers() -> None:
    from scapy.layers.inet import IPOption_Router_Alert, IPOption_Timestamp

    ours_out, ours_in, theirs = make(IntegId.AUTH_HMAC_SHA2_256_128, "transport", 4)
    inner = bytes(
        IP(src="10.0.0.1", dst="10.0.0.2", options=[IPOption_Router_Alert(), IPOption_Timestamp()])
        / UDP()
        / b"payload"
    )
    assert bytes(theirs.decrypt(IP(ours_out.protect(inner)))) == inner
    assert ours_in.unprotect(bytes(theirs.encrypt(IP(inner)))) == inner

    ours_out, ours_in, theirs = make(IntegId.AUTH_HMAC_SHA2_512_256, "transport", 6)
    inner = bytes(
        IPv6(src="2001:db8::1", dst="2001:db8::2")
        / IPv6ExtHdrHopByHop(options=[RouterAlert()])
        / IPv6ExtHdrDestOpt()
        / UDP()
        / b"payload"
    )
    assert bytes(theirs.decrypt(IPv6(ours_out.protect(inner)))) == inner
    assert ours_in.unprotect(bytes(theirs.encrypt(IPv6(inner)))) == inner


@pytest.mark.parametrize("high", [0, 7])
def test_esn(high: int) -> None:
    ours_out, ours_in, theirs = make(IntegId.AUTH_HMAC_SHA2_256_128, "tunnel", 4, esn=True)
    inner = ipv4_packet(120)
    ours_out.seq = (high << 32) + 99
    assert bytes(theirs.decrypt(IP(ours_out.protect(inner)), esn_en=True, esn=high)) == inner
    ours_in.replay.highest = (high << 32) + 1
    wire = bytes(theirs.encrypt(IP(inner), seq_num=5, esn_en=True, esn=high))
    assert ours_in.unprotect(wire) == inner


def test_replay_window_after_icv_only() -> None:
    ours_out, ours_in, _ = make(IntegId.AUTH_HMAC_SHA2_256_128, "tunnel", 4)
    wire = ours_out.protect(ipv4_packet(100))
    forged = bytearray(wire)
    forged[-1] ^= 0xFF
    with pytest.raises(EspDrop):
        ours_in.unprotect(bytes(forged))
    assert ours_in.replay.highest == 0
    assert ours_in.unprotect(wire)
    with pytest.raises(EspDrop) as err:
        ours_in.unprotect(wire)
    assert err.value.reason is DropReason.REPLAY
