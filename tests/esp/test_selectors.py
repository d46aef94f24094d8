"""Selector parsing, packet field extraction and the compiled matcher used after decryption."""

from __future__ import annotations

import itertools

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop

from esp.selectors import Selector, compile_selectors, packet_fields

PACKETS = [
    bytes(IP(src="10.1.0.5", dst="10.2.0.9") / TCP(sport=1234, dport=80)),
    bytes(IP(src="10.1.0.5", dst="10.2.0.9") / UDP(sport=53, dport=5353)),
    bytes(IP(src="10.1.9.5", dst="10.2.0.9") / ICMP(type=8, code=0)),
    bytes(IP(src="192.0.2.7", dst="10.2.255.255") / TCP(dport=22)),
    bytes(IPv6(src="2001:db8:1::5", dst="2001:db8:2::9") / TCP(sport=9, dport=443)),
    bytes(IPv6(src="2001:db8:1::5", dst="2001:db8:2::9") / IPv6ExtHdrHopByHop() / UDP(dport=53)),
    bytes(IPv6(src="2001:db8:1::5", dst="2001:db8:3::1") / ICMPv6EchoRequest()),
    bytes(IPv6(src="2001:db8:1::5", dst="2001:db8:2::1") / IPv6ExtHdrFragment(offset=5)
          / (b"x" * 16)),
]  # fmt: skip
SELECTORS = [
    Selector.make("10.1.0.0/16", "10.2.0.0/16"),
    Selector.make("10.1.0.0/24", "10.2.0.0-10.2.0.255", protocol=6),
    Selector.make("10.1.0.0/16", "10.2.0.0/16", protocol=6, dst_ports=80),
    Selector.make("any", "10.2.0.0/16", protocol=17, src_ports=(50, 60)),
    Selector.make("any", "any", protocol=1, src_ports=(8 << 8, (8 << 8) | 255)),  # echo request
    Selector.make("2001:db8:1::/48", "2001:db8:2::/48"),
    Selector.make("2001:db8:1::/48", "2001:db8:2::/48", protocol=17),
    Selector.make("any6", "2001:db8:2::/48", protocol=6, dst_ports=(443, 443)),
]


def test_parsing_and_text() -> None:
    sel = Selector.make("10.0.0.1-10.0.0.9", "192.0.2.0/24", 6, dst_ports=(80, 90))
    assert sel.text() == "src 10.0.0.1-10.0.0.9 dst 192.0.2.0/24 proto tcp dport 80-90"
    assert sel.reversed().text() == "src 192.0.2.0/24 dst 10.0.0.1-10.0.0.9 proto tcp sport 80-90"
    for bad in (("10.0.0.9-10.0.0.1", "any"), ("10.0.0.0/8", "2001:db8::/32")):
        with pytest.raises(ValueError):
            Selector.make(*bad)
    with pytest.raises(ValueError):
        Selector.make("any", "any", dst_ports=(90, 80))


def test_packet_fields() -> None:
    fields = packet_fields(PACKETS[0])
    assert (fields.protocol, fields.src_port, fields.dst_port) == (6, 1234, 80)
    assert packet_fields(PACKETS[2]).src_port == 8 << 8  # ICMP type/code as the port
    assert packet_fields(PACKETS[5]).protocol == 17  # hop-by-hop walked
    assert packet_fields(PACKETS[7]).src_port == -1  # non-first fragment: no ports
    assert packet_fields(b"\x45" + bytes(5)) is None


@pytest.mark.parametrize("count", [1, 2, 3])
def test_compiled_matcher_agrees_with_selector_matches(count: int) -> None:
    for chosen in itertools.combinations(SELECTORS, count):
        match = compile_selectors(chosen)
        for packet in PACKETS:
            fields = packet_fields(packet)
            expected = any(s.matches(fields) for s in chosen)
            assert match(packet, len(packet)) == expected, ([s.text() for s in chosen], packet)
    assert compile_selectors(()) is None


def test_spd_lookup_agrees_with_first_match() -> None:
    from esp.sad import Sad
    from esp.spd import Action, Policy, Spd

    for chosen in itertools.permutations(SELECTORS, 3):
        spd = Spd(Sad())
        policies = [Policy(sel, Action.DISCARD) for sel in chosen]
        for policy in policies:
            spd.add(policy)
        for packet in PACKETS:
            fields = packet_fields(packet)
            expected = next((p for p in policies if p.selector.matches(fields)), None)
            assert spd.lookup(packet) is expected
