"""Shared pieces of the end-to-end tests: configs, our daemon in a namespace, checks.

Every test builds its own :class:`aioipsec.netns.Lab` (namespaces named after the test's pid,
removed on exit, also on failure) and starts our daemon as a separate process with
``python -m aioipsec.daemon`` inside a namespace, exactly as a user would run it.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aioipsec.netns import BackgroundProcess, Lab, Namespace
from tests.components import require_component

REPO = Path(__file__).resolve().parents[2]
PSK = "e2e-secret-not-for-production-0123456789"


def requirements_or_skip(*tools: str) -> None:
    """Root with namespaces and TUN, plus the named components (tests/components.py):
    skipped when one is missing, a failure under CI=true."""
    require_component("root", "tun", "ip", *tools)


@dataclass
class Side:
    """One peer of a site-to-site tunnel."""

    name: str  # connection name
    outer: str  # outer address (veth)
    inner: str  # an address inside the protected subnet, ours
    subnet: str  # local_ts
    peer_outer: str
    peer_subnet: str
    local_id: str
    remote_id: str


def toml_config(
    side: Side,
    workdir: Path,
    *,
    start_action: str = "none",
    encap: bool = False,
    child_options: dict[str, Any] | None = None,
    connection_options: dict[str, Any] | None = None,
    psk: str = PSK,
    remote_addrs: str | None = None,
    auth: str = "psk",
    certs: dict[str, str] | None = None,
    daemon_options: dict[str, Any] | None = None,
) -> Path:
    """Write an aioipsec TOML file for SIDE (PSK by default) and return its path."""
    child_lines = [
        f'local_ts = ["{side.subnet}"]',
        f'remote_ts = ["{side.peer_subnet}"]',
        'esp_proposals = ["aes256gcm16"]',
        f'start_action = "{start_action}"',
    ]
    for key, value in (child_options or {}).items():
        child_lines.append(f"{key} = {json.dumps(value)}")
    connection_lines = [
        f'local_addrs = ["{side.outer}"]',
        f'remote_addrs = ["{remote_addrs or side.peer_outer}"]',
        'proposals = ["aes256gcm16-prfsha256-x25519"]',
        f"encap = {'true' if encap else 'false'}",
    ]
    for key, value in (connection_options or {}).items():
        connection_lines.append(f"{key} = {json.dumps(value)}")
    if auth == "psk":
        local_auth = f'auth = "psk"\nid = "{side.local_id}"'
        remote_auth = f'auth = "psk"\nid = "{side.remote_id}"'
        secrets = (
            f"[secrets.ike-{side.name}]\n"
            f'id-local = "{side.local_id}"\nid-remote = "{side.remote_id}"\n'
            f'secret = "{psk}"\n'
        )
    else:
        assert certs is not None
        local_auth = f'auth = "pubkey"\nid = "{side.local_id}"\ncerts = ["{certs["cert"]}"]'
        remote_auth = f'auth = "pubkey"\nid = "{side.remote_id}"\ncacerts = ["{certs["ca"]}"]'
        secrets = f'[secrets.private-{side.name}]\nfile = "{certs["key"]}"\n'
    daemon_lines = "".join(
        f"{key} = {json.dumps(value)}\n" for key, value in (daemon_options or {}).items()
    )
    text = f"""# written by tests/e2e for {side.name}
[daemon]
control_socket = "{workdir / "control.sock"}"
tun_name = "ipsec0"
{daemon_lines}
[connections.{side.name}]
{chr(10).join(connection_lines)}

[connections.{side.name}.local]
{local_auth}

[connections.{side.name}.remote]
{remote_auth}

[connections.{side.name}.children.net]
{chr(10).join(child_lines)}

{secrets}"""
    path = workdir / f"{side.name}.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


@dataclass
class OurDaemon:
    """``python -m aioipsec.daemon`` running in a namespace."""

    lab: Lab
    namespace: Namespace
    config: Path
    workdir: Path
    extra_args: list[str] = field(default_factory=list)
    process: BackgroundProcess | None = None
    log_path: Path | None = None

    @property
    def control_socket(self) -> Path:
        return self.workdir / "control.sock"

    def start(self, timeout: float = 30.0) -> None:
        self.log_path = self.workdir / f"daemon-{int(time.time() * 1000)}.log"
        argv = [
            sys.executable,
            "-u",
            "-m",
            "aioipsec.daemon",
            "-c",
            str(self.config),
            "--log-format",
            "json",
            "--log-level",
            "debug",
            *self.extra_args,
        ]
        self.process = self.lab.start(
            self.namespace, argv, log=self.log_path, cwd=REPO, env={"PYTHONPATH": str(REPO)}
        )
        if not self.process.wait_for_log('"daemon started"', timeout=timeout):
            text = self.process.log_text()
            self.stop()
            raise AssertionError(f"daemon did not start:\n{text[-4000:]}")

    def call(self, command: str, timeout: float = 30.0, **args: Any) -> Any:
        """One request on the control socket (newline-delimited JSON)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.control_socket))
            sock.sendall(json.dumps({"command": command, "args": args}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        response = json.loads(data)
        if not response.get("ok"):
            raise AssertionError(f"{command} failed: {response.get('error')}\n{self.log_tail()}")
        return response["result"]

    def sas(self) -> dict[str, Any]:
        """``list-sas`` merged into {connection: ike_sa}."""
        merged: dict[str, Any] = {}
        for entry in self.call("sas"):
            merged.update(entry)
        return merged

    def wait_for_child(self, connection: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            last = self.sas().get(connection, {})
            children = last.get("child-sas") or {}
            if last.get("state") == "ESTABLISHED" and children:
                return last
            time.sleep(0.1)
        raise AssertionError(
            f"no CHILD SA for {connection} after {timeout} s: {last}\n{self.log_tail()}"
        )

    def log_text(self) -> str:
        return self.process.log_text() if self.process else ""

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.log_text().splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
        return events

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.process is None:
            return None
        code = self.process.stop(sig, timeout=timeout)
        return code

    def kill(self) -> None:
        if self.process is not None:
            self.process.stop(signal.SIGKILL)


def ping(
    namespace: Namespace, source: str, destination: str, count: int = 3, extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """A few pings (bounded: count packets, 1 s deadline each)."""
    return namespace.run(
        "ping", "-n", "-c", str(count), "-i", "0.2", "-W", "2", "-I", source, *extra,
        destination, check=False, timeout=30,
    )  # fmt: skip


def assert_ping(namespace: Namespace, source: str, destination: str, count: int = 3) -> str:
    result = ping(namespace, source, destination, count)
    assert result.returncode == 0, f"ping {source} -> {destination} failed:\n{result.stdout}"
    return result.stdout


def child_of(ike_sa: dict[str, Any]) -> dict[str, Any]:
    children = list((ike_sa.get("child-sas") or {}).values())
    assert children, f"no CHILD SA in {ike_sa}"
    return children[0]
