"""aioipsec.netns: namespaces, veth, processes, nftables NAT and loss, captures, cleanup.

Checked with the kernel's own tools: `ip netns list`, ping, nft counters, tshark on the capture.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from aioipsec.netns import (
    Lab,
    Namespace,
    add_masquerade,
    add_random_loss,
    cleanup_leftovers,
    list_namespaces,
    nft_counters,
)

pytestmark = [
    pytest.mark.netns,
    pytest.mark.needs("root"),
]


@pytest.mark.timeout(60)
def test_lab_creates_and_removes_everything(tmp_path):
    with Lab("nl") as lab:
        left, right = lab.namespace("left"), lab.namespace("right")
        assert left.name == f"aioipsec-{os.getpid()}-nlleft"
        lab.veth(left, ["10.77.0.1/24", "fd00:77::1/64"], right, ["10.77.0.2/24", "fd00:77::2/64"])
        assert "1 received" in left.run("ping", "-c1", "-W2", "10.77.0.2").stdout
        # IPv6: the first echo can leave before neighbour discovery on the fresh veth has an
        # answer (seen under load: 1 sent, 0 received, time 0 ms); one reply of three proves
        # the link.
        ping6 = left.run("ping", "-6", "-c3", "-i0.2", "-W2", "fd00:77::2", check=False).stdout
        assert " 0 received" not in ping6 and "received" in ping6, ping6
        # A background process, its log, and the thread-level namespace switch.
        sleeper = lab.start(
            right, ["sh", "-c", "echo started; exec sleep 30"], log=tmp_path / "sleep.log"
        )
        assert sleeper.wait_for_log("started", timeout=5)
        with right.entered():
            out = subprocess.run(["ip", "-br", "addr"], capture_output=True, text=True).stdout
            assert "10.77.0.2/24" in out
        out = subprocess.run(["ip", "-br", "addr"], capture_output=True, text=True).stdout
        assert "10.77.0.2/24" not in out  # back in our own namespace
        names = {left.name, right.name}
    assert sleeper.popen.returncode is not None  # stopped and reaped
    assert not names & set(list_namespaces())


@pytest.mark.timeout(60)
def test_cleanup_of_leftovers_by_prefix():
    # A namespace "left by" a pid that does not exist, and one of a live run (ours).
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = f"aioipsec-{dead.pid}-stale"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    with Lab("live") as lab:  # entering the lab cleans up leftovers of dead runs
        live = lab.namespace("x")
        assert stale not in list_namespaces()
        assert cleanup_leftovers() == []
        assert live.name in list_namespaces()


@pytest.mark.timeout(60)
def test_masquerade_and_random_loss(tmp_path):
    with Lab("nft") as lab:
        inside, router, outside = (lab.namespace(r) for r in ("in", "nat", "out"))
        lab.veth(inside, "192.168.50.1/24", router, "192.168.50.254/24")
        router_out_if, out_if = lab.veth(router, "10.60.0.254/24", outside, "10.60.0.2/24")
        inside.ip("route", "add", "default", "via", "192.168.50.254")
        add_masquerade(router, router_out_if)
        capture = lab.capture(outside, out_if, tmp_path / "out.pcap")
        assert "1 received" in inside.run("ping", "-c1", "-W2", "10.60.0.2").stdout
        capture.stop()
        sources = subprocess.run(
            [
                "tshark",
                "-n",
                "-r",
                str(tmp_path / "out.pcap"),
                "-Y",
                "icmp.type == 8",
                "-T",
                "fields",
                "-e",
                "ip.src",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert sources == ["10.60.0.254"]  # translated by the router

        # 100 % loss of UDP 500/4500 in the forward path; other UDP passes.
        add_random_loss(router, 100, udp_ports=(500, 4500))
        script = (
            "import socket,sys; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
            "[s.sendto(b'x',('10.60.0.2',p)) for p in (500,4500,4500,9999)]"
        )
        inside.run(sys.executable, "-c", script)
        assert nft_counters(router, "aioipsec_loss") == [3]
        with pytest.raises(ValueError):
            add_random_loss(router, 101)


def test_namespace_commands_fail_loudly():
    with pytest.raises(Exception, match="netns"):
        Namespace("aioipsec-does-not-exist").run("true")
