"""strongSwan's own ``_updown`` (Debian: /usr/lib/ipsec/_updown) run by our daemon (issue 19).

Our daemon initiates to charon with ``updown = /usr/lib/ipsec/_updown iptables`` and
``hostaccess = yes``, as strongSwan's test configurations write it. The script inserts its
iptables rules when the Child SA comes up and removes them when it goes down; the rules
name our TUN device (PLUTO_INTERFACE) and the Child SA's reqid.

What does not work, and this test pins it down so the documentation stays true
(docs/daemon.md, "updown scripts"): the rules also say ``-m policy --pol ipsec``, which
matches only packets the kernel's XFRM transformed. Our ESP runs in userspace behind a TUN
device, so those rules never match (nor do they with strongSwan's own kernel-libipsec):
behind an INPUT policy of DROP the tunnel's replies are dropped, never let through in
clear. ``aioipsec/examples/updown-tun`` writes the same rules keyed on the TUN device
instead, and with it the same DROP firewall passes the tunnel's traffic and nothing else.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from aioipsec.interop.charon import Charon
from aioipsec.interop.ours import AioipsecPeer
from aioipsec.interop.peers import swanctl_conf
from aioipsec.interop.scenario import Scenario, Topology
from aioipsec.interop.topology import build_topology
from aioipsec.interop.traffic import ping_through
from aioipsec.netns import Lab, Namespace

pytestmark = [pytest.mark.needs("root", "tun", "charon", "iptables", "updown")]

STRONGSWAN_UPDOWN = "/usr/lib/ipsec/_updown"
OUR_UPDOWN = Path(__file__).resolve().parents[2] / "aioipsec" / "examples" / "updown-tun"


def _with_updown(conf: str, command: str) -> str:
    """The initiator's swanctl.conf with updown and hostaccess in its child."""
    changed, count = re.subn(
        r"(?m)^(\s*)(mode = tunnel)$", rf"\1\2\n\1updown = {command}\n\1hostaccess = yes", conf
    )
    assert count == 1, conf
    return changed


def _rules(namespace: Namespace) -> list[str]:
    return [
        line
        for line in namespace.sh("iptables -S").splitlines()
        if line.startswith("-A ") and "ipsec0" in line
    ]


def _wait_rules(namespace: Namespace, count: int, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    rules = _rules(namespace)
    while len(rules) != count and time.monotonic() < deadline:
        time.sleep(0.1)
        rules = _rules(namespace)
    return rules


def _drop_policy(namespace: Namespace) -> None:
    """A default-DROP host firewall that lets IKE and ESP-in-UDP in (as admins write it)."""
    namespace.sh(
        "iptables -A INPUT -p udp -m multiport --dports 500,4500 -j ACCEPT && "
        "iptables -A INPUT -i lo -j ACCEPT && iptables -P INPUT DROP"
    )


def _up(lab: Lab, workdir: Path, command: str) -> tuple[Scenario, Topology, AioipsecPeer, Charon]:
    scenario = Scenario(name="updown", initiator="aioipsec", responder="charon")
    topology = build_topology(lab, scenario)
    charon = Charon(lab, topology.responder, workdir / "responder")
    charon.start()
    charon.load(swanctl_conf(scenario, topology, "responder"))
    ours = AioipsecPeer(lab, topology.initiator, workdir / "initiator")
    ours.load(_with_updown(swanctl_conf(scenario, topology, "initiator"), command))
    ours.initiate(scenario.connection_name, scenario.connection_name)
    return scenario, topology, ours, charon


@pytest.mark.timeout(120)
def test_strongswan_updown_inserts_and_removes_its_rules(lab, workdir):
    scenario, topology, ours, _charon = _up(lab, workdir, f"{STRONGSWAN_UPDOWN} iptables")
    initiator = topology.initiator
    rules = _wait_rules(initiator, 4)
    policy_in = "-m policy --dir in --pol ipsec --reqid 1 --proto esp -j ACCEPT"
    policy_out = "-m policy --dir out --pol ipsec --reqid 1 --proto esp -j ACCEPT"
    assert sorted(rules) == sorted(
        [
            f"-A INPUT -s 10.2.0.0/24 -d 10.1.0.0/24 -i ipsec0 {policy_in}",
            f"-A OUTPUT -s 10.1.0.0/24 -d 10.2.0.0/24 -o ipsec0 {policy_out}",
            f"-A FORWARD -s 10.2.0.0/24 -d 10.1.0.0/24 -i ipsec0 {policy_in}",
            f"-A FORWARD -s 10.1.0.0/24 -d 10.2.0.0/24 -o ipsec0 {policy_out}",
        ]
    ), rules
    log = ours.log_path.read_text()
    assert '"verb": "up-client"' in log and "updown script done" in log, ours.log_tail()

    # An open firewall: the tunnel works whatever the rules say.
    assert ping_through(topology, 2).received == 2
    # Behind INPUT DROP the replies come out of the TUN without an XFRM secpath: the
    # policy match never matches, the rule counts nothing, the replies are dropped.
    _drop_policy(initiator)
    ping = ping_through(topology, 2)
    assert ping.received == 0, ping.output
    counters = initiator.sh("iptables -L INPUT -v -x -n")
    (policy_rule,) = [line for line in counters.splitlines() if "policy match" in line]
    assert policy_rule.split()[0] == "0", counters

    ours.call("terminate", ike=scenario.connection_name)
    assert _wait_rules(initiator, 0) == []
    assert '"verb": "down-client"' in ours.log_path.read_text()


@pytest.mark.timeout(120)
def test_tun_updown_lets_the_tunnel_through_a_drop_firewall(lab, workdir):
    scenario, topology, ours, _charon = _up(lab, workdir, str(OUR_UPDOWN))
    initiator = topology.initiator
    rules = _wait_rules(initiator, 4)
    assert all("policy" not in rule for rule in rules) and len(rules) == 4, rules
    _drop_policy(initiator)
    initiator.sh("iptables -P OUTPUT DROP && iptables -I OUTPUT -p udp -j ACCEPT")
    ping = ping_through(topology, 3)
    assert ping.received == 3, (ping.output, initiator.sh("iptables -L -v -n"))

    ours.call("terminate", ike=scenario.connection_name)
    assert _wait_rules(initiator, 0) == []
    # The SA is gone, its route too: a packet to the peer's subnet would now leave in
    # clear through the default route; the DROP policy keeps it in.
    interface = topology.interfaces["initiator"]
    initiator.ip("route", "add", "10.2.0.0/24", "dev", interface)
    dropped = _policy_drops(initiator, "OUTPUT")
    ping = ping_through(topology, 2)
    assert ping.received == 0, ping.output
    assert _policy_drops(initiator, "OUTPUT") == dropped + 2


def _policy_drops(namespace: Namespace, chain: str) -> int:
    """Packets the chain's DROP policy dropped ("Chain OUTPUT (policy DROP 2 packets...")."""
    header = namespace.sh(f"iptables -L {chain} -v -x -n").splitlines()[0]
    match = re.search(r"policy DROP (\d+) packets", header)
    assert match, header
    return int(match.group(1))
