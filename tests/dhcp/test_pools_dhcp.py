"""pools = dhcp end to end, in network namespaces: strongSwan's charon as road warrior
(PSK), our gateway asking Debian's dnsmasq on its LAN for the client's address (broadcast
to the LAN's broadcast address, identity_lease), as strongSwan's dhcp plugin does: charon
gets an address of dnsmasq's range and its DNS server, a reconnect gets the same address,
and when the IKE SA is deleted the gateway RELEASEs it (dnsmasq's lease file)."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from aioipsec.interop.charon import Charon
from aioipsec.interop.ours import AioipsecPeer
from aioipsec.interop.road_warrior import (
    GATEWAY,
    LAN_HOST,
    build,
    charon_vip,
    log_entries,
    psk_client,
    psk_gateway,
)
from aioipsec.netns import Lab

pytestmark = [pytest.mark.interop, pytest.mark.needs("root", "charon", "swanctl", "dnsmasq")]

RANGE = ("10.2.0.100", "10.2.0.150")
DNS = "10.2.0.53"


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(what)
        time.sleep(0.1)


@pytest.mark.timeout(180)
def test_charon_gets_its_address_from_dnsmasq() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="aioipsec-dhcp-", dir="/tmp"))
    passed = False
    try:
        with Lab("dhrw") as lab:
            net = build(lab)
            line = net.lan.sh(f"ip -o -4 addr show to {LAN_HOST}").split()
            leases = workdir / "dnsmasq.leases"
            dnsmasq = lab.start(
                net.lan,
                ["dnsmasq", "--keep-in-foreground", "--no-daemon", "--port=0", "--no-resolv",
                 "--no-hosts", f"--interface={line[1]}", "--bind-interfaces", "--no-ping",
                 f"--dhcp-range={RANGE[0]},{RANGE[1]},255.255.255.0,1h",
                 f"--dhcp-option=option:dns-server,{DNS}", f"--dhcp-leasefile={leases}",
                 "--log-dhcp", f"--pid-file={workdir / 'dnsmasq.pid'}", "--user=root"],
                log=workdir / "dnsmasq.log",
            )  # fmt: skip
            assert dnsmasq.wait_for_log("DHCP, IP range", timeout=20), dnsmasq.log_text()
            dhcp = '[dhcp]\nserver = "10.2.0.255"\nidentity_lease = true\n'
            toml = 'dns_hook = "log"\n' + dhcp
            gateway = AioipsecPeer(lab, net.moon, workdir / "moon", extra_toml=toml)
            gateway.load(psk_gateway().replace("pools = rw_pool", "pools = dhcp"))
            charon = Charon(lab, net.clients["carol"], workdir / "carol")
            charon.start()
            charon.load(psk_client(GATEWAY, "carol@example"))

            charon.initiate("home", "home")
            vip = charon_vip(charon)
            assert IPv4Address(RANGE[0]) <= IPv4Address(vip) <= IPv4Address(RANGE[1]), vip
            _wait_for(
                lambda: bool(log_entries(gateway.log_path, "virtual IP leased")),
                f"no lease logged:\n{gateway.log_tail(40)}",
            )
            (leased,) = log_entries(gateway.log_path, "virtual IP leased")
            assert leased["addresses"] == [vip] and leased["dns"] == [DNS], leased
            assert vip in leases.read_text(), leases.read_text()
            assert "DHCPACK" in dnsmasq.log_text()

            charon.terminate("home")
            _wait_for(
                lambda: vip not in leases.read_text(),
                f"no RELEASE of {vip}:\n{leases.read_text()}\n{gateway.log_tail(40)}",
            )
            assert "DHCPRELEASE" in dnsmasq.log_text()

            charon.initiate("home", "home")  # a reconnect: the same identity, the same lease
            assert charon_vip(charon) == vip
            charon.terminate("home")
            passed = True
    finally:
        if passed:
            shutil.rmtree(workdir, ignore_errors=True)
