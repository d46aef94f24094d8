"""aioipsec as a user installs it: the wheel, in a fresh virtual environment outside the
checkout, run from another folder (issue: `pip install .` gave a selftest with 0 vectors and a
daemon that exits at once, because the vectors were not package data).

The wheel is built from a copy of the packaged sources (so nothing of the checkout leaks in),
installed with its dependencies by pip from the configured index, and checked: the selftest
passes, and the daemon starts (in a network namespace of its own) and stops cleanly.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.components import require_component

REPO = Path(__file__).resolve().parents[1]
PACKAGED = ("pyproject.toml", "README.md", "ikev2", "esp", "nat_t", "tun", "aioipsec")

pytestmark = pytest.mark.timeout(300)


@dataclass(frozen=True)
class Installed:
    bin: Path  # the venv's bin/
    elsewhere: Path  # a folder outside the checkout to run from
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / "aioipsec"), *args],
            cwd=self.elsewhere,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def _run(*command: str | Path, cwd: Path) -> None:
    done = subprocess.run(
        [str(part) for part in command], cwd=cwd, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, f"{command}:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"
    source.mkdir()
    for name in PACKAGED:
        origin = REPO / name
        if origin.is_dir():
            shutil.copytree(
                origin, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        else:
            shutil.copy2(origin, source / name)
    dist = base / "dist"
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", dist, source, cwd=base)
    (wheel,) = dist.glob("aioipsec-*.whl")
    venv = base / "venv"
    # A venv without its own pip (ensurepip costs seconds): the checkout's pip installs
    # into it (--python), the wheel and its dependencies, as pip in the venv would.
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=base)
    _run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q",
         wheel, cwd=base)  # fmt: skip
    elsewhere = base / "elsewhere"
    elsewhere.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    yield Installed(venv / "bin", elsewhere, env)


def test_installed_package_is_the_wheel_not_the_checkout(installed: Installed) -> None:
    where = subprocess.run(
        [str(installed.bin / "python"), "-c", "import aioipsec, esp; print(aioipsec.__file__)"],
        cwd=installed.elsewhere,
        env=installed.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert where.returncode == 0, where.stderr
    assert "site-packages" in where.stdout and str(REPO) not in where.stdout


def test_installed_selftest_passes_from_another_folder(installed: Installed) -> None:
    result = installed.run("selftest")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "selftest OK" in result.stdout
    assert " 0 failed" in result.stdout
    assert "esp" in result.stdout  # the ESP packet vectors ran too


_CONFIG = """\
# written by tests/test_installed_wheel.py
[daemon]
control_socket = "{socket}"
tun_name = "ipsec0"

[connections.site]
local_addrs = ["127.0.0.1"]
remote_addrs = ["127.0.0.2"]
proposals = ["aes256gcm16-prfsha256-x25519"]

[connections.site.local]
auth = "psk"
id = "left.example"

[connections.site.remote]
auth = "psk"
id = "right.example"

[connections.site.children.net]
local_ts = ["10.1.0.0/24"]
remote_ts = ["10.2.0.0/24"]
esp_proposals = ["aes256gcm16"]
start_action = "none"

[secrets.ike-site]
id = ["left.example", "right.example"]
secret = "installed-wheel-test-key-not-for-production"
"""


def test_installed_daemon_starts_and_stops(installed: Installed) -> None:
    """In a network namespace of its own (unshare --net): UDP 500/4500 and the TUN device
    do not meet any other daemon on this machine."""
    require_component("root", "tun", "unshare", "ip")
    socket = installed.elsewhere / "ctl.sock"
    config = installed.elsewhere / "site.toml"
    config.write_text(_CONFIG.format(socket=socket))
    config.chmod(0o600)
    log = installed.elsewhere / "daemon.log"
    script = (
        f"ip link set lo up && exec {installed.bin / 'aioipsec'} daemon -c {config} --foreground"
    )
    with log.open("w") as log_file:
        daemon = subprocess.Popen(
            ["unshare", "--net", "sh", "-c", script],
            cwd=installed.elsewhere,
            env=installed.env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        answered = None
        while time.monotonic() < deadline and daemon.poll() is None:
            answered = installed.run("--socket", str(socket), "conns", timeout=30)
            if answered.returncode == 0:
                break
            time.sleep(0.3)
        assert daemon.poll() is None, f"the daemon exited:\n{log.read_text()}"
        assert answered is not None and answered.returncode == 0, log.read_text()
        assert "site" in answered.stdout
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0, log.read_text()
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(timeout=10)
    assert not socket.exists()
    assert "self-test passed" in log.read_text()
