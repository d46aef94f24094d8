"""The runtime's ESP data path on its own: fixed keys, real TUN devices, real sockets.

Two namespaces joined by a veth; in each, ``tests.e2e.static_tunnel`` installs one Child SA
pair with known keys through :class:`aioipsec.runtime.datapath.DataPath` (the daemon's data
path) and the kernel's ping provides the traffic. Checked: replies come back through the
tunnel, and the capture on the veth holds only ESP (raw or UDP 4500), no ICMP in clear.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from .helpers import REPO, assert_ping, requirements_or_skip

pytestmark = [pytest.mark.netns, pytest.mark.timeout(90)]


def start_side(lab, namespace, side, local, remote, local_ts, remote_ts, encap, workdir):
    argv = [sys.executable, "-u", "-m", "tests.e2e.static_tunnel", side, "--local", local,
            "--remote", remote, "--local-ts", local_ts, "--remote-ts", remote_ts]  # fmt: skip
    if encap:
        argv.append("--encap")
    process = lab.start(namespace, argv, log=workdir / f"{side}.log", cwd=REPO)
    assert process.wait_for_log("static tunnel up", timeout=20), process.log_text()
    return process


@pytest.mark.parametrize("encap", [False, True], ids=["raw-esp", "udp-encap"])
def test_static_tunnel_carries_ping_as_esp_only(lab, workdir, encap):
    requirements_or_skip("tcpdump", "tshark")
    left, right = lab.namespace("left"), lab.namespace("right")
    left_dev, _ = lab.veth(left, "192.168.7.1/24", right, "192.168.7.2/24")
    left.add_address("lo", "10.1.0.1/32")
    right.add_address("lo", "10.2.0.1/32")
    start_side(lab, left, "left", "192.168.7.1", "192.168.7.2", "10.1.0.0/24", "10.2.0.0/24",
               encap, workdir)  # fmt: skip
    start_side(lab, right, "right", "192.168.7.2", "192.168.7.1", "10.2.0.0/24", "10.1.0.0/24",
               encap, workdir)  # fmt: skip
    capture = lab.capture(left, left_dev, workdir / "wire.pcap", "ip")
    assert_ping(left, "10.1.0.1", "10.2.0.1", count=4)
    capture.wait_for_packets(8)
    capture.stop()
    fields = subprocess.run(
        ["tshark", "-r", str(workdir / "wire.pcap"), "-T", "fields", "-e", "frame.protocols",
         "-e", "udp.dstport"],
        capture_output=True, text=True, check=True,
    ).stdout.split("\n")  # fmt: skip
    frames = [line for line in fields if line.strip()]
    assert len(frames) >= 8, frames
    for frame in frames:
        protocols, _, port = frame.partition("\t")
        assert protocols.endswith(":esp"), f"not ESP on the wire: {frame}"
        assert "icmp" not in protocols
        if encap:
            assert ":udp:" in protocols and port == "4500", frame
        else:
            assert ":udp:" not in protocols, frame
