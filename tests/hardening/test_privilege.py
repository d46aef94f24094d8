"""Secrets and privilege of the running daemon.

* A private key file readable by group/others is refused (the daemon exits 1 naming the
  file); a TOML file holding a PSK with group/others read is warned about.
* Keys never appear in the log (debug level) nor in any control-socket answer.
* ``--save-keys`` says loudly that it is on, and writes its files 0600.
* The control socket is refused to other users: by the file mode, and by the peer
  credentials check (SO_PEERCRED) even when the file mode is opened up by mistake.
* After start the daemon holds only the capabilities it still needs.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .lab import GW_INNER, PEER_INNER, REPO_ROOT, Hosts, Prober, daemon_pid, gw_config

pytestmark = [pytest.mark.netns]
OTHER_UID = 54321  # no such user: neither root nor in any group


def run_daemon_once(hosts: Hosts, config: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "aioipsec.daemon", "-c", str(config), "--log-format", "json"]
    return subprocess.run(
        hosts.gw_ns.exec_argv(argv), capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip


@pytest.mark.timeout(60)
def test_private_key_readable_by_others_is_refused(hosts: Hosts) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    key_path = hosts.workdir / "gw-key.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o644)
    config = hosts.workdir / "key.toml"
    config.write_text(
        f'[daemon]\ncontrol_socket = "{hosts.workdir / "c.sock"}"\n\n'
        f'[secrets.private-gw]\nfile = "{key_path}"\n'
    )
    config.chmod(0o600)
    result = run_daemon_once(hosts, config)
    assert result.returncode == 1, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert str(key_path) in output and "chmod 600" in output, output
    assert "ipsec0" not in hosts.gw_ns.run("ip", "-o", "link").stdout


@pytest.mark.timeout(60)
def test_psk_file_readable_by_others_is_refused(hosts: Hosts) -> None:
    """Issue 13 F9: a PSK in a file group or others may read stops the daemon before it
    starts (nothing is set up), saying which file and what to do."""
    directory = hosts.workdir / "gw-refused"
    directory.mkdir(exist_ok=True)
    config = gw_config(directory)
    config.chmod(0o644)
    result = run_daemon_once(hosts, config)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert str(config) in output and "chmod 600" in output, output
    assert "allow_readable_secret_files" in output, output
    assert "ipsec0" not in hosts.gw_ns.run("ip", "-o", "link").stdout


@pytest.mark.timeout(60)
def test_psk_file_readable_by_others_is_warned_when_allowed(hosts: Hosts) -> None:
    """With ``allow_readable_secret_files = true``, through the user's entry point
    (``aioipsec daemon``), which logs config warnings."""
    directory = hosts.workdir / "gw"
    directory.mkdir(exist_ok=True)
    config = gw_config(
        directory,
        daemon={"log_format": "json", "log_level": "debug", "allow_readable_secret_files": True},
    )
    config.chmod(0o644)
    argv = [sys.executable, "-u", "-m", "aioipsec", "daemon", "-c", str(config), "--foreground"]
    process = hosts.lab.start(hosts.gw_ns, argv, log=directory / "cli.log", cwd=REPO_ROOT,
                              env={"PYTHONPATH": str(REPO_ROOT)})  # fmt: skip
    try:
        assert process.wait_for_log('"daemon started"', timeout=30), process.log_text()
        warnings = [
            line for line in process.log_text().splitlines()
            if '"warning"' in line and str(config) in line
        ]  # fmt: skip
        assert warnings, process.log_text()
        assert "chmod 600" in warnings[0]
    finally:
        assert process.stop() == 0


@pytest.mark.timeout(90)
def test_keys_never_in_logs_or_control_answers(hosts: Hosts) -> None:
    gw = hosts.gw()
    prober = Prober(hosts.evil_ns)
    try:
        _, child = prober.establish()
    finally:
        prober.close()
    secrets = {
        "probe psk": b"probe-secret-not-for-production-0123456789",
        "legit psk": b"hardening-secret-not-for-production-0123456789",
        "ESP key in": child.encr_key_in,
        "ESP key out": child.encr_key_out,
    }
    answers = {
        command: json.dumps(gw.call(command)) for command in ("sas", "conns", "stats", "policies")
    }
    log = gw.log_text()
    for name, value in secrets.items():
        forms = {value.hex(), value.hex().upper(), value.decode("latin-1")}
        forms.add(":".join(f"{b:02x}" for b in value))
        for form in forms:
            assert form not in log, f"{name} in the daemon's log"
            for command, text in answers.items():
                assert form not in text, f"{name} in the answer to {command}"


@pytest.mark.timeout(60)
def test_save_keys_is_marked_and_private(hosts: Hosts) -> None:
    from tests.e2e.helpers import OurDaemon

    directory = hosts.workdir / "gw"
    directory.mkdir(exist_ok=True)
    keys = hosts.workdir / "keys"
    daemon = OurDaemon(hosts.lab, hosts.gw_ns, gw_config(directory), directory,
                       ["--save-keys", str(keys)])  # fmt: skip
    daemon.start()
    hosts.daemons.append(daemon)
    prober = Prober(hosts.evil_ns)
    try:
        prober.establish()
    finally:
        prober.close()
    warnings = [e for e in daemon.log_events() if e.get("level") == "warning"]
    assert any("key export is ON" in e.get("event", "") for e in warnings), daemon.log_tail()
    files = [p for p in keys.rglob("*") if p.is_file()]
    assert files, "no key file written"
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, (path, oct(path.stat().st_mode))


def _connect_as(uid: int, path: Path) -> str:
    """Try a ``stats`` request as UID (a forked child that drops to it)."""
    code = (
        "import json, os, socket, sys\n"
        f"os.setgroups([]); os.setgid({uid}); os.setuid({uid})\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        "try:\n"
        f"    s.connect({str(path)!r})\n"
        "except OSError as e:\n"
        "    print('connect-refused', e.errno); sys.exit(0)\n"
        "try:\n"
        '    s.sendall(b\'{"command": "stats", "args": {}}\\n\')\n'
        "except BrokenPipeError:\n"
        "    pass  # refused before the request: the answer is already waiting\n"
        "print(s.recv(65536).decode().strip())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=30)  # fmt: skip
    return result.stdout.strip() + result.stderr.strip()


@pytest.mark.timeout(60)
def test_control_socket_refuses_other_users(hosts: Hosts) -> None:
    gw = hosts.gw()
    # Let others reach the directory: only the socket's own protection is left.
    for directory in (hosts.workdir, gw.workdir):
        directory.chmod(0o755)
    path = gw.control_socket
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    answer = _connect_as(OTHER_UID, path)
    assert answer.startswith("connect-refused 13"), answer  # EACCES from the file mode
    # An administrator opens the mode by mistake: the credentials check still refuses.
    path.chmod(0o666)
    answer = _connect_as(OTHER_UID, path)
    assert json.loads(answer) == {"ok": False, "error": "permission denied"}, answer
    # Root is served, and the refusal was logged.
    assert gw.call("stats")["uptime"] >= 0
    # (as a console line even under --log-format json: see docs/hardening.md, findings)
    assert "control_peer_refused" in gw.log_text() and "uid=54321" in gw.log_text()


CAP_NET_BIND_SERVICE, CAP_NET_ADMIN, CAP_NET_RAW = 10, 12, 13


@pytest.mark.timeout(60)
def test_capabilities_dropped_after_start(hosts: Hosts) -> None:
    gw = hosts.gw()
    status = Path(f"/proc/{daemon_pid(gw)}/status").read_text()
    effective = int(next(line for line in status.splitlines() if line.startswith("CapEff:"))
                    .split()[1], 16)  # fmt: skip
    allowed = (1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW) | (1 << CAP_NET_BIND_SERVICE)
    assert effective & ~allowed == 0, f"CapEff {effective:#x}"
    # Capabilities are per thread: every thread has dropped them, including those started
    # at start-up (TSO's numpy import starts one of OpenBLAS). Wait for it if it comes.
    tasks = Path(f"/proc/{daemon_pid(gw)}/task")
    deadline = time.monotonic() + 5
    while len(list(tasks.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    for task in tasks.iterdir():
        try:
            task_status = (task / "status").read_text()
        except FileNotFoundError:
            continue  # a thread that ended meanwhile (tun-tso does)
        line = next(line for line in task_status.splitlines() if line.startswith("CapEff:"))
        assert int(line.split()[1], 16) & ~allowed == 0, f"thread {task.name}: {line}"
    assert any(e.get("event") == "capabilities dropped" for e in gw.log_events()), gw.log_tail()
    # The ip commands the daemon runs get no more than it has (the bounding set is cut).
    bounding = int(next(line for line in status.splitlines() if line.startswith("CapBnd:"))
                   .split()[1], 16)  # fmt: skip
    assert bounding & ~allowed == 0, f"CapBnd {bounding:#x}"
    # And the daemon still works without them.
    from tests.e2e.helpers import assert_ping

    peer = hosts.peer()
    peer.call("initiate", child="net", timeout=30)
    peer.wait_for_child("legit")
    assert_ping(hosts.peer_ns, PEER_INNER, GW_INNER, count=2)
