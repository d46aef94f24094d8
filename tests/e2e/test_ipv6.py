"""IPv6 outside and inside: aioipsec <-> aioipsec over an IPv6-only veth, IPv6 subnets.

    left fd01::1 (fd01::/64) [fd00::1] ==veth== [fd00::2] right fd02::1 (fd02::/64)

Raw ESP over IPv6 (protocol 50 on an AF_INET6 raw socket) and, with ``encap``, ESP in
UDP/IPv6; ping6 through the tunnel and a capture that holds only IKE and ESP.
"""

from __future__ import annotations

import subprocess

import pytest

from .helpers import OurDaemon, Side, assert_ping, child_of, requirements_or_skip, toml_config

pytestmark = [pytest.mark.netns, pytest.mark.timeout(90)]

LEFT = Side(
    name="six", outer="fd00::1", inner="fd01::1", subnet="fd01::/64", peer_outer="fd00::2",
    peer_subnet="fd02::/64", local_id="left.example", remote_id="right.example",
)  # fmt: skip
RIGHT = Side(
    name="six", outer="fd00::2", inner="fd02::1", subnet="fd02::/64", peer_outer="fd00::1",
    peer_subnet="fd01::/64", local_id="right.example", remote_id="left.example",
)  # fmt: skip


@pytest.mark.parametrize("encap", [False, True], ids=["raw-esp6", "udp-encap6"])
def test_ipv6_tunnel(lab, workdir, encap):
    requirements_or_skip("tcpdump", "tshark")
    left, right = lab.namespace("left"), lab.namespace("right")
    left_dev, _ = lab.veth(left, "fd00::1/64", right, "fd00::2/64")
    left.ip("-6", "address", "add", "fd01::1/128", "dev", "lo", "nodad")
    right.ip("-6", "address", "add", "fd02::1/128", "dev", "lo", "nodad")
    daemons = []
    for side, namespace, options in ((RIGHT, right, {}), (LEFT, left, {"encap": encap})):
        directory = workdir / side.outer.replace(":", "_")
        directory.mkdir()
        daemon = OurDaemon(lab, namespace, toml_config(side, directory, **options), directory)
        daemon.start()
        daemons.append(daemon)
    right_daemon, left_daemon = daemons
    capture = lab.capture(left, left_dev, workdir / "wire.pcap", "udp or ip6 proto 50")
    try:
        left_daemon.call("initiate", child="net", timeout=30)
        ike = left_daemon.wait_for_child("six")
        assert_ping(left, "fd01::1", "fd02::1", count=3)
        # IKE_SA_INIT and IKE_AUTH (4) and 6 ESP: in the file before tcpdump is stopped (on a
        # loaded machine it writes the last echo reply late; once only 5 ESP were there).
        capture.wait_for_packets(10, timeout=10)
    except BaseException:
        print(left_daemon.log_tail(40), right_daemon.log_tail(40))
        raise
    finally:
        capture.stop()
    assert ike["remote-host"] == "fd00::2"
    child = child_of(left_daemon.sas()["six"])
    assert child["local-ts"] == ["fd01::/64"] and child["remote-ts"] == ["fd02::/64"]
    assert child["encap"] == ("yes" if encap else "no")
    frames = subprocess.run(
        ["tshark", "-n", "-r", str(workdir / "wire.pcap"), "-T", "fields", "-e",
         "frame.protocols"], capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert sum(f.endswith(":esp") for f in frames) >= 6, frames
    for frame in frames:
        assert frame.endswith((":isakmp", ":esp")), frame
        assert frame.startswith("eth:ethertype:ipv6"), frame
    assert left_daemon.stop() == 0 and right_daemon.stop() == 0
