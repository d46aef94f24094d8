"""systemd's NOTIFY_SOCKET protocol (aioipsec.sdnotify) against a real datagram listener, and
the daemon's READY=1 / RELOADING=1 / STOPPING=1 as systemd would receive them."""

from __future__ import annotations

import os
import signal
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from aioipsec.sdnotify import notify, notify_address
from tests.components import require_component

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def listener() -> Iterator[tuple[socket.socket, str]]:
    directory = Path(tempfile.mkdtemp(prefix="sdn-", dir="/tmp"))
    path = directory / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5.0)
    yield sock, str(path)
    sock.close()
    path.unlink(missing_ok=True)
    directory.rmdir()


def test_one_datagram_to_a_path(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    assert notify("READY=1", "STATUS=2 connection(s)", environ={"NOTIFY_SOCKET": path})
    assert sock.recv(4096) == b"READY=1\nSTATUS=2 connection(s)"


def test_abstract_namespace_name() -> None:
    name = f"aioipsec-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5.0)
        assert notify("STOPPING=1", environ={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"STOPPING=1"


def test_without_systemd_nothing_is_sent() -> None:
    assert notify("READY=1", environ={}) is False
    assert notify_address(None) is None and notify_address("") is None
    assert notify_address("relative/path") is None  # sd_notify(3) refuses it too
    assert notify("READY=1", environ={"NOTIFY_SOCKET": "relative"}) is False


def test_a_listener_that_is_gone_is_not_fatal(tmp_path: Path) -> None:
    assert notify("READY=1", environ={"NOTIFY_SOCKET": str(tmp_path / "none")}) is False


@pytest.mark.timeout(90)
def test_daemon_ready_after_its_sockets_reload_and_stop(
    listener: tuple[socket.socket, str], tmp_path: Path
) -> None:
    """READY=1 comes after the self-test and once UDP 500 and the control socket answer;
    SIGHUP (ExecReload) gives RELOADING=1 then READY=1; SIGTERM gives STOPPING=1."""
    require_component("root", "tun", "ip")
    from aioipsec.controlclient import ControlClient
    from aioipsec.netns import Lab

    sock, path = listener
    control = Path(tempfile.mkdtemp(prefix="sdn-", dir="/tmp")) / "control.sock"
    config = tmp_path / "daemon.toml"
    config.write_text(f'[daemon]\ncontrol_socket = "{control}"\ntun_name = "sdn0"\n')
    config.chmod(0o600)
    with Lab("sdn") as lab:
        namespace = lab.namespace("d")
        process = lab.start(
            namespace,
            [sys.executable, "-m", "aioipsec.daemon", "-c", str(config)],
            log=tmp_path / "daemon.log",
            cwd=REPO,
            env={"PYTHONPATH": str(REPO), "NOTIFY_SOCKET": path},
        )
        message = sock.recv(4096).decode()
        assert message.startswith("READY=1\nSTATUS=0 connection(s), 0 IKE SA(s); control"), message
        # What READY=1 promises: the control socket answers and port 500 is bound.
        with ControlClient(control, timeout=5.0) as client:
            assert client.call("stats")["pid"] == process.pid
        bound = namespace.sh("ss -uln")
        assert ":500 " in bound and ":4500 " in bound, bound

        os.kill(process.pid, signal.SIGHUP)
        assert sock.recv(4096).decode().startswith("RELOADING=1\n")
        assert sock.recv(4096).decode().startswith("READY=1\n")
        process.stop(signal.SIGTERM, timeout=20.0)
        assert sock.recv(4096).decode().startswith("STOPPING=1\n")
    control.parent.rmdir()
