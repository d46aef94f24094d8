"""The daemon's side of remote access (issue 14, RFC 7296 sec. 2.19).

Gateway: the address pools (:class:`aioipsec.pools.PoolManager`) are handed to the engine as
its ``ConfigProvider``; this module keeps them across reloads and logs what they did. The
leased addresses need nothing else here: each Child SA's remote selector is the lease, so
the data path routes it into the TUN device like any other tunnel route.

Client: the virtual IPs the gateway assigned go on the TUN device (before the Child SA's
routes, so those routes get the VIP as their source address); DNS servers and domains go to
a hook (:class:`DnsHook`): ``resolvectl`` where systemd-resolved runs, ``resolvconf`` where it
exists, otherwise a log line. Everything is undone when the IKE SA ends and at shutdown.
"""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from aioipsec.dhcp import DhcpClient, DhcpLease, DhcpSettings, DhcpUnavailable
from aioipsec.pools import ExternalLease, PoolManager, PoolSettings, format_pools
from ikev2 import events as ev

RESOLVED_SOCKET = Path("/run/systemd/resolve/io.systemd.Resolve")
DNS_HOOKS = ("auto", "resolvectl", "resolvconf", "log")


class DnsHook:
    """Hands the DNS servers and domains of a CFG_REPLY to the system resolver, per TUN
    device, and takes them back. ``mode``: ``auto`` picks ``resolvectl`` when
    systemd-resolved runs, else ``resolvconf`` when installed, else ``log`` (nothing is
    changed; the servers are logged so the user can set them)."""

    def __init__(self, interface: str, log: Any, mode: str = "auto") -> None:
        if mode not in DNS_HOOKS:
            raise ValueError(f"dns hook {mode!r}: one of {', '.join(DNS_HOOKS)}")
        if mode == "auto":
            if RESOLVED_SOCKET.exists() and shutil.which("resolvectl"):
                mode = "resolvectl"
            elif shutil.which("resolvconf"):
                mode = "resolvconf"
            else:
                mode = "log"
        self.mode = mode
        self.interface = interface
        self.log = log
        self.applied = False

    def _run(self, *argv: str, stdin: str | None = None) -> bool:
        try:
            result = subprocess.run(
                argv, input=stdin, capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            self.log.warning("DNS hook failed", command=argv[0], error=str(error))
            return False
        if result.returncode != 0:
            self.log.warning(
                "DNS hook failed", command=" ".join(argv), error=result.stderr.strip()[:200]
            )
            return False
        return True

    def apply(self, servers: Iterable[str], domains: Iterable[str]) -> None:
        servers, domains = list(servers), list(domains)
        if not servers and not domains:
            return
        if self.mode == "resolvectl":
            ok = self._run("resolvectl", "dns", self.interface, *servers)
            # "~domain": route the domain's queries to these servers (split DNS, RFC 8598).
            if ok and domains:
                ok = self._run("resolvectl", "domain", self.interface, *(f"~{d}" for d in domains))
        elif self.mode == "resolvconf":
            text = "".join(f"nameserver {s}\n" for s in servers)
            text += f"search {' '.join(domains)}\n" if domains else ""
            ok = self._run("resolvconf", "-a", f"{self.interface}.aioipsec", stdin=text)
        else:
            self.log.info(
                "DNS from the gateway (not applied: no resolvectl/resolvconf)",
                servers=servers,
                domains=domains,
            )
            return
        if ok:
            self.applied = True
            self.log.info("DNS applied", hook=self.mode, servers=servers, domains=domains)

    def restore(self) -> None:
        if not self.applied:
            return
        self.applied = False
        if self.mode == "resolvectl":
            self._run("resolvectl", "revert", self.interface)
        elif self.mode == "resolvconf":
            self._run("resolvconf", "-d", f"{self.interface}.aioipsec")
        self.log.info("DNS restored", hook=self.mode)


def dhcp_settings(configuration: Any) -> DhcpSettings | None:
    """The ``[dhcp]`` settings (strongSwan's defaults without the table) when a connection
    names ``pools = dhcp``; None when none does."""
    if not any("dhcp" in c.pools for c in configuration.connections.values()):
        return None
    return configuration.dhcp or DhcpSettings()


class DhcpAddresses:
    """``pools = dhcp``: the engine's ``AddressRequested`` becomes a DHCP exchange
    (aioipsec/dhcp.py); its lease, or why there is none, goes to the pools, then
    ``resume(ike_sa_id)`` (``Dispatcher.address_ready``) lets the engine answer. A lease the
    pools give back (the IKE SA ended) is RELEASEd."""

    def __init__(self, settings: DhcpSettings | None, pools: PoolManager, log: Any) -> None:
        self.settings = settings or DhcpSettings()
        self.client = DhcpClient(self.settings)
        self.pools = pools
        self.log = log
        if settings is not None:
            # Port 67/68 and SO_BINDTODEVICE need privileges the daemon drops after start.
            try:
                self.client.open_socket()
            except OSError as error:
                log.warning(
                    "DHCP socket not opened (pools = dhcp will fail)",
                    error=str(error),
                    server=self.settings.server,
                    interface=self.settings.interface,
                )
        self.resume: Callable[[int], None] = lambda ike_sa_id: None
        self.leases: dict[tuple[str, ipaddress.IPv4Address], DhcpLease] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def request(self, event: ev.AddressRequested, bound: Any) -> None:
        task = asyncio.get_running_loop().create_task(
            self._acquire(event, bound), name=f"dhcp-{event.ike_sa_id}"
        )
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _acquire(self, event: ev.AddressRequested, bound: Any) -> None:
        try:
            lease = await self.client.acquire(event.identity)
        except (DhcpUnavailable, OSError) as error:
            reason = str(error)
            if isinstance(error, OSError):
                reason = f"the DHCP socket failed: {error} (check [dhcp] server and interface)"
            bound.warning("DHCP: no address", identity=event.identity, reason=reason)
            self.pools.offer_dhcp(event.identity, ExternalLease(source=reason))
        else:
            bound.info("DHCP lease", identity=event.identity, address=str(lease.address),
                       server=str(lease.server), dns=[str(a) for a in lease.dns])  # fmt: skip
            self.leases[(event.identity, lease.address)] = lease
            self.pools.offer_dhcp(
                event.identity, ExternalLease((lease.address,), lease.dns, "the DHCP server")
            )
        self.resume(event.ike_sa_id)

    def release_returned(self) -> None:
        for identity, address in self.pools.take_dhcp_releases():
            lease = self.leases.pop((identity, ipaddress.IPv4Address(int(address))), None)
            if lease is not None:
                task = asyncio.get_running_loop().create_task(self._release(lease))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    async def _release(self, lease: DhcpLease) -> None:
        try:
            await self.client.release(lease)
        except OSError as error:
            self.log.warning("DHCP RELEASE failed", address=str(lease.address), error=str(error))
        else:
            self.log.info("DHCP RELEASE", identity=lease.identity, address=str(lease.address))

    def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        self.client.close()


class RemoteAccess:
    """Pools (gateway) and virtual IPs with DNS (client) for one daemon."""

    def __init__(
        self,
        tun: Any,
        routes: Any,
        pools: Iterable[PoolSettings],
        log: Any,
        dns_hook: str = "auto",
        reassign_after: float = 0.0,
        dhcp: DhcpSettings | None = None,
    ) -> None:
        self.tun = tun
        self.routes = routes
        self.log = log
        self.pools = PoolManager(pools, reassign_after=reassign_after)
        self.dns = DnsHook(tun.name, log, dns_hook)
        self.addresses: dict[int, list[str]] = {}  # IKE SA id -> our VIPs on the TUN
        self.dhcp = DhcpAddresses(dhcp, self.pools, log)  # pools = dhcp

    def reload(self, pools: Iterable[PoolSettings]) -> None:
        self.pools.replace(pools)

    def on_event(self, event: ev.Event, bound: Any) -> bool:
        """Handle a remote-access event; False when it is not one."""
        if isinstance(event, ev.AddressRequested):
            self.dhcp.request(event, bound)
        elif isinstance(event, ev.VirtualIpsAssigned) and not event.local:
            self._flush_pool_log(bound)
            bound.info("virtual IP leased", identity=event.identity, addresses=event.addresses,
                       dns=event.dns)  # fmt: skip
        elif isinstance(event, ev.VirtualIpsAssigned):
            for address in event.addresses:
                host = ipaddress.ip_interface(address)  # a host prefix: /32 or /128
                self.tun.add_address(host)
            self.addresses[event.ike_sa_id] = list(event.addresses)
            # Routes installed from now on take the VIP as their source address.
            self.routes.forget_addresses()
            bound.info(
                "virtual IP assigned",
                addresses=event.addresses,
                dns=event.dns,
                domains=event.domains,
                tun=self.tun.name,
            )
            self.dns.apply(event.dns, event.domains)
        elif isinstance(event, ev.VirtualIpsReleased) and not event.local:
            self._flush_pool_log(bound)
            self.dhcp.release_returned()
            bound.info("virtual IP lease offline", identity=event.identity,
                       addresses=event.addresses)  # fmt: skip
        elif isinstance(event, ev.VirtualIpsReleased):
            self._remove(event.ike_sa_id)
            bound.info("virtual IP removed", addresses=event.addresses)
        else:
            return False
        return True

    def _flush_pool_log(self, bound: Any) -> None:
        for line in self.pools.take_log():
            bound.info("pools: " + line)

    def _remove(self, ike_sa_id: int) -> None:
        still_used = {a for other, addrs in self.addresses.items() if other != ike_sa_id
                      for a in addrs}  # fmt: skip
        for address in self.addresses.pop(ike_sa_id, []):
            # A reauthenticated IKE SA got the same VIP: it stays for the new one.
            if address not in still_used:
                self.tun.remove_address(ipaddress.ip_interface(address))
        self.routes.forget_addresses()
        if not self.addresses:
            self.dns.restore()

    def listing(self, leases: bool = True) -> list[dict[str, Any]]:
        return self.pools.listing(leases)

    def close(self) -> None:
        self.dhcp.close()
        for ike_sa_id in list(self.addresses):
            self._remove(ike_sa_id)
        self.dns.restore()


__all__ = ["DnsHook", "RemoteAccess", "dhcp_settings", "format_pools"]
