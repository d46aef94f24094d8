"""The `vici` Python package (strongSwan's own Python client) against our daemon, and the
VICI socket under bad input: the daemon keeps serving its tunnel throughout.

Uses the pair of daemons of tests/e2e; the left one's VICI socket is the one driven.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from aioipsec.vici.codec import PacketType, encode_packet
from tests.e2e.helpers import assert_ping
from tests.e2e.test_aioipsec_pair import LEFT, RIGHT

from .helpers import receive_packet, swanctl, swanctl_or_skip
from .test_swanctl import vici_of, vici_session

pytestmark = [pytest.mark.netns]


@pytest.mark.timeout(180)
def test_vici_package_commands_and_events(pair):
    pair.start()
    path = vici_of(pair)
    events: list[tuple[str, dict]] = []
    stop = threading.Event()
    ready = threading.Event()

    def listen() -> None:
        with vici_session(path) as session:
            wanted = ["ike-updown", "child-updown", "ike-rekey", "child-rekey", "log"]
            for label, event in session.listen(wanted, timeout=0.2):
                ready.set()
                if label is not None:
                    events.append((label.decode(), event))
                if stop.is_set():
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert ready.wait(10)

    with vici_session(path) as session:
        version = session.version()
        assert version["daemon"] == b"aioipsec"
        logs = list(session.initiate({"child": "net", "timeout": "30000", "loglevel": "1"}))
        assert any(b"established between" in entry["msg"] for entry in logs), logs
        sas = list(session.list_sas())
        assert len(sas) == 1 and sas[0]["pair"]["state"] == b"ESTABLISHED"
        child = next(iter(sas[0]["pair"]["child-sas"].values()))
        assert child["name"] == b"net" and child["local-ts"] == [b"10.1.0.0/24"]
        conns = list(session.list_conns())
        assert conns[0]["pair"]["children"]["net"]["mode"] == b"TUNNEL"
        assert session.get_algorithms()["aead"][b"AES_GCM_16".decode()] == b"cryptography"
        counters = session.get_counters()
        assert counters["counters"][""]["ike-init-out-req"] == b"1"

        assert_ping(pair.left_ns, LEFT.inner, RIGHT.inner, count=2)
        session.rekey({"child": "net"})
        session.rekey({"ike": "pair"})
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            names = {label for label, _ in events}
            if {"child-rekey", "ike-rekey"} <= names:
                break
            time.sleep(0.2)
        assert_ping(pair.left_ns, LEFT.inner, RIGHT.inner, count=2)
        counters = session.get_counters({"name": "pair"})["counters"]["pair"]
        assert counters["ike-rekey-init"] == b"1" and counters["child-rekey"] == b"1", counters
        result = list(session.terminate({"ike": "pair", "timeout": "20000"}))
        assert any(b"deleted" in entry["msg"] for entry in result), result
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
            label == "ike-updown" and "up" not in event for label, event in events
        ):
            time.sleep(0.2)
    stop.set()
    listener.join(5)

    by_label: dict[str, list[dict]] = {}
    for label, event in events:
        by_label.setdefault(label, []).append(event)
    up = [e for e in by_label["ike-updown"] if e.get("up") == b"yes"]
    down = [e for e in by_label["ike-updown"] if "up" not in e]
    assert up and up[0]["pair"]["state"] == b"ESTABLISHED", by_label["ike-updown"]
    assert down and down[-1]["pair"]["state"] == b"DELETING", by_label["ike-updown"]
    child_up = [e for e in by_label["child-updown"] if e.get("up") == b"yes"]
    assert child_up and len(child_up[0]["pair"]["child-sas"]) == 1
    rekey = by_label["child-rekey"][0]["pair"]["child-sas"]
    (old_new,) = rekey.values()
    assert old_new["old"]["spi-in"] != old_new["new"]["spi-in"], rekey
    ike_rekey = by_label["ike-rekey"][0]["pair"]
    assert ike_rekey["old"]["initiator-spi"] != ike_rekey["new"]["initiator-spi"]
    assert any(b"sending packet" in e["msg"] for e in by_label["log"])


def _request(sock: socket.socket, name: str, message: dict | None = None) -> None:
    sock.sendall(encode_packet(PacketType.CMD_REQUEST, name, message or {}))


def _connect(path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(str(path))
    return sock


def _closed_by_daemon(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


@pytest.mark.timeout(240)
def test_bad_input_daemon_keeps_serving(pair):
    swanctl_or_skip()
    pair.start()
    path = vici_of(pair)
    pair.left.call("initiate", child="net", timeout=30)
    pair.left.wait_for_child("pair")

    # A segment shorter than its length field says, then the client goes.
    with _connect(path) as sock:
        sock.sendall(struct.pack("!I", 100) + b"\x00\x07version")
    # A segment announcing more than 512 KiB: the daemon closes the connection.
    with _connect(path) as sock:
        sock.sendall(struct.pack("!I", 600 * 1024))
        assert _closed_by_daemon(sock)
    # A packet type no client sends, and one that does not exist.
    for octets in (b"\x01", b"\x09"):
        with _connect(path) as sock:
            sock.sendall(struct.pack("!I", len(octets)) + octets)
            assert _closed_by_daemon(sock)
    # Nesting deeper than the bound: answered, the connection stays usable.
    with _connect(path) as sock:
        deep = b"\x01\x01s" * 40 + b"\x02" * 40
        body = b"\x00\x08list-sas" + deep
        sock.sendall(struct.pack("!I", len(body)) + body)
        answer = receive_packet(sock)
        assert answer.type == PacketType.CMD_RESPONSE
        assert answer.message["success"] == b"no"
        assert b"nested deeper than 32" in answer.message["errmsg"]
        _request(sock, "version")
        assert receive_packet(sock).message["daemon"] == b"aioipsec"
        # Unknown commands and events.
        _request(sock, "no-such-command")
        assert receive_packet(sock).type == PacketType.CMD_UNKNOWN
        sock.sendall(encode_packet(PacketType.EVENT_REGISTER, "no-such-event"))
        assert receive_packet(sock).type == PacketType.EVENT_UNKNOWN
    # A 1 MB message.
    with _connect(path) as sock:
        body = b"\x00\x07version" + b"\x03\x01k\xff\xff" + b"x" * 0xFFFF
        body += b"\x03\x01k" * 0  # one key only: the rest is the size
        big = body + b"\x05\x00\x00" * ((1 << 20) // 3)
        try:
            sock.sendall(struct.pack("!I", len(big)) + big)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon hung up after reading the length: that is the point
        assert _closed_by_daemon(sock)
    # Clients that go away in the middle of a stream.
    for command in ("list-sas", "list-conns"):
        with _connect(path) as sock:
            sock.sendall(encode_packet(PacketType.EVENT_REGISTER, command[:-1]))
            assert receive_packet(sock).type == PacketType.EVENT_CONFIRM
            _request(sock, command)
    with _connect(path) as sock:  # registered for the log, never reads it
        sock.sendall(encode_packet(PacketType.EVENT_REGISTER, "log"))
        assert receive_packet(sock).type == PacketType.EVENT_CONFIRM
        sock.sendall(encode_packet(PacketType.EVENT_REGISTER, "control-log"))
        _request(sock, "rekey", {"child": "net"})

    # 100 clients at once, each with its own requests.
    def client(index: int) -> bytes:
        with vici_session(path) as session:
            assert len(list(session.list_sas())) == 1
            return session.version()["daemon"]

    with ThreadPoolExecutor(max_workers=100) as pool:
        results = list(pool.map(client, range(100)))
    assert results == [b"aioipsec"] * 100

    # Through all of it: the tunnel carries traffic and swanctl still works.
    assert_ping(pair.left_ns, LEFT.inner, RIGHT.inner, count=3)
    assert "pair: #" in swanctl(path, "--list-sas").stdout
    log = pair.left.log_text()
    assert "vici_segment_too_long" in log and "vici_unexpected_packet" in log
    assert "vici_bad_packet" in log


@pytest.mark.timeout(120)
def test_socket_group_and_peer_check(pair):
    """The VICI socket follows control_group as the control socket does: 0600 root only
    by default (another user cannot connect), 0660 with the group, and the peer's
    credentials checked on connect."""
    import grp
    import subprocess

    from .helpers import SWANCTL

    swanctl_or_skip()
    pair.start(left={"daemon_options": {"control_group": "nogroup"}})
    path = vici_of(pair)
    for directory in (pair.workdir, path.parent, vici_of(pair, "right").parent):
        directory.chmod(0o711)  # let nobody reach the sockets; the socket modes decide
    mode = path.stat()
    assert oct(mode.st_mode & 0o777) == "0o660"
    assert mode.st_gid == grp.getgrnam("nogroup").gr_gid
    # nobody (primary group nogroup) is let in.
    result = subprocess.run(
        [SWANCTL, "--version", "--daemon", "--uri", f"unix://{path}"],
        capture_output=True, text=True, timeout=30, user="nobody", group="nogroup",
    )  # fmt: skip
    assert "aioipsec" in result.stdout, result.stderr
    right = vici_of(pair, "right")
    assert oct(right.stat().st_mode & 0o777) == "0o600"
    result = subprocess.run(
        [SWANCTL, "--version", "--daemon", "--uri", f"unix://{right}"],
        capture_output=True, text=True, timeout=30, user="nobody", group="nogroup",
    )  # fmt: skip
    assert result.returncode != 0 and "aioipsec" not in result.stdout
    # Past the file mode (made world-writable here), SO_PEERCRED still refuses nobody.
    right.chmod(0o666)
    result = subprocess.run(
        [SWANCTL, "--version", "--daemon", "--uri", f"unix://{right}"],
        capture_output=True, text=True, timeout=30, user="nobody", group="nogroup",
    )  # fmt: skip
    assert result.returncode != 0 and "aioipsec" not in result.stdout
    assert '"vici_peer_refused"' in pair.right.log_text()


@pytest.mark.timeout(120)
def test_failed_initiate_answers_why_and_raises_alert(pair):
    """The peer refuses our PSK: initiate answers success=no with the reason (through the
    vici package's CommandException) and a registered client gets the alert event."""
    import vici.exception

    pair.start(right={"psk": "not-the-left-secret-0123456789abcdef"})
    path = vici_of(pair)
    alerts: list[dict] = []
    ready = threading.Event()

    def listen() -> None:
        with vici_session(path) as session:
            for label, event in session.listen(["alert"], timeout=0.2):
                ready.set()
                if label is not None:
                    alerts.append(event)
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert ready.wait(10)
    with vici_session(path) as session, pytest.raises(vici.exception.CommandException) as error:
        list(session.initiate({"child": "net", "timeout": "20000"}))
    assert "peer answered AUTHENTICATION_FAILED" in str(error.value), error.value
    listener.join(10)
    # charon's names: the peer refused our authentication.
    assert alerts and alerts[0]["type"] == b"local-auth-failed", alerts
    assert "pair" in alerts[0]["ike-sa"]
    assert "vici_command_failed" not in pair.left.log_text()  # an answer, not a crash
