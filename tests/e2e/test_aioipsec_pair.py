"""aioipsec <-> aioipsec in two namespaces: real daemons, real kernel traffic.

    left (10.1.0.1, 10.1.0.0/24) [192.168.60.1] ==veth== [192.168.60.2] right (10.2.0.1, ...)

Each test starts both daemons (``python -m aioipsec.daemon``) from TOML files, drives them
through the control socket and checks with the kernel's ping, the daemons' listings and
logs, and captures read with tshark. Covered here: PSK over raw ESP and with forced UDP
encapsulation, certificates, ``--save-keys`` decrypting a capture in tshark, rekeying of
both SA kinds under a running ping, restart of a killed peer, PMTU, trap.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from aioipsec.netns import Lab, Namespace

from .helpers import (
    OurDaemon,
    Side,
    assert_ping,
    child_of,
    ping,
    requirements_or_skip,
    toml_config,
)

pytestmark = [pytest.mark.netns]

LEFT = Side(
    name="pair",
    outer="192.168.60.1",
    inner="10.1.0.1",
    subnet="10.1.0.0/24",
    peer_outer="192.168.60.2",
    peer_subnet="10.2.0.0/24",
    local_id="left.example",
    remote_id="right.example",
)
RIGHT = Side(
    name="pair",
    outer="192.168.60.2",
    inner="10.2.0.1",
    subnet="10.2.0.0/24",
    peer_outer="192.168.60.1",
    peer_subnet="10.1.0.0/24",
    local_id="right.example",
    remote_id="left.example",
)


@dataclass
class Pair:
    lab: Lab
    workdir: Path
    left_ns: Namespace
    right_ns: Namespace
    left_dev: str
    right_dev: str
    left: OurDaemon | None = None
    right: OurDaemon | None = None

    def daemon(self, side: str, config: Path, extra_args: list[str] | None = None) -> OurDaemon:
        namespace = self.left_ns if side == "left" else self.right_ns
        directory = self.workdir / side
        directory.mkdir(exist_ok=True)
        daemon = OurDaemon(self.lab, namespace, config, directory, extra_args or [])
        daemon.start()
        setattr(self, side, daemon)
        return daemon

    def config(self, side: str, **options: object) -> Path:
        directory = self.workdir / side
        directory.mkdir(exist_ok=True)
        return toml_config(LEFT if side == "left" else RIGHT, directory, **options)

    def start(self, left: dict | None = None, right: dict | None = None) -> None:
        self.daemon("right", self.config("right", **(right or {})))
        self.daemon("left", self.config("left", **(left or {})))

    def logs(self) -> str:
        parts = []
        for side in ("left", "right"):
            daemon = getattr(self, side)
            if daemon is not None:
                parts.append(f"--- {side} ---\n{daemon.log_tail(60)}")
        return "\n".join(parts)


@pytest.fixture
def pair(lab, workdir):
    requirements_or_skip("tcpdump", "tshark")
    left_ns, right_ns = lab.namespace("left"), lab.namespace("right")
    left_dev, right_dev = lab.veth(left_ns, f"{LEFT.outer}/24", right_ns, f"{RIGHT.outer}/24")
    left_ns.add_address("lo", f"{LEFT.inner}/32")
    right_ns.add_address("lo", f"{RIGHT.inner}/32")
    pair = Pair(lab, workdir, left_ns, right_ns, left_dev, right_dev)
    yield pair
    # On failure the logs help more than anything else.
    print(pair.logs())


def tshark(pcap: Path, *args: str, env: dict | None = None) -> str:
    return subprocess.run(
        ["tshark", "-n", "-r", str(pcap), *args], capture_output=True, text=True,
        check=True, timeout=60, env={**os.environ, **(env or {})},
    ).stdout  # fmt: skip


def wire_frames(pcap: Path) -> list[str]:
    out = tshark(pcap, "-Y", "ip", "-T", "fields", "-e", "frame.protocols")
    return [line for line in out.splitlines() if line.strip()]


def establish(pair: Pair) -> dict:
    assert pair.left is not None and pair.right is not None
    pair.left.call("initiate", child="net", timeout=30)
    ike = pair.left.wait_for_child("pair")
    pair.right.wait_for_child("pair")
    return ike


def stop_both(pair: Pair) -> None:
    """SIGTERM the left daemon, then the right: the left's DELETE must have removed the
    right's SAs before the right goes (RFC 7296 sec. 1.4.1)."""
    for side in ("left", "right"):
        daemon: OurDaemon = getattr(pair, side)
        assert daemon.stop() == 0, f"{side} did not exit 0:\n{daemon.log_tail()}"
        if side == "left":
            assert pair.right.sas() == {}, "the right side still has SAs after the DELETE"
        namespace = pair.left_ns if side == "left" else pair.right_ns
        assert "ipsec0" not in namespace.run("ip", "-o", "link").stdout
        assert "lookup 220" not in namespace.run("ip", "rule").stdout


@pytest.mark.timeout(90)
@pytest.mark.parametrize("encap", [False, True], ids=["raw-esp", "forced-udp-encap"])
def test_psk_tunnel(pair, encap):
    pair.start(left={"encap": encap})
    capture = pair.lab.capture(pair.left_ns, pair.left_dev, pair.workdir / "wire.pcap", "ip")
    ike = establish(pair)
    assert_ping(pair.left_ns, LEFT.inner, RIGHT.inner, count=4)
    assert_ping(pair.right_ns, RIGHT.inner, LEFT.inner, count=2)
    capture.stop()

    assert ike["remote-port"] == ("4500" if encap else "500")
    left_child = child_of(pair.left.sas()["pair"])
    right_child = child_of(pair.right.sas()["pair"])
    assert left_child["encap"] == ("yes" if encap else "no")
    assert left_child["spi-in"] == right_child["spi-out"]
    assert left_child["spi-out"] == right_child["spi-in"]
    assert int(left_child["packets-out"]) >= 6 and int(right_child["packets-in"]) >= 6
    assert left_child["local-ts"] == ["10.1.0.0/24"]
    assert left_child["remote-ts"] == ["10.2.0.0/24"]

    frames = wire_frames(pair.workdir / "wire.pcap")
    esp = [f for f in frames if f.endswith(":esp")]
    assert len(esp) >= 12, frames
    for frame in frames:
        assert frame.endswith((":isakmp", ":esp")), f"not IKE/ESP on the wire: {frame}"
        if frame.endswith(":esp"):
            assert (":udp:" in frame) == encap, frame

    # Every log line about an SA names its connection and IKE SA.
    for event in pair.left.log_events() + pair.right.log_events():
        if "SA " in event.get("event", ""):
            assert event.get("connection") == "pair" and event.get("ike_sa_id"), event

    policies = pair.left.call("policies")
    assert any(p["dir"] == "out" and p.get("child") == "net" for p in policies["policies"])
    assert any("10.2.0.0/24" in route for route in policies["routes"])
    stop_both(pair)


def make_pki(directory: Path) -> dict[str, dict[str, str]]:
    """A CA and two ECDSA P-256 end-entity certificates with DNS SANs, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aioipsec e2e CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files = {}
    for name in ("left.example", "right.example"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
            .sign(ca_key, hashes.SHA256())
        )
        cert_path = directory / f"{name}.pem"
        key_path = directory / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_path.chmod(0o600)
        files[name] = {"cert": str(cert_path), "key": str(key_path), "ca": str(ca_path)}
    return files


@pytest.mark.timeout(90)
def test_certificate_tunnel(pair):
    pki = make_pki(pair.workdir)
    pair.start(
        left={"auth": "pubkey", "certs": pki["left.example"]},
        right={"auth": "pubkey", "certs": pki["right.example"]},
    )
    ike = establish(pair)
    assert ike["remote-id"] == "right.example"
    assert_ping(pair.left_ns, LEFT.inner, RIGHT.inner, count=3)
    stop_both(pair)


@pytest.mark.timeout(90)
def test_save_keys_lets_tshark_decrypt_ike_and_esp(pair):
    keys = pair.workdir / "keys"
    pair.daemon("right", pair.config("right"))
    pair.daemon("left", pair.config("left", encap=True), ["--save-keys", str(keys)])
    assert any("key export is ON" in event.get("event", "") for event in pair.left.log_events()), (
        "no warning about key export"
    )
    pcap = pair.workdir / "wire.pcap"
    capture = pair.lab.capture(pair.left_ns, pair.left_dev, pcap, "ip")
    establish(pair)
    assert_ping(pair.left_ns, LEFT.inner, RIGHT.inner, count=3)
    capture.stop()
    for name in ("ikev2_decryption_table", "esp_sa"):
        assert (keys / name).stat().st_mode & 0o077 == 0, f"{name} readable by others"

    # Without the keys tshark sees neither the IKE_AUTH content nor the ICMP inside ESP:
    # so the checks below fail when our tables are wrong.
    empty = pair.workdir / "no-keys"
    empty.mkdir()
    plain = tshark(pcap, "-o", "esp.enable_encryption_decode:TRUE", "-T", "fields",
                   "-e", "isakmp.id.data.fqdn", "-e", "icmp.type", env={"WIRESHARK_CONFIG_DIR":
                                                                    str(empty)})  # fmt: skip
    assert not plain.strip(), plain
    decrypted = tshark(
        pcap, "-o", "esp.enable_encryption_decode:TRUE", "-T", "fields",
        "-e", "isakmp.exchangetype", "-e", "isakmp.id.data.fqdn", "-e", "icmp.type",
        env={"WIRESHARK_CONFIG_DIR": str(keys)},
    )  # fmt: skip
    rows = [line.split("\t") for line in decrypted.splitlines()]
    # IKE_AUTH (35) decrypted: the identities (FQDN) are visible.
    identities = {
        identity
        for row in rows
        if row[0] == "35" and len(row) > 1
        for identity in row[1].split(",")
        if identity
    }
    assert identities == {"left.example", "right.example"}, decrypted
    # ESP decrypted: echo requests (8) and replies (0) inside.
    icmp_types = [row[2] for row in rows if len(row) > 2 and row[2]]
    assert icmp_types.count("8") >= 3 and icmp_types.count("0") >= 3, decrypted
    stop_both(pair)

    # The keys are in the key files, and nowhere in either daemon's log (debug level).
    secrets = set()
    for line in (keys / "ikev2_decryption_table").read_text().splitlines():
        if not line.startswith("#"):
            fields = line.split(",")
            secrets.update(f for f in (fields[2], fields[3]) if f)
    for line in (keys / "esp_sa").read_text().splitlines():
        if not line.startswith("#"):
            secrets.add(line.split(",")[5].strip('"').removeprefix("0x"))
    assert len(secrets) == 4, secrets
    for daemon in (pair.left, pair.right):
        text = daemon.log_text().lower()
        for secret in secrets:
            assert secret[:16] not in text, "a key appears in a log"


@pytest.mark.timeout(90)
def test_sighup_reload(pair):
    pair.start()
    establish(pair)
    config = pair.right.config
    original = config.read_text()
    tables = original[original.index("[connections.pair]") :]
    extra = tables.replace("[connections.pair", "[connections.extra").replace(
        "[secrets.ike-pair]", "[secrets.ike-extra]"
    )
    config.write_text(original + "\n" + extra)
    os.kill(pair.right.process.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    names: list[str] = []
    while time.monotonic() < deadline:
        names = [name for entry in pair.right.call("conns") for name in entry]
        if "extra" in names:
            break
        time.sleep(0.2)
    assert names == ["pair", "extra"], names
    # The running SA survived the reload.
    assert_ping(pair.left_ns, LEFT.inner, RIGHT.inner, count=2)
    # A broken file is refused; the running configuration stays.
    config.write_text(original.replace("proposals =", "proposal_typo ="))
    with pytest.raises(AssertionError, match="proposal_typo"):
        pair.right.call("reload")
    assert [name for entry in pair.right.call("conns") for name in entry] == ["pair", "extra"]
    stop_both(pair)


@pytest.mark.timeout(120)
def test_rekey_of_both_sas_under_ping_loses_nothing(pair):
    child = {"rekey_time": "2s", "life_time": "6s", "rand_time": "1s"}
    connection = {"rekey_time": "4s", "rand_time": "1s"}
    pair.start(
        left={"child_options": child, "connection_options": connection},
        right={"child_options": child, "connection_options": connection},
    )
    establish(pair)
    result = ping(pair.left_ns, LEFT.inner, RIGHT.inner, count=80, extra=("-i", "0.1"))
    # -i given twice: the later one (0.1 s) wins; 80 packets, ~8 s, several rekeys.
    assert result.returncode == 0, result.stdout
    assert " 0% packet loss" in result.stdout, result.stdout + pair.logs()
    events = [e.get("event") for e in pair.left.log_events() + pair.right.log_events()]
    assert events.count("CHILD SA rekeyed") >= 2, events
    assert events.count("IKE SA rekeyed") >= 1, events
    # Still one IKE SA and the tunnel works after all that.
    assert len(pair.left.sas()) == 1
    assert_ping(pair.left_ns, LEFT.inner, RIGHT.inner, count=2)
    stop_both(pair)


@pytest.mark.timeout(120)
def test_restart_of_a_killed_peer(pair):
    pair.start(right={"start_action": "none"})
    establish(pair)
    assert_ping(pair.left_ns, LEFT.inner, RIGHT.inner, count=2)
    # The right daemon dies without a word (no DELETE); its TUN device goes with it.
    pair.right.kill()
    assert "ipsec0" not in pair.right_ns.run("ip", "-o", "link").stdout
    # A new right daemon starts and initiates with INITIAL_CONTACT: the left side drops the
    # stale SAs of that peer and the tunnel works again.
    pair.daemon("right", pair.config("right", start_action="start"))
    pair.right.wait_for_child("pair")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if ping(pair.right_ns, RIGHT.inner, LEFT.inner, count=1).returncode == 0:
            break
        time.sleep(0.5)
    assert_ping(pair.right_ns, RIGHT.inner, LEFT.inner, count=3)
    assert_ping(pair.left_ns, LEFT.inner, RIGHT.inner, count=3)
    assert len(pair.left.sas()) == 1, pair.left.sas()
    stop_both(pair)


@pytest.mark.timeout(90)
def test_pmtu_frag_needed_carries_the_tunnel_mtu(pair):
    pair.start()
    establish(pair)
    stats = pair.left.call("stats")
    tun_mtu = stats["esp"]["tun_mtu"]
    assert 1300 < tun_mtu < 1500
    # A DF packet of exactly the tunnel MTU goes through (the MTU is not too small) ...
    size = tun_mtu - 28
    fits = ping(pair.left_ns, LEFT.inner, RIGHT.inner, count=1, extra=("-M", "do", "-s", str(size)))
    assert fits.returncode == 0, fits.stdout + fits.stderr
    # ... one octet more is refused with the tunnel MTU (the kernel, from the TUN MTU).
    big = ping(pair.left_ns, LEFT.inner, RIGHT.inner, count=1,
               extra=("-M", "do", "-s", str(size + 1)))  # fmt: skip
    assert big.returncode != 0
    assert f"mtu={tun_mtu}" in (big.stdout + big.stderr).replace(" ", ""), big.stdout + big.stderr

    # An administrator raises the TUN MTU above what the SA can carry: now the data path
    # itself must answer with ICMP "fragmentation needed" carrying the SA's MTU (RFC 1191).
    pair.left_ns.run("ip", "link", "set", "ipsec0", "mtu", "1500")
    capture = pair.lab.capture(pair.left_ns, "ipsec0", pair.workdir / "tun.pcap")
    too_big = str(size + 20)  # above the SA's MTU, below the new TUN MTU
    big = ping(pair.left_ns, LEFT.inner, RIGHT.inner, count=1, extra=("-M", "do", "-s", too_big))
    capture.stop()
    assert big.returncode != 0, big.stdout
    assert "Frag needed" in big.stdout + big.stderr, big.stdout + big.stderr
    errors = tshark(pair.workdir / "tun.pcap", "-Y", "icmp.type == 3 && icmp.code == 4",
                    "-T", "fields", "-e", "icmp.mtu")  # fmt: skip
    assert errors.split() and all(int(v) == tun_mtu for v in errors.split()), errors
    assert pair.left.call("stats")["esp"]["too_big_sent"] >= 1
    # PMTU discovery worked: the kernel learnt the MTU and the next big ping says so.
    again = ping(pair.left_ns, LEFT.inner, RIGHT.inner, count=1, extra=("-M", "do", "-s", too_big))
    assert f"mtu={tun_mtu}" in (again.stdout + again.stderr).replace(" ", "")
    stop_both(pair)


@pytest.mark.timeout(90)
def test_trap_first_packet_starts_the_sa(pair):
    pair.start(left={"start_action": "trap"})
    capture = pair.lab.capture(pair.left_ns, pair.left_dev, pair.workdir / "wire.pcap", "ip")
    time.sleep(0.5)
    assert pair.left.sas() == {}, "an SA before any traffic"
    # The first packet hits the trap, is held while IKE runs, then goes through the SA.
    result = ping(pair.left_ns, LEFT.inner, RIGHT.inner, count=5)
    capture.stop()
    assert result.returncode == 0, result.stdout + pair.logs()
    assert " 0% packet loss" in result.stdout, result.stdout
    events = [e.get("event") for e in pair.left.log_events()]
    assert "acquire: packet for a trap policy" in events
    frames = wire_frames(pair.workdir / "wire.pcap")
    assert frames and frames[0].endswith(":isakmp"), frames
    assert not any("icmp" in frame for frame in frames), "a packet leaked in clear"
    stop_both(pair)


@pytest.mark.timeout(200)
@pytest.mark.parametrize("dpd_action", ["clear", "trap"])
def test_dpd_clears_the_sa_of_a_killed_peer(pair, dpd_action):
    # strongSwan's retransmission defaults (4 s, x1.8, 5 tries) take 165 s to declare the
    # peer dead; [daemon] retransmit_* shortens that to 0.5 + 0.6 + 0.72 s.
    fast = {"retransmit_timeout": "0.5s", "retransmit_base": 1.2, "retransmit_tries": 2}
    pair.start(
        left={
            "connection_options": {"dpd_delay": "1s"},
            "child_options": {"dpd_action": dpd_action},
            "daemon_options": fast,
        }
    )
    establish(pair)
    pair.right.kill()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and pair.left.sas():
        time.sleep(0.5)
    assert pair.left.sas() == {}, pair.left.log_tail()
    events = [e.get("event") for e in pair.left.log_events()]
    assert "IKE SA deleted" in events
    traps = [p for p in pair.left.call("policies")["policies"] if p.get("trap")]
    if dpd_action == "clear":
        # Nothing is left: no trap, and the routes went with the SA.
        assert traps == []
        route = pair.left_ns.run("ip", "route", "show", "table", "220").stdout
        assert "10.2.0.0/24" not in route
    else:
        # dpd_action = trap: the next packet for the peer starts a new SA.
        assert traps, pair.left.log_tail()
    assert pair.left.stop(signal.SIGTERM) == 0


def ladder_arrows(text: str) -> list[tuple[str, str]]:
    """(exchange and role, "->" or "<-") for every message of an explain --follow ladder."""
    arrows, title = [], None
    for line in text.splitlines():
        for role in ("request", "response"):
            if f" {role} (Message ID " in line:
                title = line.split(f" {role} (Message ID ")[0].split()[-1] + " " + role
        stripped = line.strip()
        if title and stripped.startswith("|-") and stripped.endswith(">|"):
            arrows.append((title, "->"))
            title = None
        elif title and stripped.startswith("|<-"):
            arrows.append((title, "<-"))
            title = None
    return arrows


@pytest.mark.timeout(90)
def test_explain_follow_shows_the_live_negotiation(pair):
    """``aioipsec explain --follow`` on the initiator's control socket: the ladder shows
    IKE_SA_INIT and IKE_AUTH going out and coming back, and the stream carries no keys."""
    import sys

    pair.start()
    follower = subprocess.Popen(
        [sys.executable, "-m", "aioipsec", "explain", "--follow",
         "--socket", str(pair.left.control_socket)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        # The first line is printed once the daemon has registered the subscription.
        header = follower.stdout.readline()
        assert "explain --follow" in header, header + follower.stderr.read()
        establish(pair)
        # Stopping the daemons ends the stream (the follower exits 0 on the closed socket).
        stop_both(pair)
        rest, errors = follower.communicate(timeout=30)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == 0, errors
    text = header + rest
    assert ladder_arrows(text)[:4] == [
        ("IKE_SA_INIT request", "->"),
        ("IKE_SA_INIT response", "<-"),
        ("IKE_AUTH request", "->"),
        ("IKE_AUTH response", "<-"),
    ], text
    assert "HDR, SA, KE, Nonce" in text and "SK{IDi" in text, text
    assert f"{LEFT.outer}:500 -> {RIGHT.outer}:500" in text, text
    assert "IkeSaEstablished pair" in text, text
    assert "ChildSaEstablished pair" in text, text
    assert "session keys" not in text  # no --save-keys: no pointer either


@pytest.mark.timeout(90)
def test_close_action_trap_renegotiates_on_the_next_packet(pair):
    pair.start(left={"child_options": {"close_action": "trap"}})
    establish(pair)
    assert_ping(pair.left_ns, LEFT.inner, RIGHT.inner, count=2)
    # The right side closes the connection; the left keeps a trap instead of the SA ...
    pair.right.call("terminate", ike="pair")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and pair.left.sas():
        time.sleep(0.2)
    assert pair.left.sas() == {}
    policies = pair.left.call("policies")["policies"]
    assert any(p.get("trap") for p in policies), policies
    # ... so the next packet brings the tunnel back without any command.
    result = ping(pair.left_ns, LEFT.inner, RIGHT.inner, count=4)
    assert result.returncode == 0, result.stdout
    assert pair.left.sas()["pair"]["state"] == "ESTABLISHED"
    stop_both(pair)


@pytest.mark.timeout(90)
def test_control_commands_through_the_cli(pair):
    """``aioipsec initiate/sas/rekey/terminate/policies/stats`` as a user types them."""
    import sys

    pair.start()

    def cli(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "aioipsec", *args, "--socket",
             str(pair.left.control_socket)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    assert "initiated pair/net" in cli("initiate", "--child", "net")
    text = cli("sas")
    assert "pair: #" in text and "ESTABLISHED" in text and "INSTALLED" in text, text
    before = child_of(pair.left.sas()["pair"])
    cli("rekey", "--child", "net")
    deadline = time.monotonic() + 10
    after = before
    while time.monotonic() < deadline:
        children = list((pair.left.sas()["pair"].get("child-sas") or {}).values())
        if len(children) == 1 and children[0]["spi-in"] != before["spi-in"]:
            after = children[0]
            break
        time.sleep(0.2)
    assert after["spi-in"] != before["spi-in"], "the Child SA was not rekeyed"
    assert_ping(pair.left_ns, LEFT.inner, RIGHT.inner, count=2)
    assert "dir out" in cli("policies")
    stats = json.loads(cli("stats", "--json"))
    assert stats["esp"]["packets_out"] >= 2 and stats["ike-sas"] == 1
    cli("terminate", "--ike", "pair")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (pair.left.sas() or pair.right.sas()):
        time.sleep(0.2)
    assert pair.left.sas() == {} and pair.right.sas() == {}
    # No SA and no trap: a packet to the remote subnet is not sent in clear.
    assert ping(pair.left_ns, LEFT.inner, RIGHT.inner, count=1).returncode != 0
    stop_both(pair)


@pytest.mark.timeout(90)
def test_byte_lifetime_from_the_data_plane_triggers_a_rekey(pair):
    """rekey_bytes is counted by the ESP data plane (RFC 4301 sec. 4.4.2.1); reaching it
    makes the engine rekey the Child SA, without loss."""
    child = {"rekey_bytes": "3000", "life_bytes": "1000000"}
    pair.start(left={"child_options": child}, right={"child_options": child})
    establish(pair)
    result = ping(pair.left_ns, LEFT.inner, RIGHT.inner, count=60, extra=("-i", "0.05"))
    assert " 0% packet loss" in result.stdout, result.stdout
    events = [e.get("event") for e in pair.left.log_events() + pair.right.log_events()]
    assert "CHILD SA lifetime reached" in events, events
    assert events.count("CHILD SA rekeyed") >= 2, events
    stop_both(pair)
