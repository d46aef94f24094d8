"""Proxy ARP and NDP for the remote side of established Child SAs on a LAN interface
(strongSwan's farp plugin), and the takeover announcement of the cluster (docs/cluster.md).

``[daemon] proxy_arp_interface = "LAN"``: while a Child SA is up, LAN hosts that ask for an
address of its remote traffic selectors (a road warrior's virtual IP, usually) get the LAN
interface's MAC as the answer, so they reach the client without a route to the pool. As in
farp, the addresses come from the Child SAs' remote selectors, added when a Child SA comes
up and removed when the last Child SA covering them goes (a make-before-break rekey or a
reauthentication never removes them in between).

The kernel does the answering (docs/remote-access.md, "Proxy ARP and NDP"): one proxy
neighbour entry per address (``ip neigh replace proxy ADDR dev LAN``). For IPv4 the kernel
answers an ARP request for such an address when forwarding is on and its route leaves by
another interface (our route into the TUN); for IPv6 it answers a Neighbour Solicitation
when ``proxy_ndp`` is on as well (set here, restored at exit). No raw socket reads every
ARP frame of the LAN in Python, and answers keep coming while the daemon is busy.
farp's spoofer also checks that the asking host is inside a local selector; a proxy
entry cannot, so here any host on the LAN interface gets an answer.

A selector of more than :data:`MAX_ADDRESSES` addresses (a site's subnet, ``0.0.0.0/0``)
is not proxied, with a log line: one entry per address would be too many, and such a
subnet wants a route on the LAN router, or the interface's ``proxy_arp`` sysctl.

When an address is added, a gratuitous ARP (RFC 5227 sec. 3 announcement, IPv4) or an
unsolicited Neighbour Advertisement with the Override flag (RFC 4861 sec. 7.2.6, IPv6) goes
out on the LAN: hosts whose neighbour cache holds the address with another member's MAC
(the client came here by a redirect) switch to ours without waiting for their entry to go
stale.

The entries carry the neighbour protocol :data:`NEIGH_PROTOCOL`, so those a killed daemon
left are found and removed when the next one starts, or by ``aioipsec cleanup`` (and
``close`` removes ours at exit).
"""

from __future__ import annotations

import ipaddress
import json
import socket
import struct
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ikev2.events import TrafficSelectorRange
from tun.device import link_info, run_ip

MAX_ADDRESSES = 256
NEIGH_PROTOCOL = "161"  # our tag on the proxy entries (rt_protos has no name for it)
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ETH_P_ARP = 0x0806
ALL_NODES = "ff02::1"
ICMPV6_NA = 136
NA_OVERRIDE = 0x20000000  # the O flag (RFC 4861 sec. 4.4); R and S stay clear
ICMP6_FILTER = 1  # linux/icmpv6.h: the socket option
BLOCK_ALL = b"\xff" * 32  # ICMP6_FILTER_SETBLOCKALL: this socket only sends


def selector_addresses(
    selectors: Iterable[TrafficSelectorRange],
) -> tuple[list[IpAddress], list[str]]:
    """The addresses of ``selectors`` to proxy, and the selectors too large to proxy."""
    addresses: list[IpAddress] = []
    skipped: list[str] = []
    for selector in selectors:
        start, end = ipaddress.ip_address(selector.start), ipaddress.ip_address(selector.end)
        if int(end) - int(start) + 1 > MAX_ADDRESSES:
            skipped.append(str(selector))
            continue
        addresses.extend(start + n for n in range(int(end) - int(start) + 1))
    return addresses, skipped


def gratuitous_arp(mac: bytes, address: ipaddress.IPv4Address) -> bytes:
    """A broadcast ARP request whose sender and target are ``address`` (RFC 5227 sec. 3:
    an announcement); Linux updates an existing entry for it even inside its locktime."""
    header = b"\xff" * 6 + mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)  # Ethernet, IPv4, request
    return header + arp + mac + address.packed + b"\x00" * 6 + address.packed


def unsolicited_na(mac: bytes, address: ipaddress.IPv6Address) -> bytes:
    """ICMPv6 Neighbour Advertisement for ``address`` with the Override flag and our MAC as
    the target link-layer address option (RFC 4861 sec. 4.4); the kernel fills in the
    checksum of a raw ICMPv6 socket."""
    option = struct.pack("!BB", 2, 1) + mac  # target link-layer address, 8 octets
    return struct.pack("!BBHI", ICMPV6_NA, 0, 0, NA_OVERRIDE) + address.packed + option


class ProxyNeighbours:
    """The proxy entries of one LAN interface, counted per Child SA."""

    def __init__(self, interface: str, log: Any) -> None:
        self.interface = interface
        self.log = log
        self.children: dict[int, list[IpAddress]] = {}
        self.users: Counter[IpAddress] = Counter()
        self._sysctls: dict[str, str] = {}
        self._warned: set[str] = set()
        self.mac = b""
        self.index = 0
        # Opened at start, while the daemon still has CAP_NET_RAW (it keeps only
        # CAP_NET_ADMIN once started); neither receives anything.
        self._arp: socket.socket | None = None
        self._icmp6: socket.socket | None = None

    # ------------------------------------------------------------------ life

    def start(self) -> None:
        """Check the interface, remove entries a killed daemon left, turn on proxy_ndp."""
        info = link_info(self.interface)
        if info is None or len(str(info.get("address", "")).split(":")) != 6:
            raise ValueError(
                f"proxy_arp_interface = {self.interface!r}: no such Ethernet interface here "
                "(name the LAN interface the gateway forwards to, e.g. eth1)"
            )
        self.index = int(info["ifindex"])
        self.mac = bytes.fromhex(str(info["address"]).replace(":", ""))
        self._open_sockets()
        left = self.leftovers()
        for address, device in left:
            self.remove(address, device)
        if left:
            self.log.info("proxy ARP/NDP: removed entries an earlier run left", count=len(left))
        for key in ("net/ipv6/conf/all/proxy_ndp", f"net/ipv6/conf/{self.interface}/proxy_ndp"):
            self._set_sysctl(key, "1")
        forwarding = Path("/proc/sys/net/ipv4/conf", self.interface, "forwarding")
        if forwarding.exists() and forwarding.read_text().strip() != "1":
            self.log.warning(
                "proxy ARP/NDP: IPv4 forwarding is off on the LAN interface, so the kernel "
                "answers no ARP request for the clients: sysctl -w net.ipv4.ip_forward=1",
                interface=self.interface,
            )
        self.log.info("proxy ARP/NDP for the clients' addresses", interface=self.interface)

    def _open_sockets(self) -> None:
        try:
            # Protocol 0: a packet socket that receives no frame at all.
            self._arp = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except OSError as error:
            self.log.warning("proxy ARP: no gratuitous ARP (cannot open a packet socket)",
                             error=str(error))  # fmt: skip
        try:
            icmp6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
            icmp6.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, BLOCK_ALL)
            # RFC 4861 sec. 7.1.2: a receiver drops an NA whose hop limit is not 255.
            icmp6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
            icmp6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self.index)
            self._icmp6 = icmp6
        except OSError as error:
            self.log.warning("proxy NDP: no unsolicited NA (cannot open an ICMPv6 socket)",
                             error=str(error))  # fmt: skip

    def _set_sysctl(self, key: str, value: str) -> None:
        path = Path("/proc/sys", key)
        try:
            old = path.read_text().strip()
            if old != value:
                path.write_text(value)
                self._sysctls[key] = old
        except OSError as error:
            self.log.warning("proxy NDP: cannot set a sysctl", key=key, error=str(error))

    @staticmethod
    def leftovers() -> list[tuple[str, str]]:
        """(address, device) of every proxy entry with our tag in this namespace."""
        result = run_ip("-j", "neigh", "show", "proxy", check=False)
        try:
            entries = json.loads(result.stdout or "[]")
        except ValueError:
            return []
        return [(str(e["dst"]), str(e["dev"])) for e in entries
                if str(e.get("protocol")) == NEIGH_PROTOCOL and "dev" in e]  # fmt: skip

    @staticmethod
    def remove(address: str, device: str) -> None:
        family = "-6" if ":" in address else "-4"
        run_ip(family, "neigh", "del", "proxy", address, "dev", device, check=False)

    def close(self) -> None:
        for address in list(self.users):
            self._delete(address)
        self.users.clear()
        self.children.clear()
        for key, old in self._sysctls.items():
            try:
                Path("/proc/sys", key).write_text(old)
            except OSError:
                pass
        self._sysctls.clear()
        for sock in (self._arp, self._icmp6):
            if sock is not None:
                sock.close()
        self._arp = self._icmp6 = None

    # ------------------------------------------------------------------ Child SAs

    def child_up(
        self, child_sa_id: int, child: str, remote_ts: Iterable[TrafficSelectorRange]
    ) -> None:
        if child_sa_id in self.children:
            return
        addresses, skipped = selector_addresses(remote_ts)
        for selector in skipped:
            if f"{child} {selector}" not in self._warned:
                self._warned.add(f"{child} {selector}")
                self.log.info(
                    "proxy ARP/NDP: a remote selector too large to proxy (route it on the "
                    "LAN router, or set the interface's proxy_arp sysctl)",
                    child=child,
                    selector=selector,
                    limit=MAX_ADDRESSES,
                )
        self.children[child_sa_id] = addresses
        for address in addresses:
            self.users[address] += 1
            if self.users[address] == 1:
                self._add(address)

    def child_down(self, child_sa_id: int) -> None:
        for address in self.children.pop(child_sa_id, []):
            self.users[address] -= 1
            if self.users[address] <= 0:
                del self.users[address]
                self._delete(address)

    def _add(self, address: IpAddress) -> None:
        family = "-6" if address.version == 6 else "-4"
        result = run_ip(family, "neigh", "replace", "proxy", str(address), "dev", self.interface,
                        "protocol", NEIGH_PROTOCOL, check=False)  # fmt: skip
        if result.returncode != 0:
            self.log.warning("proxy ARP/NDP: cannot add the entry", address=str(address),
                             error=result.stderr.strip()[:200])  # fmt: skip
            return
        self.announce(address)

    def _delete(self, address: IpAddress) -> None:
        family = "-6" if address.version == 6 else "-4"
        run_ip(family, "neigh", "del", "proxy", str(address), "dev", self.interface, check=False)

    def announce(self, address: IpAddress) -> None:
        """Gratuitous ARP / unsolicited NA for ``address`` with our MAC (the takeover)."""
        try:
            if isinstance(address, ipaddress.IPv4Address):
                if self._arp is None:
                    return
                self._arp.sendto(gratuitous_arp(self.mac, address), (self.interface, ETH_P_ARP))
            else:
                if self._icmp6 is None:
                    return
                packet = unsolicited_na(self.mac, address)
                self._icmp6.sendto(packet, (ALL_NODES, 0, 0, self.index))
        except OSError as error:
            self.log.warning("proxy ARP/NDP: the announcement was not sent",
                             address=str(address), error=str(error))  # fmt: skip
            return
        self.log.info("announced on the LAN", address=str(address), interface=self.interface)
