"""Operating one daemon as an administrator does (issue 21): log rotation, a second daemon
started by mistake, doctor next to a running daemon.

One namespace, one real daemon started the way docs/daemon.md says
(``aioipsec daemon --foreground --log-file FILE -c FILE``), then:

* log rotation: the log file is 0600; after ``mv`` and SIGHUP, after ``mv`` and
  ``aioipsec reopen-logs``, and after logrotate with the shipped example
  (aioipsec/examples/aioipsec.logrotate), new lines go to a new file at the old path;
* ``aioipsec doctor`` says UDP 500/4500 are held by the aioipsec daemon (not FAIL);
* a second daemon on the same ports fails naming the process that holds them;
* a second daemon started detached with other ports but the same control socket reports
  failure (exit 1), although the first daemon answers on that socket: the answer must
  come from its own child.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .helpers import REPO, Side, requirements_or_skip, toml_config

pytestmark = [pytest.mark.netns]

GW = Side(
    name="ops",
    outer="192.168.71.1",
    inner="10.1.0.1",
    subnet="10.1.0.0/24",
    peer_outer="192.168.71.2",
    peer_subnet="10.2.0.0/24",
    local_id="gw.example",
    remote_id="peer.example",
)


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def text_of(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


@pytest.mark.timeout(90)
def test_log_rotation_second_daemon_and_doctor(lab, workdir):
    requirements_or_skip("ss", "logrotate")
    gw = lab.namespace("gw")
    other = lab.namespace("peer")
    lab.veth(gw, f"{GW.outer}/24", other, f"{GW.peer_outer}/24")
    config = toml_config(GW, workdir)
    log_file = workdir / "log" / "aioipsec.log"

    def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        argv = gw.exec_argv([sys.executable, "-m", "aioipsec", *args])
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              check=False, cwd=REPO)  # fmt: skip

    daemon = lab.start(
        gw,
        [sys.executable, "-m", "aioipsec", "daemon", "--foreground", "--log-file",
         str(log_file), "-c", str(config)],
        log=workdir / "stderr.log", cwd=REPO,
    )  # fmt: skip
    assert wait_for(lambda: "daemon started" in text_of(log_file), 30), (
        text_of(log_file) + daemon.log_text()
    )
    assert log_file.stat().st_mode & 0o777 == 0o600, oct(log_file.stat().st_mode)
    socket_path = str(workdir / "control.sock")

    # --- log rotation: mv + SIGHUP, then mv + reopen-logs --------------------------------
    log_file.rename(log_file.with_suffix(".log.1"))
    os.kill(daemon.pid, signal.SIGHUP)
    assert wait_for(lambda: "log file reopened" in text_of(log_file)), daemon.log_text()
    assert log_file.stat().st_mode & 0o777 == 0o600
    assert "configuration reloaded" in text_of(log_file) + text_of(log_file.with_suffix(".log.1"))
    log_file.rename(log_file.with_suffix(".log.2"))
    result = cli("reopen-logs", "--socket", socket_path)
    assert result.returncode == 0, result.stderr
    assert f"log file {log_file} reopened" in result.stdout
    assert "log file reopened" in text_of(log_file)
    rotated = text_of(log_file.with_suffix(".log.2"))
    cli("stats", "--socket", socket_path)  # something to log after the rotation
    assert text_of(log_file.with_suffix(".log.2")) == rotated, "the moved file still grows"

    # --- the shipped logrotate example, run by logrotate itself ---------------------------
    example = (REPO / "aioipsec" / "examples" / "aioipsec.logrotate").read_text()
    assert "/var/log/aioipsec.log {" in example and "aioipsec reopen-logs" in example
    rotate = workdir / "logrotate.conf"
    rotate.write_text(
        example.replace("/var/log/aioipsec.log", str(log_file)).replace(
            "aioipsec reopen-logs",
            f"{sys.executable} -m aioipsec reopen-logs --socket {socket_path}",
        )
    )
    before = text_of(log_file)
    result = subprocess.run(
        ["logrotate", "-f", "-s", str(workdir / "logrotate.state"), str(rotate)],
        capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert text_of(Path(f"{log_file}.1")) == before  # moved (compressed at the next run)
    assert wait_for(lambda: "log file reopened" in text_of(log_file)), result.stderr
    assert log_file.stat().st_mode & 0o777 == 0o600

    # --- doctor recognises our own daemon on 500/4500 ---------------------------------------
    result = cli("doctor", "--json")
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    for port in ("udp-500", "udp-4500"):
        assert checks[port]["status"] == "OK", checks[port]
        assert f"aioipsec daemon (pid {daemon.pid})" in checks[port]["detail"], checks[port]

    # --- a second daemon on the same ports: the error names who holds them -------------------
    (workdir / "second").mkdir()
    second = toml_config(GW, workdir / "second")
    second.write_text(second.read_text().replace('"ipsec0"', '"ipsec1"'))
    result = cli("daemon", "--foreground", "-c", str(second))
    assert result.returncode != 0
    assert "port 500 is already in use (held by aioipsec daemon pid " in result.stderr, (
        result.stderr
    )
    assert f"pid {daemon.pid})" in result.stderr and "set ike_port" in result.stderr

    # --- a detached daemon whose control socket another daemon answers: not a success -------
    third_dir = workdir / "third"
    third_dir.mkdir()
    third = toml_config(GW, third_dir, daemon_options={"ike_port": 1500, "nat_t_port": 5500})
    text = third.read_text().replace(str(third_dir / "control.sock"), socket_path)
    third.write_text(text.replace('"ipsec0"', '"ipsec2"'))
    result = cli("daemon", "-c", str(third), "--log-file", str(third_dir / "third.log"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "daemon running" not in result.stdout
    assert f"another daemon (pid {daemon.pid}) already answers on {socket_path}" in (
        result.stderr
    ), result.stderr
    # ... and the first daemon is untouched.
    assert cli("stats", "--socket", socket_path).returncode == 0
    assert daemon.stop() == 0
