"""SAD and SPD: lookups, rekey order, trap/acquire with held packets, listings."""

from __future__ import annotations

import json
import os

from esp.events import Acquire
from esp.sa import EspSa
from esp.sad import Sad, UnknownSpi
from esp.selectors import Selector
from esp.spd import BYPASS, Action, Policy, PolicyDirection, Spd, Template
from ikev2.enums import EncrId
from tests.esp.helpers import ipv4_packet, ipv6_packet, tcp_packet

GCM = EncrId.ENCR_AES_GCM_16


def sa_pair(spi: int, reqid: int = 1, **kw):
    key = os.urandom(20)
    common = dict(reqid=reqid, src="192.0.2.1", dst="192.0.2.2", **kw)
    return EspSa(spi, "out", GCM, key, **common), EspSa(spi, "in", GCM, key, **common)


def test_sad_lookup_and_rekey_order() -> None:
    sad = Sad()
    old_out, old_in = sa_pair(0x1001)
    sad.add(old_out)
    sad.add(old_in)
    assert sad.lookup_inbound(0x1001) is old_in
    assert sad.lookup_inbound(0x1001, "ah") is None
    assert sad.lookup_outbound(1) is old_out
    assert sad.lookup_inbound(0x9999, now=10.0) is None
    assert sad.lookup_inbound(0x9998, now=10.5) is None  # rate-limited: no second event
    assert sad.unknown_spi == 3
    assert sad.next_event() == UnknownSpi("esp", 0x9999)
    assert sad.next_event() is None

    new_out, new_in = sa_pair(0x2002)
    sad.add(new_in)
    sad.add(new_out)  # new outbound takes over at once; the old inbound still accepts
    assert sad.lookup_outbound(1) is new_out
    packet = old_out.encrypt(ipv4_packet())
    assert old_in.decrypt(packet)
    sad.delete(old_out)
    sad.delete(old_in)
    assert sad.lookup_outbound(1) is new_out
    assert sad.lookup_inbound(0x1001) is None and sad.lookup_inbound(0x2002) is new_in
    sad.update(new_out, sa_pair(0x3003)[0])
    assert sad.lookup_outbound(1).spi == 0x3003
    assert len(sad) == 2


def test_duplicate_inbound_spi_refused() -> None:
    sad = Sad()
    sad.add(sa_pair(0x1001)[1])
    try:
        sad.add(sa_pair(0x1001)[1])
    except ValueError:
        pass
    else:
        raise AssertionError("duplicate SPI accepted")


def test_spd_protect_bypass_discard_and_order() -> None:
    sad = Sad()
    spd = Spd(sad)
    out_sa, _ = sa_pair(0x1001, reqid=7)
    sad.add(out_sa)
    spd.add(Policy(Selector.make("10.1.0.0/16", "10.2.0.0/16"), Action.PROTECT, reqid=7))
    spd.add(
        Policy(Selector.make("10.1.0.0/16", "10.2.0.0/16", 6, dst_ports=22), Action.DISCARD,
               priority=-1)
    )  # fmt: skip
    spd.add(Policy(Selector.make("0.0.0.0/0", "0.0.0.0/0"), Action.BYPASS, priority=100))
    assert spd.outbound(ipv4_packet(src="10.1.0.5", dst="10.2.3.4"), 0.0) is out_sa
    assert spd.outbound(tcp_packet("10.1.0.5", "10.2.3.4", 1234, 22), 0.0) is None
    assert spd.policy_drops == 1
    assert spd.outbound(tcp_packet("10.1.0.5", "10.2.3.4", 1234, 80), 0.0) is out_sa
    assert spd.outbound(ipv4_packet(src="172.16.0.1", dst="8.8.8.8"), 0.0) is BYPASS
    assert spd.outbound(ipv6_packet(), 0.0) is None and spd.no_policy == 1


def test_trap_holds_packets_never_clear_and_acquires_once() -> None:
    sad = Sad()
    spd = Spd(sad, max_held=3, hold_seconds=2.0, acquire_retry=30.0)
    spd.add(
        Policy(
            Selector.make("10.1.0.0/16", "10.2.0.0/16"), Action.PROTECT, reqid=5,
            template=Template("esp", "tunnel", "192.0.2.1", "192.0.2.2"),
        )
    )  # fmt: skip
    packets = [ipv4_packet(60 + i, src="10.1.0.1", dst="10.2.0.1") for i in range(5)]
    for i, packet in enumerate(packets):
        assert spd.outbound(packet, now=1.0 + i * 0.1) is None
    acquire = sad.next_event()
    assert isinstance(acquire, Acquire) and acquire.reqid == 5
    assert (acquire.src, acquire.dst, acquire.protocol) == ("10.1.0.1", "10.2.0.1", 1)
    assert sad.next_event() is None  # one acquire for the burst
    assert spd.held_count(5) == 3 and spd.held_dropped == 2  # bounded, newest kept

    out_sa, in_sa = sa_pair(0x5005, reqid=5)
    sad.add(out_sa)
    released = spd.release_held(5, now=1.6)
    assert released == packets[2:]
    for packet in released:
        assert in_sa.decrypt(out_sa.encrypt(packet)) == packet
    assert spd.outbound(packets[0], now=2.0) is out_sa

    # Held packets older than hold_seconds are dropped, not sent.
    sad.delete(out_sa)
    spd.outbound(packets[0], now=10.0)
    assert spd.release_held(5, now=20.0) == []


def test_inbound_policy_checks() -> None:
    sad = Sad()
    spd = Spd(sad)
    selector_in = Selector.make("10.2.0.0/16", "10.1.0.0/16")
    spd.add(Policy(selector_in, Action.PROTECT, PolicyDirection.IN, reqid=3))
    out_sa, in_sa = sa_pair(0x3003, reqid=3, selectors=[selector_in])
    inside = ipv4_packet(src="10.2.0.9", dst="10.1.0.9")
    outside = ipv4_packet(src="10.9.0.9", dst="10.1.0.9")
    # Arriving in clear although a protect policy covers it: dropped.
    assert not spd.check_inbound_clear(inside)
    assert spd.check_inbound_clear(ipv6_packet())
    # Decrypted through an SA whose selectors it does not match: dropped (counted).
    assert in_sa.decrypt(out_sa.encrypt(inside)) == inside
    try:
        in_sa.decrypt(out_sa.encrypt(outside))
    except Exception as err:  # EspDrop
        assert getattr(err, "reason", None).value == "policy_drops"
    else:
        raise AssertionError("packet outside the selectors accepted")
    assert in_sa.policy_drops == 1
    assert spd.check_decrypted(inside, in_sa)
    assert not spd.check_decrypted(outside, in_sa)


def test_listings_text_and_json_never_show_keys() -> None:
    sad = Sad()
    spd = Spd(sad)
    key = bytes(range(20))
    selector = Selector.make("10.2.0.0/24", "10.1.0.0/24")
    sa = EspSa(0xC0FFEE, "in", GCM, key, reqid=9, src="192.0.2.1", dst="192.0.2.2", esn=True,
               udp_encap=(4500, 4500), selectors=[selector])  # fmt: skip
    sad.add(sa)
    spd.add(
        Policy(Selector.make("10.1.0.0/24", "10.2.0.0/24", 6, dst_ports=(80, 90)),
               reqid=9, template=Template(src="192.0.2.2", dst="192.0.2.1"))
    )  # fmt: skip
    text = sad.text()
    assert "proto esp spi 0x00c0ffee reqid 9 mode tunnel" in text
    assert "aead rfc4106(gcm(aes))" in text and "flag esn" in text
    assert "encap type espinudp sport 4500 dport 4500" in text
    assert key.hex() not in text and key[:16].hex() not in text
    states = json.loads(sad.json())
    assert states[0]["spi"] == "0x00c0ffee" and states[0]["encr"]["key_bits"] == 128
    assert key.hex() not in sad.json()
    policy_text = spd.text()
    assert "src 10.1.0.0/24 dst 10.2.0.0/24 proto tcp dport 80-90" in policy_text
    assert "tmpl src 192.0.2.2 dst 192.0.2.1" in policy_text
    assert json.loads(spd.json())[0]["reqid"] == 9
