"""aioipsec <-> aioipsec through a real NAT (a middle namespace with nftables masquerade).

    left 192.168.1.2 --- 192.168.1.1 [nat: masquerade random] 192.168.2.1 --- 192.168.2.2 right
    (10.1.0.1)                                                                       (10.2.0.1)

Checked: NAT detection on both sides (left: behind a NAT; right: peer behind a NAT), the
move to port 4500 and ESP-in-UDP, pings through the tunnel, NAT keepalives (0xFF) every
``keep_alive`` from the left, and a NAT mapping change: conntrack forgets the mapping, the
next packets leave the NAT from a new random port, and the right side follows the
authenticated ESP to the new port (RFC 3948 sec. 3.5 / RFC 7296 sec. 2.23) so that
traffic keeps flowing.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from .helpers import (
    OurDaemon,
    Side,
    assert_ping,
    child_of,
    ping,
    requirements_or_skip,
    toml_config,
)

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

LEFT = Side(
    name="natted", outer="192.168.1.2", inner="10.1.0.1", subnet="10.1.0.0/24",
    peer_outer="192.168.2.2", peer_subnet="10.2.0.0/24",
    local_id="left.example", remote_id="right.example",
)  # fmt: skip
RIGHT = Side(
    name="natted", outer="192.168.2.2", inner="10.2.0.1", subnet="10.2.0.0/24",
    peer_outer="192.168.2.1", peer_subnet="10.1.0.0/24",
    local_id="right.example", remote_id="left.example",
)  # fmt: skip


def test_through_masquerading_nat_with_keepalives_and_mapping_change(lab, workdir):
    requirements_or_skip("nft", "tcpdump", "tshark")
    left, nat, right = lab.namespace("left"), lab.namespace("nat"), lab.namespace("right")
    lab.veth(left, "192.168.1.2/24", nat, "192.168.1.1/24")
    _, nat_out = lab.veth(right, "192.168.2.2/24", nat, "192.168.2.1/24")
    left.ip("route", "add", "default", "via", "192.168.1.1")
    left.add_address("lo", "10.1.0.1/32")
    right.add_address("lo", "10.2.0.1/32")
    nat.enable_forwarding()
    nat.nft(
        f"""table ip e2e_nat {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "{nat_out}" masquerade random
    }}
}}
"""
    )
    (workdir / "left").mkdir()
    (workdir / "right").mkdir()
    right_daemon = OurDaemon(
        lab, right, toml_config(RIGHT, workdir / "right", remote_addrs="%any"), workdir / "right"
    )
    right_daemon.start()
    left_daemon = OurDaemon(
        lab, left,
        toml_config(LEFT, workdir / "left", daemon_options={"keep_alive": "2s"}),
        workdir / "left",
    )  # fmt: skip
    left_daemon.start()
    try:
        left_daemon.call("initiate", child="net", timeout=30)
        left_ike = left_daemon.wait_for_child("natted")
        right_ike = right_daemon.wait_for_child("natted")
        assert_ping(left, "10.1.0.1", "10.2.0.1", count=3)

        # NAT detection and the move to 4500, seen from both sides.
        assert left_ike.get("nat-local") == "yes", left_ike
        assert left_ike["remote-port"] == "4500"
        assert right_ike.get("nat-remote") == "yes", right_ike
        assert right_ike["remote-host"] == "192.168.2.1"
        assert child_of(left_ike)["encap"] == "yes"
        assert child_of(right_ike)["encap"] == "yes"

        # Keepalives: single 0xFF octets from the left, every 2 s, seen behind the NAT.
        capture = lab.capture(right, _peer_dev(right), workdir / "ka.pcap",
                              "udp port 4500 and udp[4:2] = 9")  # fmt: skip
        capture.wait_for_packets(2, timeout=10.0)  # one every 2 s
        capture.stop()
        keepalives = subprocess.run(
            ["tshark", "-n", "-r", str(workdir / "ka.pcap"), "-Y", "udp.length == 9",
             "-T", "fields", "-e", "udp.payload", "-e", "ip.src"],
            capture_output=True, text=True, check=True,
        ).stdout.split("\n")  # fmt: skip
        keepalives = [line for line in keepalives if line.strip()]
        assert len(keepalives) >= 2, keepalives
        assert all(line.split("\t") == ["ff", "192.168.2.1"] for line in keepalives), keepalives
        assert left_daemon.call("stats")["esp"]["keepalives_out"] >= 2

        # A NAT mapping change: conntrack forgets UDP mappings after 1 s of silence. The
        # existing entry gets the short timeout at its next refresh (a keepalive within
        # 2 s), expires 1 s later, and every later packet leaves the NAT from a new random
        # port; pings 1.5 s apart each find a fresh mapping.
        for key in ("nf_conntrack_udp_timeout", "nf_conntrack_udp_timeout_stream"):
            nat.run("sysctl", "-q", "-w", f"net.netfilter.{key}=1")
        time.sleep(4.5)
        result = ping(left, "10.1.0.1", "10.2.0.1", count=3, extra=("-i", "1.5"))
        assert result.returncode == 0, result.stdout
        stats = right_daemon.call("stats")["esp"]
        assert stats["nat_mapping_changes"] >= 1, stats
        events = [e.get("event") for e in right_daemon.log_events()]
        assert "peer address changed (NAT mapping)" in events
        # The right side answers to the new mapping: pings in the other direction work too.
        assert_ping(right, "10.2.0.1", "10.1.0.1", count=2)

        # IKE follows the new mapping too (RFC 7296 sec. 2.23): with a long conntrack
        # timeout again, one more mapping change seen in ESP moves the right's IKE SA, and
        # an IKE rekey started by the right reaches the left through it.
        for key in ("nf_conntrack_udp_timeout", "nf_conntrack_udp_timeout_stream"):
            nat.run("sysctl", "-q", "-w", f"net.netfilter.{key}=60")
        time.sleep(3.0)  # the short-lived mapping expires; the next packet makes a new one
        assert_ping(left, "10.1.0.1", "10.2.0.1", count=1)
        moves = [e for e in right_daemon.log_events()
                 if e.get("event") == "peer address changed (NAT mapping)"]  # fmt: skip
        latest_port = moves[-1]["new"][1]
        before = right_daemon.sas()["natted"]
        assert before["remote-port"] == str(latest_port), (before, moves[-1])
        right_daemon.call("rekey", ike="natted")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            after = right_daemon.sas().get("natted", {})
            if (
                after.get("uniqueid") not in (None, before["uniqueid"])
                and after.get("state") == "ESTABLISHED"
            ):
                break
            time.sleep(0.3)
        assert after.get("uniqueid") != before["uniqueid"], right_daemon.log_tail(30)
        assert after["remote-port"] == str(latest_port)
    except BaseException:
        print("--- left ---\n" + left_daemon.log_tail(60))
        print("--- right ---\n" + right_daemon.log_tail(60))
        raise
    assert left_daemon.stop() == 0
    assert right_daemon.stop() == 0


def _peer_dev(namespace) -> str:
    """The veth of NAMESPACE (the one that is not lo)."""
    out = namespace.run("ip", "-o", "link", "show", "type", "veth").stdout
    return out.split(":")[1].strip().split("@")[0]
