"""Faults: our daemon killed with SIGKILL and restarted, and a peer that restarts.

* SIGKILL leaves the tunnel routing rule and the control socket file behind (nothing ran
  to remove them; the kernel removes the non-persistent TUN device and its routes). The
  restarted daemon takes over cleanly (one device, one rule, only its own routes) and the
  tunnel is back: the restarted side initiates with INITIAL_CONTACT, and the surviving
  peer drops its stale SAs.
* A peer that restarts is detected by the surviving side: by INITIAL_CONTACT when the
  peer initiates again, by DPD (``dpd_action = restart``) when it does not
  (``AIOIPSEC_HARDENING_LONG=1``: DPD needs the whole retransmission schedule, ~90 s).

Recovery times are printed (and recorded, see test_floods.record).
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from .lab import GW_INNER, PEER_INNER, Hosts, daemon_healthy
from .test_floods import record

pytestmark = [pytest.mark.netns]
LONG = os.environ.get("AIOIPSEC_HARDENING_LONG") == "1"


def wait_for_ping(hosts: Hosts, timeout: float) -> float:
    """Seconds until one ping through the tunnel is answered (AssertionError at TIMEOUT)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        result = hosts.peer_ns.run(
            "ping", "-n", "-c", "1", "-W", "0.3", "-I", PEER_INNER, GW_INNER, check=False
        )
        if result.returncode == 0:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"no tunnel {timeout} s after the restart")


def rules(namespace) -> list[str]:
    return [
        line for line in namespace.run("ip", "rule").stdout.splitlines() if "lookup 220" in line
    ]


def tun_devices(namespace) -> list[str]:
    return [
        line for line in namespace.run("ip", "-o", "link").stdout.splitlines() if "ipsec0" in line
    ]


def routes_220(namespace) -> list[str]:
    result = namespace.run("ip", "route", "show", "table", "220", check=False)
    return [line for line in result.stdout.splitlines() if line.strip()]


@pytest.mark.timeout(180)
def test_sigkill_and_restart(hosts: Hosts) -> None:
    gw = hosts.gw()
    peer = hosts.peer()
    peer.call("initiate", child="net", timeout=30)
    peer.wait_for_child("legit")
    assert wait_for_ping(hosts, 10) >= 0
    old_ike = peer.sas()["legit"]["initiator-spi"]

    gw.kill()  # SIGKILL: no cleanup at all
    killed_at = time.monotonic()
    stale_rules, stale_devices = rules(hosts.gw_ns), tun_devices(hosts.gw_ns)
    stale_routes = routes_220(hosts.gw_ns)
    print("left behind by SIGKILL:", stale_devices, stale_rules, stale_routes)
    assert stale_devices or stale_rules, "SIGKILL left nothing behind: the test shows nothing"

    restarted = hosts.gw(start_action="start")
    recovered = wait_for_ping(hosts, 60)
    total = time.monotonic() - killed_at
    # Clean state: one device, one rule, and only routes the new run installed.
    assert len(tun_devices(hosts.gw_ns)) == 1
    assert len(rules(hosts.gw_ns)) == 1, rules(hosts.gw_ns)
    routes = routes_220(hosts.gw_ns)
    # (the kernel removed the old routes with the old TUN device; the rule stayed)
    assert len(routes) == 1 and routes[0].startswith("10.1.0.0/24 dev ipsec0"), routes
    # The peer dropped its stale IKE SA for the new one (INITIAL_CONTACT, RFC 7296 2.4).
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        listing = peer.call("sas")
        legit = [ike for entry in listing for name, ike in entry.items() if name == "legit"]
        if len(legit) == 1 and legit[0]["initiator-spi"] != old_ike:
            break
        time.sleep(0.2)
    assert len(legit) == 1 and legit[0]["initiator-spi"] != old_ike, legit
    daemon_healthy(restarted)
    daemon_healthy(peer)
    record(
        "sigkill_restart",
        tunnel_back_after_start_s=round(recovered, 2),
        kill_to_tunnel_s=round(total, 2),
    )
    # And a clean stop removes everything.
    assert restarted.stop() == 0
    assert not tun_devices(hosts.gw_ns) and not rules(hosts.gw_ns)


@pytest.mark.timeout(120)
def test_peer_restart_detected_by_initial_contact(hosts: Hosts) -> None:
    gw = hosts.gw()
    peer = hosts.peer()
    peer.call("initiate", child="net", timeout=30)
    peer.wait_for_child("legit")
    old_spi = gw.sas()["legit"]["initiator-spi"]
    peer.stop(signal.SIGKILL)
    killed_at = time.monotonic()
    hosts.peer(start_action="start")
    recovered = wait_for_ping(hosts, 60)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        legit = [ike for e in gw.call("sas") for n, ike in e.items() if n == "legit"]
        if len(legit) == 1 and legit[0]["initiator-spi"] != old_spi:
            break
        time.sleep(0.2)
    assert len(legit) == 1 and legit[0]["initiator-spi"] != old_spi, legit
    daemon_healthy(gw)
    record("peer_restart_initial_contact", kill_to_tunnel_s=round(time.monotonic() - killed_at, 2),
           tunnel_back_s=round(recovered, 2))  # fmt: skip


@pytest.mark.skipif(
    not LONG, reason="DPD needs ~90 s of retransmissions: AIOIPSEC_HARDENING_LONG=1"
)
@pytest.mark.timeout(400)
def test_peer_restart_detected_by_dpd(hosts: Hosts) -> None:
    """The peer comes back passive (start_action none); gw notices by DPD and, with
    dpd_action = restart, initiates again."""
    gw = hosts.gw(legit_connection={"dpd_delay": "2s"}, legit_child={"dpd_action": "restart"})
    peer = hosts.peer()
    peer.call("initiate", child="net", timeout=30)
    peer.wait_for_child("legit")
    peer.stop(signal.SIGKILL)
    killed_at = time.monotonic()
    hosts.peer()
    recovered = wait_for_ping(hosts, 300)
    daemon_healthy(gw)
    record("peer_restart_dpd", kill_to_tunnel_s=round(time.monotonic() - killed_at, 2),
           tunnel_back_s=round(recovered, 2))  # fmt: skip
