"""Our daemon as an interop peer (the default ``aioipsec_factory`` of ``peers.make_peer``).

It is driven exactly as a user drives it: ``python -m aioipsec.daemon`` in the namespace with a
small TOML file for the ``[daemon]`` table and the scenario's swanctl.conf (the very text the
harness writes for charon) through ``--swanctl-conf``; commands over the control socket
(``initiate``, ``sas`` in VICI list-sas vocabulary).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from aioipsec.interop.scenario import Scenario, Side
from aioipsec.netns import BackgroundProcess, Lab, Namespace

REPO = Path(__file__).resolve().parents[2]


class AioipsecPeer:
    implementation = "aioipsec"

    def __init__(
        self,
        lab: Lab,
        namespace: Namespace,
        workdir: Path,
        *,
        keep_alive: float | None = None,
        extra_toml: str = "",
    ) -> None:
        self.lab = lab
        self.namespace = namespace
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.control_socket = self.workdir / "control.sock"
        self.toml_path = self.workdir / "daemon.toml"
        self.swanctl_path = self.workdir / "swanctl.conf"
        self.log_path = self.workdir / "daemon.log"
        self.keep_alive = keep_alive
        self.extra_toml = extra_toml  # after the [daemon] keys: more of them, or [cluster]
        self.process: BackgroundProcess | None = None
        # More environment for the daemon (a token peer: SOFTHSM2_CONF).
        self.env: dict[str, str] = {}

    def start(self) -> None:
        """Nothing to do yet: the daemon reads its whole configuration at start (load())."""

    def daemon_table(self) -> str:
        """The TOML file's text: the [daemon] table (connections come from swanctl.conf)."""
        return (
            "# written by aioipsec.interop.ours\n"
            "[daemon]\n"
            f'control_socket = "{self.control_socket}"\n'
            'tun_name = "ipsec0"\n'
            # charon's retransmission settings in the harness (charon.py): 1 s, x1.4, 3 tries,
            # so both implementations give up (and DPD notices a dead peer) alike.
            "retransmit_timeout = 1.0\nretransmit_base = 1.4\nretransmit_tries = 3\n"
            + (f"keep_alive = {self.keep_alive}\n" if self.keep_alive is not None else "")
            + self.extra_toml
        )

    def daemon_argv(self) -> list[str]:
        """The daemon's command line."""
        return [
            sys.executable,
            "-u",
            "-m",
            "aioipsec.daemon",
            "-c",
            str(self.toml_path),
            "--swanctl-conf",
            str(self.swanctl_path),
            "--log-format",
            "json",
            "--log-level",
            "debug",
            # Session keys as Wireshark tables next to the log, so the capture a failing row
            # keeps can be decrypted (the work directory is removed when the row passes).
            "--save-keys",
            str(self.workdir / "keys"),
        ]

    def load(self, swanctl_conf_text: str, timeout: float = 30.0) -> None:
        self.toml_path.write_text(self.daemon_table())
        self.swanctl_path.write_text(swanctl_conf_text)
        self.swanctl_path.chmod(0o600)  # it holds the PSK
        self.toml_path.chmod(0o600)
        argv = self.daemon_argv()
        self.process = self.lab.start(
            self.namespace,
            argv,
            log=self.log_path,
            cwd=REPO,
            env={"PYTHONPATH": str(REPO), **self.env},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.process.running():
                raise RuntimeError(f"aioipsec daemon exited:\n{self.log_tail()}")
            if self.control_socket.exists():
                try:
                    self.call("stats", timeout=2.0)
                    return
                except Exception:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"aioipsec daemon did not answer within {timeout} s:\n{self.log_tail()}")

    def call(self, command: str, timeout: float = 30.0, **args: Any) -> Any:
        from aioipsec.control import ControlClient

        with ControlClient(self.control_socket, timeout=timeout) as client:
            return client.call(command, **args)

    def initiate(self, child: str, ike: str) -> None:
        self.call("initiate", child=child, ike=ike, timeout=30.0)

    def list_sas(self) -> dict[str, dict[str, Any]]:
        merged: dict[str, dict[str, Any]] = {}
        for entry in self.call("sas"):
            merged.update(entry)
        return merged

    def rekey(self, *, ike: str, child: str | None = None) -> None:
        if child is not None:
            self.call("rekey", ike=ike, child=child)
        else:
            self.call("rekey", ike=ike)

    def terminate(self, ike: str) -> None:
        self.call("terminate", ike=ike)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=10.0)
            self.process = None


def aioipsec_peer(
    lab: Lab, namespace: Namespace, workdir: Path, scenario: Scenario, side: Side
) -> AioipsecPeer:
    """The harness's peer factory for ``"aioipsec"`` sides."""
    # Everything else the daemon needs is in the swanctl.conf given to load().
    del side
    return AioipsecPeer(lab, namespace, workdir, keep_alive=scenario.keep_alive)
