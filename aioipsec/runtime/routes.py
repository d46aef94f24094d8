"""Routes into the tunnel: one route per Child SA remote selector, via the TUN device.

Like strongSwan (routing table 220), the tunnel routes live in their own routing table,
consulted by a policy-routing rule for every packet that does **not** carry our socket
mark (:data:`aioipsec.runtime.sockets.BYPASS_MARK`). Our own outer packets (IKE, ESP to the
peer) carry that mark, so they keep using the main table even when a remote selector covers
the peer's outer address (host-to-host tunnels), and the tunnel never swallows itself.

Routes are reference-counted per (network, source): during a make-before-break rekey the
new Child SA installs the same routes before the old one removes its own, so the route never
disappears under traffic.

The commands are iproute2's ``ip`` through :mod:`tun.device` (the tun/ helper's choice,
docs/tun.md): a few commands per SA event, far from any hot path.
"""

from __future__ import annotations

import functools
import ipaddress
import time
from collections import Counter
from collections.abc import Iterable

from ikev2.events import TrafficSelectorRange
from tun.device import TunDevice, local_addresses, run_ip

from .sockets import BYPASS_MARK

TUNNEL_ROUTE_TABLE = 220
RULE_PRIORITY = 220

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def selector_networks(selectors: Iterable[TrafficSelectorRange]) -> list[IpNetwork]:
    """The CIDR networks exactly covering the address ranges of SELECTORS."""
    networks: list[IpNetwork] = []
    for selector in selectors:
        networks.extend(_range_networks(selector.start, selector.end))
    return networks


# Every Child SA of a responder routes the same few selectors: parsing and summarising them
# was ~5.6 % of its time under IKE load (bench.ike_load). The networks are immutable.
@functools.lru_cache(maxsize=4096)
def _range_networks(start: str, end: str) -> tuple[IpNetwork, ...]:
    first, last = ipaddress.ip_address(start), ipaddress.ip_address(end)
    return tuple(ipaddress.summarize_address_range(first, last))


def our_address_in(
    selectors: Iterable[TrafficSelectorRange], ours: set[IpAddress], version: int
) -> IpAddress | None:
    """One of OURS that lies inside a local selector (the preferred source for routes)."""
    for selector in selectors:
        start = ipaddress.ip_address(selector.start)
        end = ipaddress.ip_address(selector.end)
        if start.version != version:
            continue
        for address in sorted((a for a in ours if a.version == version), key=int):
            if int(start) <= int(address) <= int(end):
                return address
    return None


# How long the set of our own addresses is trusted when choosing a route's source address.
LOCAL_ADDRESSES_TTL = 1.0


class RouteManager:
    """Tunnel routes for the installed Child SAs, and the policy-routing rule they need."""

    def __init__(self, tun: TunDevice, table: int = TUNNEL_ROUTE_TABLE) -> None:
        self.tun = tun
        self.table = table
        self._refcount: Counter[tuple[IpNetwork, IpAddress | None]] = Counter()
        self._by_child: dict[int, list[tuple[IpNetwork, IpAddress | None]]] = {}
        self._rules_installed: list[str] = []
        self._addresses: set[IpAddress] = set()
        self._addresses_at = -LOCAL_ADDRESSES_TTL

    def install_rules(self) -> None:
        for family in ("-4", "-6"):
            rule = (
                "pref",
                str(RULE_PRIORITY),
                "not",
                "fwmark",
                hex(BYPASS_MARK),
                "table",
                str(self.table),
            )
            # A rule left by a killed earlier run would be duplicated: delete first.
            while run_ip(family, "rule", "del", *rule, check=False).returncode == 0:
                pass
            result = run_ip(family, "rule", "add", *rule, check=False)
            if result.returncode == 0:
                self._rules_installed.append(family)

    def add_child(
        self,
        child_sa_id: int,
        local_ts: Iterable[TrafficSelectorRange],
        remote_ts: Iterable[TrafficSelectorRange],
    ) -> list[str]:
        """Route the remote selectors of a Child SA into the tunnel; returns them as text."""
        local_ts = list(local_ts)
        ours = self._local_addresses()
        entries: list[tuple[IpNetwork, IpAddress | None]] = []
        for network in selector_networks(remote_ts):
            source = our_address_in(local_ts, ours, network.version)
            key = (network, source)
            if self._refcount[key] == 0:
                self.tun.add_route(network, source=source, table=self.table)
            self._refcount[key] += 1
            entries.append(key)
        self._by_child[child_sa_id] = entries
        return [
            f"{network} dev {self.tun.name}" + (f" src {source}" if source else "")
            for network, source in entries
        ]

    def forget_addresses(self) -> None:
        """Our addresses changed (a virtual IP came or went): ask again for the next route."""
        self._addresses_at = -LOCAL_ADDRESSES_TTL

    def _local_addresses(self) -> set[IpAddress]:
        """Our addresses (an ``ip`` process), asked at most once per LOCAL_ADDRESSES_TTL: a
        burst of Child SAs (a responder under load) needs the answer once, not per SA."""
        now = time.monotonic()
        if now - self._addresses_at >= LOCAL_ADDRESSES_TTL:
            self._addresses = local_addresses()
            self._addresses_at = now
        return self._addresses

    def remove_child(self, child_sa_id: int) -> None:
        for key in self._by_child.pop(child_sa_id, []):
            self._refcount[key] -= 1
            if self._refcount[key] <= 0:
                del self._refcount[key]
                if not any(network == key[0] for network, _ in self._refcount):
                    self.tun.remove_route(key[0], table=self.table)

    def routes(self) -> list[str]:
        return [
            f"{network} dev {self.tun.name} table {self.table}"
            + (f" src {source}" if source else "")
            for network, source in self._refcount
        ]

    def close(self) -> None:
        for child_sa_id in list(self._by_child):
            self.remove_child(child_sa_id)
        for family in self._rules_installed:
            run_ip(
                family,
                "rule",
                "del",
                "pref",
                str(RULE_PRIORITY),
                "not",
                "fwmark",
                hex(BYPASS_MARK),
                "table",
                str(self.table),
                check=False,
            )
        self._rules_installed.clear()
