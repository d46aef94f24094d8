"""Proxy ARP/NDP (aioipsec/runtime/farp.py): which addresses of the remote selectors are
proxied, and the takeover frames, decoded by scapy as a LAN host's stack would read them.
The kernel side (a LAN host pinging a VIP through the proxy entries, the GARP moving its
neighbour entry) runs in the cluster end-to-end test (tests/cluster/test_e2e.py)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr
from scapy.layers.l2 import ARP, Ether

from aioipsec.runtime.farp import MAX_ADDRESSES, gratuitous_arp, selector_addresses, unsolicited_na
from ikev2.events import TrafficSelectorRange

MAC = bytes.fromhex("02aabbccddee")


def ts(start: str, end: str) -> TrafficSelectorRange:
    return TrafficSelectorRange(start, end)


def test_host_selectors_and_small_ranges_are_proxied_large_ones_are_not() -> None:
    addresses, skipped = selector_addresses(
        [ts("10.79.0.33", "10.79.0.33"), ts("fd00::1", "fd00::2"), ts("10.0.0.0", "10.0.255.255")]
    )
    assert addresses == [IPv4Address("10.79.0.33"), IPv6Address("fd00::1"), IPv6Address("fd00::2")]
    assert len(skipped) == 1 and "10.0.0.0" in skipped[0]
    last = IPv4Address("10.1.0.0") + MAX_ADDRESSES - 1
    assert len(selector_addresses([ts("10.1.0.0", str(last))])[0]) == MAX_ADDRESSES


def test_gratuitous_arp_announces_the_address_with_our_mac() -> None:
    frame = Ether(gratuitous_arp(MAC, IPv4Address("10.79.0.33")))
    assert frame.dst == "ff:ff:ff:ff:ff:ff" and frame.src == "02:aa:bb:cc:dd:ee"
    arp = frame[ARP]
    assert (arp.op, arp.psrc, arp.pdst, arp.hwsrc) == (1, "10.79.0.33", "10.79.0.33", frame.src)


def test_unsolicited_na_overrides_and_carries_our_mac() -> None:
    na = ICMPv6ND_NA(unsolicited_na(MAC, IPv6Address("fd00::21")))
    assert (na.R, na.S, na.O, na.tgt) == (0, 0, 1, "fd00::21")
    assert na[ICMPv6NDOptDstLLAddr].lladdr == "02:aa:bb:cc:dd:ee"
