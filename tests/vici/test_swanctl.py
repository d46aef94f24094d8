"""Debian's swanctl (strongSwan's own client) drives a pair of our daemons over VICI.

    left (10.1.0.1) [192.168.60.1] ==veth== [192.168.60.2] right (10.2.0.1)

Both daemons run as in tests/e2e (``python -m aioipsec.daemon`` in a namespace); swanctl
talks to the left one's VICI socket (``[daemon] vici_socket``, here beside its control
socket). Every swanctl command is run and its output checked, and the tunnel carries
traffic throughout.
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.helpers import assert_ping
from tests.e2e.test_aioipsec_pair import LEFT, RIGHT, Pair

from .helpers import SWANCTL, swanctl, swanctl_or_skip

pytestmark = [pytest.mark.netns]


@pytest.fixture(autouse=True)
def _swanctl() -> None:
    swanctl_or_skip()


@contextlib.contextmanager
def vici_session(path):
    """A session of the `vici` package (strongSwan's Python client) on PATH."""
    import socket

    import vici

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(60)
    sock.connect(str(path))
    try:
        yield vici.Session(sock)
    finally:
        sock.close()


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


SWANCTL_CONF = """
connections {
    loaded {
        local_addrs = 192.168.60.1
        remote_addrs = 192.168.60.2
        proposals = aes256gcm16-prfsha256-x25519
        local {
            auth = psk
            id = left.example
        }
        remote {
            auth = psk
            id = right.example
        }
        children {
            lnet {
                local_ts = 10.1.0.0/24
                remote_ts = 10.2.0.0/24
                esp_proposals = aes256gcm16
            }
        }
    }
}
secrets {
    ike-loaded {
        id-1 = left.example
        id-2 = right.example
        secret = "%s"
    }
}
"""


@pytest.mark.timeout(180)
def test_swanctl_load_all(pair):
    """``swanctl --load-all``: connections, shared keys and CA certificates go in over VICI
    (load-conn, load-shared, load-cert), are used, and go again when the file drops them
    (get-conns, unload-conn, get-shared, unload-shared)."""
    from tests.e2e.helpers import PSK
    from tests.e2e.test_aioipsec_pair import make_pki

    pair.start()
    vici = vici_of(pair)
    directory = pair.workdir / "swanctl"
    (directory / "x509ca").mkdir(parents=True)
    pki = make_pki(pair.workdir)
    ca = pki["left.example"]["ca"]
    (directory / "x509ca" / "ca.pem").write_bytes(Path(ca).read_bytes())
    (directory / "private").mkdir()
    key_file = directory / "private" / "left.pem"
    key_file.write_bytes(Path(pki["left.example"]["key"]).read_bytes())
    key_file.chmod(0o600)
    conf = directory / "swanctl.conf"
    conf.write_text(SWANCTL_CONF % PSK)
    env = {"SWANCTL_DIR": str(directory)}

    out = swanctl(vici, "--load-all", "--file", str(conf), env=env).stdout
    assert "loaded certificate from '" in out and "x509ca/ca.pem'" in out, out
    assert "loaded ike secret 'ike-loaded'" in out, out
    assert "loaded ECDSA key from '" in out and "private/left.pem'" in out, out
    assert "loaded connection 'loaded'" in out, out
    assert "successfully loaded 1 connections, 0 unloaded" in out, out

    conns = swanctl(vici, "--list-conns").stdout
    assert "pair: IKEv2" in conns and "loaded: IKEv2" in conns and "  lnet: TUNNEL" in conns
    certs = swanctl(vici, "--list-certs").stdout
    assert 'subject:  "CN=aioipsec e2e CA"' in certs, certs
    with vici_session(vici) as session:  # the vici package: a second client
        assert session.get_conns() == {"conns": [b"loaded"]}
        assert session.get_shared() == {"keys": [b"ike-loaded"]}
        (key_id,) = session.get_keys()["keys"]
        assert len(key_id) == 40  # hex SHA-1 of the public key

    # A reload (swanctl --reload-settings, SIGHUP) keeps what came over VICI.
    swanctl(vici, "--reload-settings")
    assert "loaded: IKEv2" in swanctl(vici, "--list-conns").stdout
    out = swanctl(vici, "--initiate", "--child", "lnet", "--timeout", "30")
    assert "initiate completed successfully" in out.stdout, out.stdout
    assert "loaded: #" in swanctl(vici, "--list-sas").stdout
    assert_ping(pair.left_ns, LEFT.inner, RIGHT.inner, count=2)

    # The file without them: swanctl unloads what it loaded before.
    conf.write_text("connections {\n}\nsecrets {\n}\n")
    key_file.unlink()
    out = swanctl(vici, "--load-all", "--file", str(conf), env=env).stdout
    assert "no connections found, 1 unloaded" in out, out
    assert "loaded: IKEv2" not in swanctl(vici, "--list-conns").stdout
    with vici_session(vici) as session:
        assert session.get_shared() == {"keys": []}
        assert session.get_keys() == {"keys": []}
    # A connection the daemon cannot take is refused with the reason.
    conf.write_text(
        SWANCTL_CONF.replace("psk\n            id = left", "eap-tls\n            id = left") % PSK
    )
    result = swanctl(vici, "--load-conns", "--file", str(conf), env=env, check=False)
    assert result.returncode != 0
    assert "loading connection 'loaded' failed:" in result.stderr, result.stderr
    assert "eap" in result.stderr.lower(), result.stderr


@pytest.mark.timeout(120)
def test_unsupported_commands_say_why(pair):
    pair.start()
    vici = vici_of(pair)
    # redirect maps onto the daemon's (RFC 5685); with no IKE SA up it says so.
    result = swanctl(vici, "--redirect", "--ike", "pair", "--gateway", "192.0.2.1", check=False)
    assert "redirect failed: redirect: no established IKE SA matches ike=pair" in result.stderr
    # swanctl --flush-certs prints no reply unless asked for the raw message.
    result = swanctl(vici, "--flush-certs", "--raw", check=False)
    assert "success=no" in result.stdout and "no certificate cache" in result.stdout
    result = swanctl(vici, "--rekey", "--ike", "pair", "--reauth", check=False)
    assert "reauthentication on request is not supported" in result.stderr, result.stderr
    assert swanctl(vici, "--list-pools").stdout.strip() == ""
    from vici.exception import CommandException

    with vici_session(vici) as session:  # commands swanctl only sends from files
        for command, message, reason in (
            ("load-token", {"handle": "01"}, "from its configuration only"),
            ("load-authority", {"ca": {"cacert": "x"}}, "no certification authority"),
        ):
            with pytest.raises(CommandException, match=reason):
                session.request(command, message)
    assert swanctl(vici, "--list-authorities").stdout.strip() == ""
    result = swanctl(vici, "--initiate", "--child", "nosuch", check=False)
    assert "initiate failed: no connection has a child named 'nosuch'" in result.stderr
    result = swanctl(vici, "--terminate", "--ike-id", "99", check=False)
    assert "terminate failed: no SA matches ike_id=99\n" in result.stderr, result.stderr


POOLS_CONF = """
pools {
    rw4 {
        addrs = 10.3.0.0/28
        dns = 10.3.0.1, 10.3.0.2
    }
    rw6 {
        addrs = fd00:3::1-fd00:3::10
    }
}
"""


@pytest.mark.timeout(120)
def test_swanctl_pools(pair):
    """swanctl --load-pools / --list-pools against our daemon: get-pools, load-pool and
    unload-pool map onto the daemon's pool set (the one the road warriors lease from)."""
    pair.start()
    vici = vici_of(pair)
    directory = pair.workdir / "swanctl-pools"
    directory.mkdir()
    conf = directory / "swanctl.conf"
    conf.write_text(POOLS_CONF)
    env = {"SWANCTL_DIR": str(directory)}

    out = swanctl(vici, "--load-pools", "--file", str(conf), env=env).stdout
    assert "loaded pool 'rw4'" in out and "loaded pool 'rw6'" in out, out
    assert "successfully loaded 2 pools, 0 unloaded" in out, out
    listing = swanctl(vici, "--list-pools", "--leases").stdout
    lines = listing.splitlines()
    assert re.match(r"rw4 +10\.3\.0\.0 +0 / 0 / 14$", lines[0]), listing
    assert re.match(r"rw6 +fd00:3::1 +0 / 0 / 16$", lines[1]), listing
    # The daemon's own listing (the JSON socket) shows the same set.
    assert [p["name"] for p in pair.left.call("pools", leases=False)] == ["rw4", "rw6"]

    # A pool dropped from the file is unloaded; a changed one replaced (no online lease).
    conf.write_text(POOLS_CONF.replace("10.3.0.0/28", "10.4.0.0/24").split("    rw6")[0] + "}\n")
    out = swanctl(vici, "--load-pools", "--file", str(conf), env=env).stdout
    assert "successfully loaded 1 pools, 1 unloaded" in out, out
    assert "rw6" not in swanctl(vici, "--list-pools").stdout
    listing = swanctl(vici, "--list-pools", "--name", "rw4").stdout
    assert re.match(r"rw4 +10\.4\.0\.0 +0 / 0 / 254$", listing.strip()), listing

    from vici.exception import CommandException

    with vici_session(vici) as session:
        with pytest.raises(CommandException, match="overlaps pool 'rw4'"):
            session.request("load-pool", {"other": {"addrs": "10.4.0.128/25"}})
        with pytest.raises(CommandException, match="has no addrs"):
            session.request("load-pool", {"empty": {"dns": ["10.4.0.1"]}})
        with pytest.raises(CommandException, match="pool 'nosuch' not found"):
            session.request("unload-pool", {"name": "nosuch"})
        session.request("unload-pool", {"name": "rw4"})
    assert swanctl(vici, "--list-pools").stdout.strip() == ""


@pytest.mark.timeout(120)
def test_swanctl_pool_leases(pair):
    """A road warrior's lease as swanctl --list-pools --leases shows it; a pool with an
    online lease is not unloaded (as charon)."""
    pair.daemon("right", pair.config("right", connection_options={"vips": ["0.0.0.0"]}))
    left = pair.config("left", connection_options={"pools": ["rw4"]})
    left.write_text(left.read_text() + '\n[pools.rw4]\naddrs = "10.3.0.0/28"\n')
    pair.daemon("left", left)
    vici = vici_of(pair)
    out = swanctl(vici_of(pair, "right"), "--initiate", "--child", "net", "--timeout", "30")
    assert "initiate completed successfully" in out.stdout, out.stdout

    listing = swanctl(vici, "--list-pools", "--leases").stdout
    lines = listing.splitlines()
    assert re.match(r"rw4 +10\.3\.0\.0 +1 / 0 / 14$", lines[0]), listing
    assert re.match(r"  10\.3\.0\.1 +online +'right\.example'$", lines[1]), listing
    empty = pair.workdir / "empty.conf"
    empty.write_text("pools {\n}\n")
    result = swanctl(vici, "--load-pools", "--file", str(empty), check=False)
    assert "unloading pool 'rw4' failed: pool rw4 has 1 online leases, unable to unload" in (
        result.stderr
    ), result.stderr

    swanctl(vici_of(pair, "right"), "--terminate", "--ike", "pair", "--timeout", "30")
    listing = swanctl(vici, "--list-pools", "--leases").stdout
    assert re.match(r"rw4 +10\.3\.0\.0 +0 / 1 / 14\n  10\.3\.0\.1 +offline ", listing), listing


@pytest.mark.timeout(120)
def test_swanctl_certificates(pair):
    """A certificate tunnel: swanctl --list-conns names the certificates, --list-certs
    decodes them (swanctl parses the DER we send) and sees our private key."""
    from tests.e2e.test_aioipsec_pair import make_pki

    pki = make_pki(pair.workdir)
    pair.start(
        left={"auth": "pubkey", "certs": pki["left.example"]},
        right={"auth": "pubkey", "certs": pki["right.example"]},
    )
    vici = vici_of(pair)
    assert "initiate completed" in swanctl(vici, "--initiate", "--child", "net").stdout
    assert "  remote 'right.example' @ 192.168.60.2[500]" in swanctl(vici, "--list-sas").stdout
    conns = swanctl(vici, "--list-conns").stdout
    assert "  local public key authentication:" in conns, conns
    assert "    certs: CN=left.example" in conns, conns
    assert "    cacerts: CN=aioipsec e2e CA" in conns, conns
    certs = swanctl(vici, "--list-certs").stdout
    assert 'subject:  "CN=left.example"' in certs and "has private key" in certs, certs
    assert "List of X.509 CA Certificates" in certs, certs
    assert certs.index('CN=aioipsec e2e CA"\n  issuer') > certs.index("CA Certificates")
    only_ca = swanctl(vici, "--list-certs", "--type", "x509", "--flag", "ca").stdout
    assert "CN=left.example" not in only_ca and "CN=aioipsec e2e CA" in only_ca, only_ca


@pytest.mark.timeout(120)
def test_swanctl_redirect(pair):
    """swanctl --redirect on the gateway's VICI socket: RFC 5685 REDIRECT to the client,
    which follows it (follow_redirects, the default)."""
    pair.start()
    pair.left.call("initiate", child="net", timeout=30)
    pair.left.wait_for_child("pair")
    gateway = vici_of(pair, "right")
    out = swanctl(gateway, "--redirect", "--ike", "pair", "--gateway", "192.168.60.7")
    assert "redirect completed successfully" in out.stdout, out.stdout + out.stderr
    # The client's engine reports the REDIRECT it followed (RFC 5685 sec. 5).
    deadline = time.monotonic() + 20
    redirected: list[dict] = []
    while time.monotonic() < deadline and not redirected:
        redirected = [e for e in pair.left.log_events() if e.get("event") == "IkeSaRedirected"]
        time.sleep(0.2)
    assert redirected, pair.left.log_tail()
    assert redirected[0]["gateway"] == "192.168.60.7" and redirected[0]["connection"] == "pair"
