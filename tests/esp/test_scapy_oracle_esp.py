"""scapy's ``SecurityAssociation`` as an oracle for ESP, both directions.

For every algorithm both implement, in tunnel and transport mode, IPv4 and IPv6, with ESN
and with the RFC 3948 UDP header: packets we produce decrypt in scapy to the same inner
packet, and packets scapy produces decrypt in ours.
"""

from __future__ import annotations

import os

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt
from scapy.layers.ipsec import ESP, SecurityAssociation

from esp.sa import EspSa
from ikev2.enums import EncrId, IntegId
from tests.esp.helpers import ipv4_packet, ipv6_packet

GMAC = EncrId.ENCR_NULL_AUTH_AES_GMAC

# (our encr, key material length incl. salt, our integ, integ key length, scapy crypt,
#  scapy icv size, scapy auth)
ALGORITHMS = {
    "aes128gcm16": (EncrId.ENCR_AES_GCM_16, 20, IntegId.NONE, 0, "AES-GCM", None, None),
    "aes256gcm16": (EncrId.ENCR_AES_GCM_16, 36, IntegId.NONE, 0, "AES-GCM", None, None),
    "aes192gcm16": (EncrId.ENCR_AES_GCM_16, 28, IntegId.NONE, 0, "AES-GCM", None, None),
    "aes128ccm8": (EncrId.ENCR_AES_CCM_8, 19, IntegId.NONE, 0, "AES-CCM", 8, None),
    "aes256ccm12": (EncrId.ENCR_AES_CCM_12, 35, IntegId.NONE, 0, "AES-CCM", 12, None),
    "aes128ccm16": (EncrId.ENCR_AES_CCM_16, 19, IntegId.NONE, 0, "AES-CCM", 16, None),
    "chacha20poly1305": (
        EncrId.ENCR_CHACHA20_POLY1305, 36, IntegId.NONE, 0, "CHACHA20-POLY1305", None, None
    ),
    "aes128gmac": (GMAC, 20, IntegId.NONE, 0, "AES-NULL-GMAC", None, None),
    "aes256gmac": (GMAC, 36, IntegId.NONE, 0, "AES-NULL-GMAC", None, None),
    "aes128cbc-sha256": (
        EncrId.ENCR_AES_CBC, 16, IntegId.AUTH_HMAC_SHA2_256_128, 32, "AES-CBC", None, "SHA2-256-128"
    ),
    "aes256cbc-sha384": (
        EncrId.ENCR_AES_CBC, 32, IntegId.AUTH_HMAC_SHA2_384_192, 48, "AES-CBC", None, "SHA2-384-192"
    ),
    "aes192cbc-sha512": (
        EncrId.ENCR_AES_CBC, 24, IntegId.AUTH_HMAC_SHA2_512_256, 64, "AES-CBC", None, "SHA2-512-256"
    ),
    "aes128cbc-sha1": (
        EncrId.ENCR_AES_CBC, 16, IntegId.AUTH_HMAC_SHA1_96, 20, "AES-CBC", None, "HMAC-SHA1-96"
    ),
    "aes128ctr-sha256": (
        EncrId.ENCR_AES_CTR, 20, IntegId.AUTH_HMAC_SHA2_256_128, 32, "AES-CTR", None, "SHA2-256-128"
    ),
    "null-sha256": (
        EncrId.ENCR_NULL, 0, IntegId.AUTH_HMAC_SHA2_256_128, 32, "NULL", None, "SHA2-256-128"
    ),
}  # fmt: skip

SPI = 0x0C0FFEE0
OUTER4 = ("192.0.2.1", "198.51.100.2")
OUTER6 = ("2001:db8:ff::1", "2001:db8:ff::2")


def make_pair(name: str, mode: str, family: int, esn: bool = False, nat_t: bool = False):
    encr, klen, integ, ilen, s_crypt, s_icv, s_auth = ALGORITHMS[name]
    key = os.urandom(klen)
    ikey = os.urandom(ilen)
    src, dst = OUTER4 if family == 4 else OUTER6
    common = dict(
        esn=esn, mode=mode, src=src, dst=dst, allow_null=encr == EncrId.ENCR_NULL,
        udp_encap=(4500, 4500) if nat_t else None,
    )  # fmt: skip
    ours_out = EspSa(SPI, "out", encr, key, integ, ikey, **common)
    ours_in = EspSa(SPI, "in", encr, key, integ, ikey, **common)
    tunnel_header = None
    if mode == "tunnel":
        tunnel_header = IP(src=src, dst=dst) if family == 4 else IPv6(src=src, dst=dst)
    theirs = SecurityAssociation(
        ESP, spi=SPI, crypt_algo=s_crypt, crypt_key=key, crypt_icv_size=s_icv,
        auth_algo=s_auth, auth_key=ikey or None, tunnel_header=tunnel_header,
        nat_t_header=UDP(sport=4500, dport=4500) if nat_t else None, esn_en=esn, esn=0,
    )  # fmt: skip
    return ours_out, ours_in, theirs


def inner_packet(family: int, size: int) -> bytes:
    return ipv4_packet(size) if family == 4 else ipv6_packet(size)


def scapy_ip(data: bytes):
    return IP(data) if data[0] >> 4 == 4 else IPv6(data)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("mode", ["tunnel", "transport"])
def test_both_directions(name: str, family: int, mode: str) -> None:
    ours_out, ours_in, theirs = make_pair(name, mode, family)
    for size in (60, 333, 1400):
        inner = inner_packet(family, size)
        # ours -> scapy
        if mode == "tunnel":
            wire = ours_out.encapsulate(inner)
            assert bytes(theirs.decrypt(scapy_ip(wire))) == inner
        else:
            wire = ours_out.protect_transport(inner)
            assert bytes(theirs.decrypt(scapy_ip(wire))) == inner
        # scapy -> ours
        wire = bytes(theirs.encrypt(scapy_ip(inner)))
        if mode == "tunnel":
            assert ours_in.decapsulate(wire) == inner
        else:
            assert ours_in.unprotect_transport(wire) == inner


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
@pytest.mark.parametrize("high", [0, 1, 0xFFFFFFFE])
def test_esn(name: str, high: int) -> None:
    ours_out, ours_in, theirs = make_pair(name, "tunnel", 4, esn=True)
    inner = inner_packet(4, 200)
    # Our outbound counter just below the high half ``high``: the packet carries only the
    # low 32 bits and the ICV covers the high ones (RFC 4303 sec. 2.2.1).
    ours_out.seq = (high << 32) + 41
    wire = ours_out.encapsulate(inner)
    assert int.from_bytes(wire[24:28], "big") == 42
    assert bytes(theirs.decrypt(IP(wire), esn_en=True, esn=high)) == inner
    # The other way, our receiver infers the high half from its window (App. A2.2).
    ours_in.replay.highest = (high << 32) + 10
    wire = bytes(theirs.encrypt(IP(inner), seq_num=12, esn_en=True, esn=high))
    assert ours_in.decapsulate(wire) == inner
    assert ours_in.replay.highest == (high << 32) + 12


def test_esn_inference_across_the_wrap() -> None:
    """Low half wrapped: the receiver must use high + 1 (App. A2.2 case A)."""
    _, ours_in, theirs = make_pair("aes128gcm16", "tunnel", 4, esn=True)
    inner = inner_packet(4, 100)
    ours_in.replay.highest = (5 << 32) + 0xFFFFFFF0
    wire = bytes(theirs.encrypt(IP(inner), seq_num=3, esn_en=True, esn=6))
    assert ours_in.decapsulate(wire) == inner
    assert ours_in.replay.highest == (6 << 32) + 3
    # A late packet from before the wrap is still inside the window (case B).
    wire = bytes(theirs.encrypt(IP(inner), seq_num=0xFFFFFFF5, esn_en=True, esn=5))
    assert ours_in.decapsulate(wire) == inner


@pytest.mark.parametrize("name", ["aes128gcm16", "chacha20poly1305", "aes128cbc-sha256"])
@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("mode", ["tunnel", "transport"])
def test_nat_t_udp_header(name: str, family: int, mode: str) -> None:
    ours_out, ours_in, theirs = make_pair(name, mode, family, nat_t=True)
    inner = inner_packet(family, 300)
    wire = ours_out.encapsulate(inner) if mode == "tunnel" else ours_out.protect_transport(inner)
    parsed = scapy_ip(wire)
    assert parsed[UDP].sport == 4500 and parsed[UDP].dport == 4500
    assert bytes(theirs.decrypt(parsed)) == inner
    wire = bytes(theirs.encrypt(scapy_ip(inner)))
    got = ours_in.decapsulate(wire) if mode == "tunnel" else ours_in.unprotect_transport(wire)
    assert got == inner


def test_ipv6_transport_with_destination_options() -> None:
    ours_out, ours_in, theirs = make_pair("aes128gcm16", "transport", 6)
    inner = bytes(
        IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrDestOpt() / UDP() / (b"x" * 30)
    )
    assert bytes(theirs.decrypt(IPv6(ours_out.protect_transport(inner)))) == inner
    assert ours_in.unprotect_transport(bytes(theirs.encrypt(IPv6(inner)))) == inner


def test_gcm_short_icv_against_truncated_tag() -> None:
    """GCM-8/GCM-12 (RFC 4106 sec. 6): the ICV is the leading octets of the full GCM tag.
    scapy's AEAD path always emits 16-octet tags, so the oracle here is ``AESGCM``."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    for encr, icv in ((EncrId.ENCR_AES_GCM_8, 8), (EncrId.ENCR_AES_GCM_12, 12)):
        key = os.urandom(20)
        out_sa = EspSa(SPI, "out", encr, key)
        in_sa = EspSa(SPI, "in", encr, key)
        inner = inner_packet(4, 100)
        esp = out_sa.encrypt(inner)
        full = AESGCM(key[:16]).encrypt(key[16:] + esp[8:16], inner + b"\x01\x02\x02\x04", esp[:8])
        assert esp[16:] == full[: len(full) - 16 + icv]
        assert in_sa.decrypt(esp) == inner
