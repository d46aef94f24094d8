"""Fail closed (issue 13, F1): no cleartext to a protected subnet when the daemon stops.

    host (10.1.0.2) ==veth== left gateway (10.1.0.1) [192.168.60.1] ==veth== [192.168.60.2]
        right gateway (10.2.0.1)

Both gateways have an ordinary default route through the other one, so a packet to
10.2.0.0/24 that misses the tunnel *can* leave in clear on the outer link, and the right
gateway answers it: that is the leak the old daemon had (the tunnel route lives in table 220
through the TUN device and goes with it). While pings run through the tunnel, from the
left gateway itself and forwarded from the host behind it, the outer link is captured with
``not esp and not udp port 500 and not udp port 4500 and not arp`` across SIGKILL, a
restart, SIGTERM, another restart and rekeys of both SA kinds: every capture must be empty.
The end of the test removes the rules with ``aioipsec cleanup`` and sees the same pings
leave in clear, so the capture does see a leak when there is one.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from aioipsec.netns import BackgroundProcess, Lab, Namespace

from .helpers import OurDaemon, Side, ping, requirements_or_skip, toml_config

pytestmark = [pytest.mark.netns]

CLEARTEXT = "not esp and not udp port 500 and not udp port 4500 and not arp"
# With IPv6 on the outer link, its link-scope multicast (MLD reports to ff02::16, sent at
# random times after addresses and forwarding change) is to IPv6 what ARP is to IPv4: never
# routed, so never a protected packet; the test's neighbours are static (no NS/NA).
LINK_MULTICAST6 = " and not dst net ff02::/16"
LEFT = Side("fc", "192.168.60.1", "10.1.0.1", "10.1.0.0/24", "192.168.60.2", "10.2.0.0/24",
            "left.example", "right.example")  # fmt: skip
RIGHT = Side("fc", "192.168.60.2", "10.2.0.1", "10.2.0.0/24", "192.168.60.1", "10.1.0.0/24",
             "right.example", "left.example")  # fmt: skip
HOST = "10.1.0.2"
# IPv6 inside (site6): the same tunnel also protects fd01::/64 === fd02::/64.
LEFT6, HOST6, RIGHT6 = "fd01::1", "fd01::2", "fd02::1"
OUTER6 = ("fd00:60::1", "fd00:60::2")
# Pings: bounded in count and time (every 20 ms, at most PING_COUNT, each waits 1 s).
PING_INTERVAL = "0.02"
PING_COUNT = 1500
T = TypeVar("T")


class Site:
    """The three namespaces, the daemons, and the pingers and captures of one phase."""

    def __init__(self, lab: Lab, workdir: Path, ipv6: bool = False) -> None:
        self.lab, self.workdir, self.ipv6 = lab, workdir, ipv6
        self.left_ns, self.right_ns = lab.namespace("left"), lab.namespace("right")
        self.host_ns = lab.namespace("host")
        self.outer, right_dev = lab.veth(
            self.left_ns, f"{LEFT.outer}/24", self.right_ns, f"{RIGHT.outer}/24"
        )
        host_dev, inside = lab.veth(self.host_ns, f"{HOST}/24", self.left_ns, f"{LEFT.inner}/24")
        self.right_ns.add_address("lo", f"{RIGHT.inner}/32")
        self.left_ns.enable_forwarding()
        # Ordinary default routes: what misses the tunnel goes out in clear, and is answered.
        self.left_ns.ip("route", "add", "default", "via", RIGHT.outer)
        self.right_ns.ip("route", "add", "default", "via", LEFT.outer)
        self.host_ns.ip("route", "add", "default", "via", LEFT.inner)
        ends = ((self.left_ns, self.outer, 0), (self.right_ns, right_dev, 1))
        if not ipv6:
            # No IPv6 on the outer link: its neighbour discovery would be counted as leaks.
            for namespace, device, _ in ends:
                namespace.run("sysctl", "-q", "-w", f"net.ipv6.conf.{device}.disable_ipv6=1")
        else:
            self.right_ns.enable_forwarding()  # routers send no router solicitations
            macs = {}
            for namespace, device, index in ends:
                namespace.ip("address", "add", f"{OUTER6[index]}/64", "dev", device, "nodad")
                macs[index] = json.loads(namespace.ip("-j", "link", "show", device).stdout)[0][
                    "address"
                ]
            # Static neighbours: no neighbour discovery on the captured link.
            for namespace, device, index in ends:
                other = 1 - index
                namespace.ip("-6", "neigh", "replace", OUTER6[other], "lladdr", macs[other],
                             "dev", device, "nud", "permanent")  # fmt: skip
                namespace.ip("-6", "route", "add", "default", "via", OUTER6[other])
            self.right_ns.add_address("lo", f"{RIGHT6}/128")
            self.host_ns.ip("address", "add", f"{HOST6}/64", "dev", host_dev, "nodad")
            self.left_ns.ip("address", "add", f"{LEFT6}/64", "dev", inside, "nodad")
            self.host_ns.ip("-6", "route", "add", "default", "via", LEFT6)
        self.left: OurDaemon | None = None
        self.right: OurDaemon | None = None
        self.phase = 0

    def daemon(self, side: str, **options: Any) -> OurDaemon:
        directory = self.workdir / side
        directory.mkdir(exist_ok=True)
        config = toml_config(LEFT if side == "left" else RIGHT, directory, **options)
        if self.ipv6:  # both families in one Child SA
            ours, theirs = ("fd01::/64", "fd02::/64")[:: 1 if side == "left" else -1]
            text = config.read_text()
            for key, subnet in (("local_ts", ours), ("remote_ts", theirs)):
                text = text.replace(f'{key} = ["', f'{key} = ["{subnet}", "', 1)
            config.write_text(text)
        namespace = self.left_ns if side == "left" else self.right_ns
        daemon = OurDaemon(self.lab, namespace, config, directory)
        daemon.start()
        setattr(self, side, daemon)
        return daemon

    def pingers(self) -> list[BackgroundProcess]:
        """Pings to the protected subnet: from the gateway itself and forwarded."""
        self.phase += 1
        argv = ["ping", "-n", "-i", PING_INTERVAL, "-c", str(PING_COUNT), "-W", "1"]
        pings = [("local", self.left_ns, ["-I", LEFT.inner, RIGHT.inner]),
                 ("forwarded", self.host_ns, [RIGHT.inner])]  # fmt: skip
        if self.ipv6:
            pings += [("local6", self.left_ns, ["-I", LEFT6, RIGHT6]),
                      ("forwarded6", self.host_ns, [RIGHT6])]  # fmt: skip
        return [
            self.lab.start(namespace, [*argv, *target],
                           log=self.workdir / f"ping-{self.phase}-{name}.log")
            for name, namespace, target in pings
        ]  # fmt: skip

    def capture(self, name: str) -> Capture:
        return Capture(self, name)

    def tunnel_up(self, timeout: float = 30.0) -> None:
        """A ping from the host goes through (a trap's first packet starts the SA), and the
        left daemon lists its Child SA."""
        assert self.left is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ping(self.host_ns, HOST, RIGHT.inner, count=1).returncode == 0 and (
                not self.ipv6 or ping(self.host_ns, HOST6, RIGHT6, count=1).returncode == 0
            ):
                self.left.wait_for_child("fc", timeout=timeout)
                return
            time.sleep(0.2)
        raise AssertionError(f"the tunnel is not back:\n{self.left.log_tail()}")


class Capture:
    """tcpdump on the left gateway's outer interface with the cleartext filter."""

    def __init__(self, site: Site, name: str) -> None:
        self.path = site.workdir / f"{name}.pcap"
        bpf = CLEARTEXT + (LINK_MULTICAST6 if site.ipv6 else "")
        self.capture = site.lab.capture(site.left_ns, site.outer, self.path, bpf)

    def packets(self) -> list[str]:
        self.capture.stop()
        result = subprocess.run(
            ["tcpdump", "-n", "-r", str(self.path)], capture_output=True, text=True,
            timeout=60, check=True,
        )  # fmt: skip
        return [line for line in result.stdout.splitlines() if line.strip()]


def stop_pingers(pingers: list[BackgroundProcess]) -> int:
    """Stop the pings; the echo requests they sent (from ping's own summary)."""
    sent = 0
    for pinger in pingers:
        pinger.stop(signal.SIGINT)  # ping prints its summary on SIGINT
        for line in pinger.log_text().splitlines():
            if "packets transmitted" in line:
                sent += int(line.split()[0])
    return sent


def outage(
    site: Site,
    name: str,
    stop: Callable[[], object],
    leaks: dict[str, int],
    sent: dict[str, int],
    while_down: Callable[[], T] | None = None,
) -> T | None:
    """Under the pings: STOP the left daemon, 2 s without it (WHILE_DOWN runs then), a
    restart that takes over until the tunnel is back; the cleartext packets of each part."""
    pingers = site.pingers()
    time.sleep(0.5)
    capture = site.capture(name)
    stop()
    time.sleep(2.0)  # 100 echo requests per pinger with no daemon
    packets = capture.packets()
    leaks[name] = len(packets)
    print("\n".join(packets[:20]))  # what leaked, if anything
    result = while_down() if while_down is not None else None
    capture = site.capture(f"restart-after-{name}")
    site.daemon("left", start_action="start")
    site.tunnel_up()
    time.sleep(1.0)
    leaks[f"restart after {name}"] = len(capture.packets())
    sent[f"{name} and restart"] = stop_pingers(pingers)
    return result


def cli(namespace: Namespace, *args: str) -> subprocess.CompletedProcess[str]:
    return namespace.run(sys.executable, "-m", "aioipsec", *args, check=False, timeout=60)


def fail_closed_table(namespace: Namespace) -> str:
    result = namespace.run("nft", "list", "table", "inet", "aioipsec", check=False)
    return result.stdout if result.returncode == 0 else ""


@pytest.fixture
def site(request, lab, workdir):
    """The lab; ``parametrize("site", ["ipv6"], indirect=True)`` makes it dual-stack."""
    requirements_or_skip("tcpdump", "nft", "ping")
    pytest.importorskip("ikev2.dispatcher")
    site = Site(lab, workdir, ipv6=getattr(request, "param", "") == "ipv6")
    yield site
    for daemon in (site.left, site.right):
        if daemon is not None:
            print(daemon.log_tail(40))


@pytest.mark.timeout(240)
def test_no_cleartext_across_sigkill_sigterm_restart_and_rekey(site: Site) -> None:
    site.daemon("right")
    site.daemon("left", start_action="start")
    site.tunnel_up()
    leaks: dict[str, int] = {}
    sent: dict[str, int] = {}

    # SIGKILL: nothing runs any more, the TUN device and its routes are gone. doctor sees
    # what the dead daemon left, and says how to remove it.
    assert site.left is not None
    doctor = outage(site, "SIGKILL", site.left.kill, leaks, sent,
                    lambda: cli(site.left_ns, "doctor", "--json"))  # fmt: skip
    checks = {c["name"]: c for c in json.loads(doctor.stdout or "[]")}
    fail_closed_check = checks.get("fail-closed", {})
    # SIGTERM: a clean stop (DELETE sent, routes and TUN removed), default settings.
    left = site.left

    def stop_cleanly() -> None:
        assert left.stop() == 0, left.log_tail()

    outage(site, "SIGTERM", stop_cleanly, leaks, sent)

    # Rekeys of the Child SA and of the IKE SA under the pings.
    pingers = site.pingers()
    capture = site.capture("rekey")
    before = site.left.sas()["fc"]
    site.left.call("rekey", child="net")
    site.left.call("rekey", ike="fc")
    deadline = time.monotonic() + 20
    after = before
    while time.monotonic() < deadline:
        after = site.left.sas().get("fc", {})
        children = list((after.get("child-sas") or {}).values())
        if (
            after.get("initiator-spi") != before.get("initiator-spi")
            and len(children) == 1
            and children[0]["spi-in"] != next(iter(before["child-sas"].values()))["spi-in"]
        ):
            break
        time.sleep(0.2)
    time.sleep(1.0)
    leaks["rekey"] = len(capture.packets())
    sent["rekey"] = stop_pingers(pingers)

    print(f"cleartext packets on the outer link: {leaks}; echo requests sent: {sent}")
    assert leaks == dict.fromkeys(leaks, 0), f"cleartext left the gateway: {leaks}"
    assert after.get("initiator-spi") != before.get("initiator-spi"), "no IKE rekey"
    assert all(count > 50 for count in sent.values()), sent
    assert fail_closed_check.get("status") == "WARN", doctor.stdout
    assert "aioipsec cleanup" in fail_closed_check.get("fix", ""), fail_closed_check
    assert "gone (killed or crashed)" in fail_closed_check.get("detail", ""), fail_closed_check

    # A clean stop keeps the rules (fail_closed_after_stop defaults to true); cleanup
    # removes them, and then the same pings do leave in clear: the capture sees a leak.
    assert site.left.stop() == 0
    assert "10.2.0.0/24" in fail_closed_table(site.left_ns)
    listed = cli(site.left_ns, "cleanup", "--list")
    assert listed.returncode == 0 and "fc/net: 10.2.0.0/24" in listed.stdout, listed.stdout
    assert "stopped cleanly" in listed.stdout, listed.stdout
    assert fail_closed_table(site.left_ns), "--list removed something"
    removed = cli(site.left_ns, "cleanup")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert fail_closed_table(site.left_ns) == ""
    assert "lookup 220" not in site.left_ns.run("ip", "rule").stdout
    capture = site.capture("after-cleanup")
    ping(site.host_ns, HOST, RIGHT.inner, count=5)
    leaked = len(capture.packets())
    assert leaked >= 5, f"without the rules the pings should leave in clear, saw {leaked}"
    again = cli(site.left_ns, "cleanup")
    assert again.returncode == 0 and "nothing to clean up" in again.stdout, again.stdout


@pytest.mark.timeout(150)
@pytest.mark.parametrize("site", ["ipv6"], indirect=True)
def test_ipv6_inside_is_closed_too(site: Site) -> None:
    """IPv4 and IPv6 subnets in one Child SA, the outer link dual-stack with IPv6 default
    routes (static neighbours, so the capture holds no neighbour discovery): SIGKILL and
    SIGTERM leak neither family."""
    site.daemon("right")
    site.daemon("left", start_action="start")
    site.tunnel_up()
    assert site.left is not None
    leaks: dict[str, int] = {}
    sent: dict[str, int] = {}
    outage(site, "SIGKILL", site.left.kill, leaks, sent)
    left = site.left

    def stop_cleanly() -> None:
        assert left.stop() == 0, left.log_tail()

    outage(site, "SIGTERM", stop_cleanly, leaks, sent)
    print(f"IPv4+IPv6: cleartext packets on the outer link: {leaks}; sent: {sent}")
    assert leaks == dict.fromkeys(leaks, 0), f"cleartext left the gateway: {leaks}"
    assert all(count > 100 for count in sent.values()), sent
    rules = site.left.call("policies")["fail-closed"]
    assert rules == {"fc/net": ["10.2.0.0/24", "fd02::/64"]}, rules


@pytest.mark.timeout(150)
def test_trap_connection_is_closed_after_sigkill_and_cleanup_waits_for_the_daemon(
    site: Site,
) -> None:
    """start_action = trap (the issue measured 285 packets), and the rules of a running
    daemon are not removed by ``cleanup`` without --force."""
    site.daemon("right")
    site.daemon("left", start_action="trap")
    site.tunnel_up()  # the first packets hit the trap
    pingers = site.pingers()
    time.sleep(0.5)
    capture = site.capture("trap-sigkill")
    assert site.left is not None
    site.left.kill()
    time.sleep(2.0)
    leaked = len(capture.packets())
    sent = stop_pingers(pingers)
    print(f"trap: cleartext packets after SIGKILL: {leaked} ({sent} echo requests sent)")
    assert leaked == 0
    assert sent > 50
    # The restarted daemon owns the rules: cleanup leaves them alone.
    site.daemon("left", start_action="trap")
    refused = cli(site.left_ns, "cleanup")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "is running" in refused.stderr and "--force" in refused.stderr, refused.stderr
    assert "10.2.0.0/24" in fail_closed_table(site.left_ns)
    site.tunnel_up()


@pytest.mark.timeout(150)
def test_terminate_and_unload_open_and_a_new_sa_closes_again(site: Site) -> None:
    """Explicit terminate of a start_action = none connection, and a reload without the
    connection, are what remove the rules; the next Child SA closes them again."""
    site.daemon("right")
    left = site.daemon("left")  # start_action = none
    assert left.call("policies")["fail-closed"] == {"fc/net": ["10.2.0.0/24"]}
    # No SA yet: the subnet is closed all the same (the ping fails, nothing in clear).
    capture = site.capture("loaded-no-sa")
    assert ping(site.host_ns, HOST, RIGHT.inner, count=3).returncode != 0
    assert capture.packets() == []
    # terminate of a loaded start_action = none connection without an SA opens it.
    result = left.call("terminate", ike="fc")
    assert result["fail_closed_removed"] == ["fc/net"], result
    assert "10.2.0.0/24" not in fail_closed_table(site.left_ns)
    # Its next Child SA closes it again; a terminate with the SA up opens it again.
    left.call("initiate", child="net", timeout=30)
    site.tunnel_up()
    assert "10.2.0.0/24" in fail_closed_table(site.left_ns)
    result = left.call("terminate", ike="fc")
    assert result["fail_closed_removed"] == ["fc/net"], result
    assert "10.2.0.0/24" not in fail_closed_table(site.left_ns)
    deadline = time.monotonic() + 10
    while left.sas() and time.monotonic() < deadline:
        time.sleep(0.2)
    # Opened: the echo requests leave in clear (the right gateway, still closed for
    # 10.1.0.0/24, does not answer them).
    capture = site.capture("opened")
    ping(site.host_ns, HOST, RIGHT.inner, count=2)
    assert len(capture.packets()) >= 2
    left.call("initiate", child="net", timeout=30)
    site.tunnel_up()
    assert "10.2.0.0/24" in fail_closed_table(site.left_ns)
    # A reload without the connection unloads it: its rules go.
    config = left.config
    text = config.read_text()
    text = text[: text.index("[connections.fc]")]
    config.write_text(text.replace("[daemon]\n", "[daemon]\nfail_closed_after_stop = false\n"))
    left.call("reload")
    assert "10.2.0.0/24" not in fail_closed_table(site.left_ns)
    assert left.call("policies")["fail-closed"] == {}
    # fail_closed_after_stop = false: a clean stop removes the table.
    assert fail_closed_table(site.left_ns)
    assert left.stop() == 0
    assert fail_closed_table(site.left_ns) == ""
    assert "fail_closed_after_stop = false" in left.log_text()
