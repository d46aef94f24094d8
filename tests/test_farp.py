"""Proxy ARP/NDP (aioipsec/runtime/farp.py): which addresses of the remote selectors are
proxied, the takeover frames as scapy decodes them, and the kernel side in namespaces
(IPv4 and IPv6): a LAN host reaches an address behind the gateway through the proxy
entries, its neighbour entry follows the announcement, and nothing is answered or left
once the Child SA is gone. The daemon end to end (road warriors, a drain moving a VIP to
another gateway) runs in tests/cluster/test_e2e.py."""

from __future__ import annotations

import ipaddress
import json
import sys
import time
from ipaddress import IPv4Address, IPv6Address

import pytest
import structlog
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr
from scapy.layers.l2 import ARP, Ether

from aioipsec.netns import Lab
from aioipsec.runtime.farp import (
    MAX_ADDRESSES,
    ProxyNeighbours,
    gratuitous_arp,
    selector_addresses,
    unsolicited_na,
)
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


@pytest.mark.needs("root")
def test_a_lan_host_reaches_a_vip_through_the_gateway_until_the_child_sa_goes() -> None:
    """The kernel side, IPv4 and IPv6: a LAN host with only its LAN subnet pings an address
        behind the gateway once the proxy entries are in, its neighbour entry follows the
        announcement, ``aioipsec cleanup`` removes what a killed daemon would leave, and once
    the Child SA is down the pings go unanswered."""
    with Lab("fa") as lab:
        gateway, host, client = lab.namespace("g"), lab.namespace("h"), lab.namespace("c")
        lab.veth(gateway, None, host, None, left_name="lan", right_name="eth0")
        lab.veth(gateway, None, client, None, left_name="out", right_name="eth0")
        for namespace, device, addresses in (
            (gateway, "lan", ("10.79.0.1/24", "fd79::1/64")),
            (host, "eth0", ("10.79.0.100/24", "fd79::100/64")),
            (gateway, "out", ("10.99.0.1/24", "fd99::1/64")),
            (client, "eth0", ("10.99.0.2/24", "fd99::2/64")),
            (client, "lo", ("10.79.0.33/32", "fd79::33/128")),
        ):
            for address in addresses:  # nodad: usable at once (no duplicate detection)
                namespace.ip("address", "add", address, "dev", device, "nodad")
        gateway.enable_forwarding()
        client.ip("route", "add", "10.79.0.0/24", "via", "10.99.0.1")
        client.ip("-6", "route", "add", "fd79::/64", "via", "fd99::1")
        # The Child SA's route (into the TUN device in the daemon): to the "client" here.
        gateway.ip("route", "add", "10.79.0.33/32", "via", "10.99.0.2")
        gateway.ip("-6", "route", "add", "fd79::33/128", "via", "fd99::2")
        vips = ("10.79.0.33", "fd79::33")

        def answers(address: str) -> bool:
            result = host.run("ping", "-c", "2", "-i", "0.3", "-W", "2", address, check=False)
            return result.returncode == 0

        def none_answers() -> bool:
            """One ping to each VIP at once, waiting 1 s: True when neither answers."""
            script = " & ".join(f"ping -c 1 -W 1 {vip} >/dev/null && echo {vip}" for vip in vips)
            return host.sh(script + "; wait", check=False).strip() == ""

        def neighbour(address: str) -> str:
            return host.run("ip", "neigh", "show", "to", address, "dev", "eth0").stdout

        assert none_answers()  # on-link for the host, and nobody answers for them yet
        farp = ProxyNeighbours("lan", structlog.get_logger())
        with gateway.entered():
            farp.start()
            farp.child_up(1, "net", [ts(vip, vip) for vip in vips])
        try:
            assert all(answers(vip) for vip in vips)
            mac = ":".join(f"{octet:02x}" for octet in farp.mac)
            for vip in vips:  # another gateway had it: the announcement moves the entry
                host.ip("neigh", "replace", vip, "lladdr", "02:00:00:00:00:01", "dev", "eth0",
                        "nud", "stale")  # fmt: skip
                with gateway.entered():
                    farp.announce(ipaddress.ip_address(vip))
                deadline = time.monotonic() + 5
                while mac not in neighbour(vip) and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert mac in neighbour(vip), neighbour(vip)
            # A killed daemon's entries: `aioipsec cleanup` lists and removes them.
            listed = gateway.run(sys.executable, "-m", "aioipsec", "cleanup", "--list", "--json")
            assert json.loads(listed.stdout)["proxy_entries"] == [f"{v} dev lan" for v in vips]
            gateway.run(sys.executable, "-m", "aioipsec", "cleanup")
            with gateway.entered():
                assert ProxyNeighbours.leftovers() == []
                farp.child_down(1)
            for vip in vips:
                host.ip("neigh", "flush", "to", vip, "dev", "eth0")
            assert none_answers()
        finally:
            with gateway.entered():
                farp.close()
                assert ProxyNeighbours.leftovers() == []
