"""Lifetimes (soft/hard on bytes, packets, time) reported as events; counters; TFC."""

from __future__ import annotations

import os

import pytest
from scapy.layers.inet import IP
from scapy.layers.ipsec import ESP, SecurityAssociation

from esp.errors import DropReason, EspDrop
from esp.events import Lifetime, SaExpired
from esp.sa import EspSa
from esp.sad import Sad
from ikev2.enums import EncrId, IntegId
from tests.esp.helpers import ipv4_packet, ipv6_packet

GCM = EncrId.ENCR_AES_GCM_16


def installed_pair(lifetime: Lifetime, suite: str = "gcm", now: float = 0.0):
    sad = Sad()
    if suite == "gcm":
        key = os.urandom(20)
        args = (GCM, key)
    else:
        args = (EncrId.ENCR_AES_CBC, os.urandom(16), IntegId.AUTH_HMAC_SHA2_256_128, os.urandom(32))
    out_sa = EspSa(0x1111, "out", *args, lifetime=lifetime, reqid=4, now=now)
    in_sa = EspSa(0x1111, "in", *args, lifetime=lifetime, reqid=4, now=now)
    sad.add(out_sa)
    sad.add(in_sa)
    return sad, out_sa, in_sa


def drain(sad: Sad) -> list:
    events = []
    while (event := sad.next_event()) is not None:
        events.append(event)
    return events


@pytest.mark.parametrize("suite", ["gcm", "cbc"])
def test_packet_limits(suite: str) -> None:
    sad, out_sa, in_sa = installed_pair(Lifetime(soft_packets=3, hard_packets=5), suite)
    packets = []
    for i in range(5):
        packets.append(out_sa.encrypt(ipv4_packet()))
        if i == 2:
            assert drain(sad) == [SaExpired("esp", 0x1111, "out", 4, False, "packets")]
    assert drain(sad) == [SaExpired("esp", 0x1111, "out", 4, True, "packets")]
    with pytest.raises(EspDrop) as err:
        out_sa.encrypt(ipv4_packet())  # the hard limit stops sending on this SA
    assert err.value.reason is DropReason.EXPIRED and out_sa.packets_out == 5
    for packet in packets:
        in_sa.decrypt(packet)
    assert [e.hard for e in drain(sad)] == [False, True]
    with pytest.raises(EspDrop):
        in_sa.decrypt(packets[0])
    assert in_sa.expired_drops == 1


def test_byte_limits() -> None:
    sad, out_sa, in_sa = installed_pair(Lifetime(soft_bytes=1000, hard_bytes=2000))
    inner = ipv4_packet(400)
    for _ in range(2):
        in_sa.decrypt(out_sa.encrypt(inner))
    assert drain(sad) == []
    for _ in range(3):
        in_sa.decrypt(out_sa.encrypt(inner))
    events = drain(sad)
    assert SaExpired("esp", 0x1111, "out", 4, False, "bytes") in events
    assert SaExpired("esp", 0x1111, "in", 4, True, "bytes") in events
    assert out_sa.expired and in_sa.expired


def test_time_limits_and_removal_from_the_sad() -> None:
    sad, out_sa, in_sa = installed_pair(Lifetime(soft_seconds=50, hard_seconds=60), now=100.0)
    assert sad.expire(now=140.0) == [] and drain(sad) == []
    assert sad.expire(now=151.0) == []
    assert {(e.direction, e.hard, e.reason) for e in drain(sad)} == {
        ("out", False, "time"), ("in", False, "time"),
    }  # fmt: skip
    removed = sad.expire(now=160.0)
    assert set(removed) == {out_sa, in_sa} and len(sad) == 0
    assert {(e.direction, e.hard) for e in drain(sad)} == {("out", True), ("in", True)}
    with pytest.raises(EspDrop):
        out_sa.encrypt(ipv4_packet())


def test_lifetime_validation() -> None:
    with pytest.raises(ValueError):
        Lifetime(soft_bytes=10, hard_bytes=5)
    with pytest.raises(ValueError):
        Lifetime(hard_packets=-1)


def test_counters_per_sa_and_reason() -> None:
    _, out_sa, in_sa = installed_pair(Lifetime())
    inner = ipv6_packet(300)
    packets = [out_sa.encrypt(inner) for _ in range(4)]
    for packet in packets:
        in_sa.decrypt(packet)
    with pytest.raises(EspDrop):
        in_sa.decrypt(packets[0])
    forged = bytearray(out_sa.encrypt(inner))
    forged[-3] ^= 1
    with pytest.raises(EspDrop):
        in_sa.decrypt(bytes(forged))
    with pytest.raises(EspDrop):
        in_sa.decrypt(b"\x00\x00\x11\x11\x00")
    assert out_sa.counters()["packets_out"] == 5
    assert out_sa.counters()["bytes_out"] == 5 * len(inner)
    assert in_sa.counters() == {
        "bytes_in": 4 * len(inner), "packets_in": 4, "bytes_out": 0, "packets_out": 0,
        "icv_failures": 1, "replays": 1, "malformed": 1, "policy_drops": 0, "dummy": 0,
        "expired": 0,
    }  # fmt: skip


@pytest.mark.parametrize("make", [ipv4_packet, ipv6_packet])
def test_tfc_padding(make) -> None:
    key = os.urandom(20)
    out_sa = EspSa(0x2222, "out", GCM, key, tfc_pad_to=1000, src="192.0.2.1", dst="192.0.2.2")
    in_sa = EspSa(0x2222, "in", GCM, key)
    sizes = set()
    for size in (60, 200, 999, 1200):
        inner = make(size)
        esp = out_sa.encrypt(inner)
        sizes.add(len(esp))
        assert len(esp) == out_sa.encrypted_size(len(inner))
        assert in_sa.decrypt(esp) == inner  # TFC padding stripped by the inner length
    assert len(sizes) == 2  # everything up to 1000 bytes looks the same on the wire
    # scapy (which knows nothing of TFC) still finds the inner packet with its length.
    theirs = SecurityAssociation(
        ESP, spi=0x2222, crypt_algo="AES-GCM", crypt_key=key, tunnel_header=IP()
    )
    inner = ipv4_packet(100)
    decrypted = theirs.decrypt(IP(out_sa.encapsulate(inner)))
    assert bytes(decrypted)[:100] == inner and len(bytes(decrypted)) == 1000
