"""swanctl prints for aioipsec what it prints for charon.

moon (10.1.0.0/24) === 192.168.50.0/24 === sun (charon 5.9.8, responder, 10.2.0.0/24).
The same tunnel is brought up twice from moon with one configuration: first by a charon in
moon, then by our daemon in moon; each time swanctl runs against moon's VICI socket and
its output is kept. With SPIs, times, addresses, unique ids and traffic counters masked
(tests/vici/helpers.mask), the two outputs must be the same line for line.
"""

from __future__ import annotations

import os
import time

import pytest

from aioipsec.interop.charon import CHARON_BINARY, DEFAULT_CHARON_PLUGINS, Charon
from tests.e2e.helpers import OurDaemon, assert_ping, requirements_or_skip, toml_config
from tests.e2e.test_strongswan_thin_path import MOON, charon_conf

from .helpers import mask, swanctl, swanctl_or_skip

pytestmark = [
    pytest.mark.netns,
    pytest.mark.interop,
    pytest.mark.skipif(
        not os.path.exists(CHARON_BINARY), reason="strongSwan's charon not installed"
    ),
]

# What is compared: swanctl's human output for each listing command.
COMMANDS = (("--list-sas",), ("--list-conns",), ("--list-pols",), ("--counters",))


def moon_conf() -> str:
    """moon's side of the tunnel as swanctl.conf: sun's (charon_conf) mirrored, IKEv2 only
    and without MOBIKE, as our daemon's TOML (toml_config(MOON)) is."""
    text = charon_conf()
    for ours, theirs in (
        (MOON.outer, MOON.peer_outer),
        (MOON.subnet, MOON.peer_subnet),
        (MOON.local_id, MOON.remote_id),
    ):
        text = text.replace(ours, "\0").replace(theirs, ours).replace("\0", theirs)
    # mobike = no: aioipsec has no MOBIKE; two charons would negotiate it and, behind
    # kernel-libipsec's faked NAT, sometimes run an extra INFORMATIONAL exchange.
    return text.replace("local_addrs =", "version = 2\nmobike = no\nlocal_addrs =", 1)


def outputs(socket, commands=COMMANDS) -> dict[str, str]:
    swanctl(socket, "--counters", "--reset")
    result = swanctl(socket, "--initiate", "--child", "net", "--timeout", "30")
    assert "initiate completed successfully" in result.stdout, result.stdout + result.stderr
    # A trap policy for list-pols (charon installs one beside an established SA too).
    assert "install completed successfully" in swanctl(socket, "--install", "--child", "net").stdout
    texts = {}
    for command in commands:
        texts[" ".join(command)] = mask(swanctl(socket, *command).stdout)
    return texts


def both(lab, workdir, sun_conf: str, moon_text: str, our_config, commands=COMMANDS):
    """swanctl's outputs for moon = charon, then for moon = our daemon (same tunnel)."""
    requirements_or_skip()
    swanctl_or_skip()
    moon, sun = lab.namespace("moon"), lab.namespace("sun")
    lab.veth(moon, f"{MOON.outer}/24", sun, f"{MOON.peer_outer}/24")
    moon.add_address("lo", f"{MOON.inner}/32")
    sun.add_address("lo", "10.2.0.1/32")
    responder = Charon(lab, sun, workdir / "sun")
    responder.start()
    responder.load(sun_conf)

    # 1. charon in moon (with the counters plugin, for swanctl --counters).
    theirs_daemon = Charon(
        lab, moon, workdir / "moon", plugins=DEFAULT_CHARON_PLUGINS + " counters"
    )
    theirs_daemon.start()
    theirs_daemon.load(moon_text)
    try:
        theirs = outputs(theirs_daemon.vici_socket, commands)
        assert_ping(moon, MOON.inner, "10.2.0.1", count=2)
        theirs_daemon.terminate("thin")
    finally:
        theirs_daemon.stop()
    deadline = time.monotonic() + 10
    while responder.list_sas() and time.monotonic() < deadline:
        time.sleep(0.1)  # the responder saw the DELETE

    # 2. our daemon in moon, the same tunnel.
    ours_daemon = OurDaemon(lab, moon, our_config, workdir)
    ours_daemon.start()
    try:
        ours = outputs(workdir / "control.vici", commands)
        assert_ping(moon, MOON.inner, "10.2.0.1", count=2)
    finally:
        ours_daemon.stop()
    return theirs, ours


def assert_same(theirs: dict[str, str], ours: dict[str, str]) -> None:
    for command in theirs:
        assert ours[command] == theirs[command], (
            f"swanctl {command} differs\n--- charon ---\n{theirs[command]}"
            f"--- aioipsec ---\n{ours[command]}"
        )


@pytest.mark.timeout(240)
def test_swanctl_output_same_as_for_charon(lab, workdir):
    theirs, ours = both(lab, workdir, charon_conf(), moon_conf(), toml_config(MOON, workdir))
    # Not trivially equal: the listings hold the tunnel.
    assert "thin: #N, ESTABLISHED, IKEv2, SPI_i SPI_r" in ours["--list-sas"], ours
    assert "  net: #N, reqid N, INSTALLED, TUNNEL-in-UDP, ESP:AES_GCM_16-256" in ours["--list-sas"]
    assert "established Ns ago, rekeying in Ns" in ours["--list-sas"], ours
    assert "  ike-auth-out-req      : 1" in ours["--counters"], ours
    assert "thin/net, TUNNEL" in ours["--list-pols"], ours
    assert_same(theirs, ours)


def _pubkey(conf: str, local: str, remote: str, cert: str) -> str:
    """A PSK swanctl.conf of this module turned into certificates: LOCAL's certificate,
    REMOTE checked against the CA (named, as our TOML names it)."""
    conf = conf.replace(
        f"auth = psk\n            id = {local}",
        f"auth = pubkey\n            id = {local}\n            certs = {cert}",
    ).replace(
        f"auth = psk\n            id = {remote}",
        f"auth = pubkey\n            id = {remote}\n            cacerts = ca.pem",
    )
    return conf[: conf.index("secrets {")]


@pytest.mark.timeout(240)
def test_swanctl_output_same_as_for_charon_with_certificates(lab, workdir):
    """The same with certificates made by strongSwan's pki: --list-conns names them and
    --list-certs decodes them alike."""
    from aioipsec.interop.pki import Pki

    pki = Pki(workdir / "pki")
    sun_cert = pki.install("sun.example", workdir / "sun")
    moon_cert = pki.install("moon.example", workdir / "moon")
    moon_credentials = pki.credentials("moon.example")
    sun_text = _pubkey(charon_conf(), "sun.example", "moon.example", sun_cert)
    moon_text = _pubkey(moon_conf(), "moon.example", "sun.example", moon_cert)
    ours_config = toml_config(
        MOON, workdir, auth="pubkey",
        certs={"cert": str(moon_credentials.cert), "ca": str(moon_credentials.ca_cert),
               "key": str(moon_credentials.key)},
    )  # fmt: skip
    commands = (("--list-sas",), ("--list-conns",), ("--list-certs",))
    theirs, ours = both(lab, workdir, sun_text, moon_text, ours_config, commands)
    assert "certs: C=CH, O=aioipsec interop, CN=moon.example" in ours["--list-conns"], ours
    assert 'subject:  "C=CH, O=aioipsec interop, CN=moon.example"' in ours["--list-certs"]
    # The one known difference: charon also lists the peer's certificate from its cache
    # (received in IKE_AUTH); aioipsec keeps no certificate cache (docs/vici.md).
    peer = '  subject:  "C=CH, O=aioipsec interop, CN=sun.example"'
    blocks = theirs["--list-certs"].split("\n\n")
    assert any(block.startswith(peer) for block in blocks), theirs["--list-certs"]
    theirs["--list-certs"] = "\n\n".join(b for b in blocks if not b.startswith(peer))
    assert_same(theirs, ours)
