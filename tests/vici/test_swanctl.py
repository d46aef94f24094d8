"""Debian's swanctl (strongSwan's own client) drives a pair of our daemons over VICI.

    left (10.1.0.1) [192.168.60.1] ==veth== [192.168.60.2] right (10.2.0.1)

Both daemons run as in tests/e2e (``python -m aioipsec.daemon`` in a namespace); swanctl
talks to the left one's VICI socket (``[daemon] vici_socket``, here beside its control
socket). Every swanctl command is run and its output checked, and the tunnel carries
traffic throughout.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time

import pytest

from tests.e2e.helpers import assert_ping
from tests.e2e.test_aioipsec_pair import LEFT, RIGHT, Pair

from .helpers import SWANCTL, swanctl, swanctl_or_skip

pytestmark = [pytest.mark.netns]


@pytest.fixture(autouse=True)
def _swanctl() -> None:
    swanctl_or_skip()


def vici_of(pair: Pair, side: str = "left"):
    daemon = getattr(pair, side)
    return daemon.workdir / "control.vici"


@pytest.mark.timeout(180)
def test_swanctl_initiate_list_terminate(pair):
    pair.start()
    vici = vici_of(pair)
    assert vici.is_socket() and oct(vici.stat().st_mode & 0o777) == "0o600"

    version = swanctl(vici, "--version", "--daemon").stdout
    assert version.startswith("strongSwan ") and " aioipsec (Linux, " in version, version

    out = swanctl(vici, "--initiate", "--child", "net", "--ike", "pair", "--timeout", "30")
    assert "initiate completed successfully" in out.stdout, out.stdout
    assert "[IKE] IKE_SA pair[" in out.stdout and "established" in out.stdout, out.stdout
    assert "[ENC] generating IKE_SA_INIT request 0 [ SA KE No" in out.stdout, out.stdout
    assert_ping(pair.left_ns, LEFT.inner, RIGHT.inner, count=3)

    listing = swanctl(vici, "--list-sas").stdout
    lines = listing.splitlines()
    assert lines[0].startswith("pair: #") and ", ESTABLISHED, IKEv2, " in lines[0], listing
    assert "  local  'left.example' @ 192.168.60.1[500]" in listing, listing
    assert "  remote 'right.example' @ 192.168.60.2[500]" in listing, listing
    assert "  AES_GCM_16-256/PRF_HMAC_SHA2_256/CURVE_25519" in listing, listing
    assert "  net: #" in listing and ", INSTALLED, TUNNEL, ESP:AES_GCM_16-256" in listing
    assert "    local  10.1.0.0/24" in listing and "    remote 10.2.0.0/24" in listing
    packets_out = int(listing.split("    out ")[1].split(" bytes,")[1].split("packets")[0])
    assert packets_out >= 3, listing
    # Filters: another connection's name lists nothing.
    assert swanctl(vici, "--list-sas", "--ike", "nosuch").stdout.strip() == ""

    conns = swanctl(vici, "--list-conns").stdout
    assert conns.startswith("pair: IKEv2"), conns
    assert "  local pre-shared key authentication:" in conns, conns
    assert "    id: left.example" in conns and "  net: TUNNEL" in conns, conns
    assert "    local:  10.1.0.0/24" in conns and "    remote: 10.2.0.0/24" in conns, conns

    stats = swanctl(vici, "--stats").stdout
    assert "IKE_SAs: 1 total, 0 half-open" in stats, stats
    assert "loaded plugins: ikev2 esp nat-t tun control vici" in stats, stats

    counters = swanctl(vici, "--counters").stdout
    assert counters.startswith("global:"), counters
    assert "  ike-init-out-req      : 1" in counters, counters
    assert "  ike-auth-in-resp      : 1" in counters, counters
    assert "pair:" in swanctl(vici, "--counters", "--name", "pair").stdout
    assert "reset-counters completed" in swanctl(vici, "--counters", "--reset").stdout
    assert "  ike-init-out-req      : 0" in swanctl(vici, "--counters").stdout

    algs = swanctl(vici, "--list-algs").stdout
    assert "aead:" in algs and "AES_GCM_16[cryptography]" in algs, algs
    assert "CURVE_25519[cryptography]" in algs, algs

    out = swanctl(vici, "--rekey", "--child", "net")
    assert "rekey completed successfully" in out.stdout, out.stdout
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if re.search(r"\n  child-rekey +: 1\n", swanctl(vici, "--counters").stdout):
            break
        time.sleep(0.2)
    else:
        raise AssertionError(swanctl(vici, "--counters").stdout)
    assert_ping(pair.left_ns, LEFT.inner, RIGHT.inner, count=2)

    assert swanctl(vici, "--reload-settings").returncode == 0
    assert swanctl(vici, "--list-pols").stdout.strip() == ""  # no trap policies
    out = swanctl(vici, "--install", "--child", "net", "--ike", "pair")
    assert "install completed successfully" in out.stdout
    pols = swanctl(vici, "--list-pols").stdout
    assert "pair/net, TUNNEL" in pols and "local:  10.1.0.0/24" in pols, pols
    assert "uninstall completed" in swanctl(vici, "--uninstall", "--child", "net").stdout
    assert swanctl(vici, "--list-pols").stdout.strip() == ""

    out = swanctl(vici, "--terminate", "--ike", "pair", "--timeout", "20")
    assert "terminate completed successfully" in out.stdout, out.stdout
    assert "[IKE] IKE_SA pair[" in out.stdout and "deleted" in out.stdout, out.stdout
    assert swanctl(vici, "--list-sas").stdout.strip() == ""
    assert pair.right.sas() == {}


@pytest.mark.timeout(120)
def test_swanctl_log_streams_events(pair):
    pair.start()
    vici = vici_of(pair)
    log = subprocess.Popen(
        [SWANCTL, "--log", "--uri", f"unix://{vici}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        time.sleep(1.0)  # swanctl registers for "log"
        swanctl(vici, "--initiate", "--child", "net")
        assert_ping(pair.left_ns, LEFT.inner, RIGHT.inner, count=2)
        swanctl(vici, "--terminate", "--ike", "pair", "--timeout", "20")
        time.sleep(0.5)
    finally:
        log.send_signal(signal.SIGINT)
        try:
            text, _ = log.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            log.kill()
            text, _ = log.communicate()
    assert "01[NET] sending packet: from 192.168.60.1[500] to 192.168.60.2[500]" in text, text
    assert "01[IKE] IKE_SA pair[" in text and "established between" in text, text
    assert "01[IKE] CHILD_SA net{" in text, text
    assert "deleted" in text, text
