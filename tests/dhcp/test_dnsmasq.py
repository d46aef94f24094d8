"""aioipsec.dhcp against a real DHCP server (Debian's dnsmasq), in network namespaces: the
gateway's client gets an address of dnsmasq's range for an identity, the same identity gets
the same address again (identity_lease: Client Identifier and MAC from the identity), a
RELEASE frees it (dnsmasq's lease file), by broadcast on the server's link and as relay
agent (a unicast server address; the gateway's address, the giaddr, is on another subnet
than the server's, as behind a router: a DHCP server answers a relay on its own link to the
client directly)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from aioipsec.dhcp import DhcpClient, DhcpLease, DhcpSettings
from aioipsec.netns import Lab

pytestmark = pytest.mark.needs("root", "dnsmasq")

RANGE = ("10.3.0.10", "10.3.0.50")


def _dnsmasq(tmp: Path, interface: str) -> tuple[list[str], Path]:
    leases = tmp / "dnsmasq.leases"
    argv = [
        "dnsmasq", "--keep-in-foreground", "--no-daemon", "--port=0", "--no-resolv",
        "--no-hosts", f"--interface={interface}", "--bind-interfaces",
        f"--dhcp-range={RANGE[0]},{RANGE[1]},255.255.255.0,1h",
        "--dhcp-option=option:dns-server,10.3.0.53", f"--dhcp-leasefile={leases}",
        "--no-ping", "--log-dhcp", f"--pid-file={tmp / 'dnsmasq.pid'}", "--user=root",
    ]  # fmt: skip
    return argv, leases


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(what)
        time.sleep(0.05)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", ["relay", "broadcast"])
def test_leases_from_dnsmasq(tmp_path: Path, mode: str) -> None:
    with Lab("dhcp") as lab:
        moon, server = lab.namespace("moon"), lab.namespace("dhcpd")
        if mode == "relay":
            moon_if, server_if = lab.veth(moon, "10.3.0.1/24", server, "10.6.0.2/24")
            moon.ip("route", "add", "10.6.0.2/32", "dev", moon_if)
            server.ip("route", "add", "10.3.0.0/24", "dev", server_if)
        else:
            moon_if, server_if = lab.veth(moon, "10.3.0.1/24", server, "10.3.0.2/24")
        argv, leases = _dnsmasq(tmp_path, server_if)
        dnsmasq = lab.start(server, argv, log=tmp_path / "dnsmasq.log")
        assert dnsmasq.wait_for_log("DHCP, IP range", timeout=20), dnsmasq.log_text()
        if mode == "relay":
            settings = DhcpSettings(server="10.6.0.2", identity_lease=True)
        else:
            settings = DhcpSettings(identity_lease=True, interface=moon_if)

        async def scenario() -> list[DhcpLease]:
            client = DhcpClient(settings)
            try:
                carol = await client.acquire("carol@example.org")
                again = await client.acquire("carol@example.org")
                dave = await client.acquire("dave@example.org")
                await client.release(carol)
                await client.release(dave)
                return [carol, again, dave]
            finally:
                client.close()

        with moon.entered():
            carol, again, dave = asyncio.run(scenario())
        low, high = (IPv4Address(a) for a in RANGE)
        assert low <= carol.address <= high, carol
        assert again.address == carol.address
        assert dave.address != carol.address
        assert carol.dns == (IPv4Address("10.3.0.53"),)
        server_address = "10.6.0.2" if mode == "relay" else "10.3.0.2"
        assert str(carol.server) == server_address

        # RELEASE: dnsmasq drops the leases from its file.
        def released() -> bool:
            text = leases.read_text() if leases.exists() else ""
            return (
                leases.exists() and str(carol.address) not in text and str(dave.address) not in text
            )

        _wait_for(
            released,
            f"leases not released: {leases.read_text() if leases.exists() else ''}\n"
            + dnsmasq.log_text()[-2000:],
        )
        assert "DHCPRELEASE" in dnsmasq.log_text()
