"""A real strongSwan charon in a network namespace, driven through swanctl and VICI.

This follows docs/daemon.md ("strongSwan's charon beside aioipsec"): without ESP in the
kernel, charon runs its userspace ESP (the ``kernel-libipsec`` plugin: TUN device
``ipsec0``, ESP always in UDP on port 4500); each charon gets its own ``strongswan.conf``
through ``STRONGSWAN_CONF``, a private mount namespace with a tmpfs on ``/run`` (for its
pid file), its VICI socket and log in
a work directory, and an explicit plugin list::

    with Lab("x") as lab:
        ns = lab.namespace("sun")
        charon = Charon(lab, ns, workdir)           # workdir: a temporary directory
        charon.start()
        charon.load(swanctl_conf_text)             # swanctl --load-all --file ...
        charon.initiate("net")                     # swanctl --initiate --child net
        sas = charon.list_sas()                    # VICI list-sas, decoded to str
        charon.stop()                              # also done by lab.close()

The log is ``workdir/charon.log``; ``key_debug=True`` raises ``ike``/``enc`` to level 4 so that
charon prints the derived keys (for debugging a key-derivation mismatch; never in CI logs that
leave the machine).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import vici

from aioipsec.netns import BackgroundProcess, Lab, Namespace, NetnsError

CHARON_BINARY = "/usr/lib/ipsec/charon"
SWANCTL_BINARY = "swanctl"

# Everything PSK and certificate scenarios need, userspace ESP, and the control socket.
DEFAULT_CHARON_PLUGINS = (
    "random nonce openssl aes sha1 sha2 hmac gcm ccm ctr chapoly cmac xcbc x509 pem pkcs1 pkcs8 "
    "pubkey curve25519 gmp mgf1 kdf constraints revocation kernel-libipsec kernel-netlink "
    "socket-default vici updown"
)
SWANCTL_CREDENTIAL_DIRS = (
    "x509",
    "x509ca",
    "x509ocsp",
    "x509aa",
    "x509ac",
    "x509crl",
    "pubkey",
    "private",
    "rsa",
    "ecdsa",
    "bliss",
    "pkcs8",
    "pkcs12",
)
DEFAULT_SWANCTL_PLUGINS = "random nonce openssl pem pkcs1 pkcs8 x509 pubkey"


class CharonError(NetnsError):
    """charon did not start, or a swanctl/VICI command failed; the message quotes charon."""


def strongswan_conf(
    *,
    vici_socket: Path,
    log_path: Path,
    plugins: str = DEFAULT_CHARON_PLUGINS,
    ike_log_level: int = 2,
    key_debug: bool = False,
    extra_charon_settings: str = "",
) -> str:
    """strongswan.conf text: one setting per line (a value runs to the end of its line)."""
    key_levels = "\n                ike = 4\n                enc = 4" if key_debug else ""
    ike_level = "" if key_debug else f"\n                ike = {ike_log_level}"
    return f"""# written by aioipsec.interop.charon
charon {{
    load_modular = no
    load = {plugins}
    # kernel-libipsec: userspace ESP on the TUN device ipsec0 (no ESP in this kernel)
    install_routes = yes
    retransmit_tries = 3
    retransmit_timeout = 1.0
    retransmit_base = 1.4
    plugins {{
        vici {{
            socket = unix://{vici_socket}
        }}
    }}
    filelog {{
        aioipsec {{
            path = {log_path}
            time_format = %H:%M:%S
            ike_name = yes
            flush_line = yes
            append = yes
            default = 1{ike_level}{key_levels}
            cfg = 2
            knl = 1
            net = 1
            esp = 1
        }}
    }}
    syslog {{
        daemon {{
            default = -1
        }}
    }}
{extra_charon_settings}}}

swanctl {{
    load = {DEFAULT_SWANCTL_PLUGINS}
}}
"""


def _decode(value: Any) -> Any:
    """VICI answers carry bytes; turn them (recursively) into str."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, Mapping):
        return {_decode(k): _decode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_decode(v) for v in value]
    return value


class Charon:
    """One charon process in NAMESPACE, with its files in WORKDIR."""

    def __init__(
        self,
        lab: Lab,
        namespace: Namespace,
        workdir: str | os.PathLike[str],
        *,
        plugins: str = DEFAULT_CHARON_PLUGINS,
        ike_log_level: int = 2,
        key_debug: bool = False,
        extra_charon_settings: str = "",
    ) -> None:
        self.lab = lab
        self.namespace = namespace
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Keep the socket path short: sun_path holds 107 octets.
        self.vici_socket = self.workdir / "charon.vici"
        self.log_path = self.workdir / "charon.log"
        self.conf_path = self.workdir / "strongswan.conf"
        self.swanctl_conf_path = self.workdir / "swanctl.conf"
        self.conf_path.write_text(
            strongswan_conf(
                vici_socket=self.vici_socket,
                log_path=self.log_path,
                plugins=plugins,
                ike_log_level=ike_log_level,
                key_debug=key_debug,
                extra_charon_settings=extra_charon_settings,
            )
        )
        # swanctl --load-all looks for credentials in these folders next to swanctl.conf.
        for folder in SWANCTL_CREDENTIAL_DIRS:
            (self.workdir / folder).mkdir(exist_ok=True)
        self.process: BackgroundProcess | None = None

    @property
    def vici_uri(self) -> str:
        return f"unix://{self.vici_socket}"

    @property
    def env(self) -> dict[str, str]:
        return {"STRONGSWAN_CONF": str(self.conf_path)}

    def start(self, timeout: float = 15.0) -> None:
        """Start charon and wait until its VICI socket accepts connections."""
        if len(str(self.vici_socket)) > 100:
            raise CharonError(f"VICI socket path too long for AF_UNIX: {self.vici_socket}")
        with contextlib.suppress(FileNotFoundError):
            self.vici_socket.unlink()
        # A private mount namespace with its own /run: charon writes /run/charon.pid and would
        # refuse to start next to another charon's pid file.
        script = f"mount -t tmpfs tmpfs /run && exec {shlex.quote(CHARON_BINARY)}"
        self.process = self.lab.start(
            self.namespace,
            ["unshare", "-m", "sh", "-c", script],
            log=self.workdir / "charon.stdout.log",
            env=self.env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.process.running():
                raise CharonError(
                    f"charon exited with {self.process.popen.returncode}: "
                    f"{self.process.log_text().strip()} {self.log_tail()}"
                )
            if self.vici_socket.exists():
                try:
                    with self.session():
                        return
                except OSError:
                    pass
            time.sleep(0.02)
        raise CharonError(f"charon's VICI socket did not appear within {timeout} s")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def running(self) -> bool:
        return self.process is not None and self.process.running()

    @contextlib.contextmanager
    def session(self, timeout: float = 30.0) -> Iterator[vici.Session]:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(str(self.vici_socket))
            yield vici.Session(sock)
        finally:
            sock.close()

    # --- swanctl -------------------------------------------------------------------------------

    def swanctl(self, *args: str, check: bool = True, timeout: float = 30.0) -> str:
        """Run ``swanctl --uri <our socket> ARGS`` (from the root namespace: VICI is a file)."""
        argv = [SWANCTL_BINARY, *args[:1], "--uri", self.vici_uri, *args[1:]]
        environment = dict(os.environ)
        environment.update(self.env)
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=environment, check=False
        )
        if check and result.returncode != 0:
            raise CharonError(
                f"{shlex.join(argv)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
                f"\n--- charon.log tail ---\n{self.log_tail()}"
            )
        return result.stdout + result.stderr

    def load(self, swanctl_conf: str) -> str:
        """Write swanctl.conf into the work directory and load everything in it."""
        self.swanctl_conf_path.write_text(swanctl_conf)
        self.swanctl_conf_path.chmod(0o600)  # it holds the PSK
        return self.swanctl("--load-all", "--file", str(self.swanctl_conf_path))

    def initiate(self, child: str, ike: str | None = None, timeout: int = 20) -> str:
        args = ["--initiate", "--child", child, "--timeout", str(timeout)]
        if ike is not None:
            args += ["--ike", ike]
        return self.swanctl(*args, timeout=timeout + 5)

    def terminate(self, ike: str, timeout: int = 10, force: bool = False) -> str:
        args = ["--terminate", "--ike", ike, "--timeout", str(timeout)]
        if force:
            args.append("--force")
        return self.swanctl(*args, timeout=timeout + 5, check=False)

    # --- VICI queries --------------------------------------------------------------------------

    def list_sas(self, ike: str | None = None) -> dict[str, dict[str, Any]]:
        """VICI ``list-sas``: {ike_sa_name: attributes} with str values."""
        request = {"ike": ike} if ike else {}
        merged: dict[str, dict[str, Any]] = {}
        with self.session() as session:
            for entry in session.list_sas(request):
                merged.update(_decode(entry))
        return merged

    def list_conns(self) -> dict[str, dict[str, Any]]:
        merged: dict[str, dict[str, Any]] = {}
        with self.session() as session:
            for entry in session.list_conns():
                merged.update(_decode(entry))
        return merged

    def wait_for_sa(
        self, ike: str, state: str = "ESTABLISHED", timeout: float = 10.0
    ) -> dict[str, Any]:
        """Poll list-sas until the IKE SA named IKE reaches STATE (and has a Child SA)."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            last = self.list_sas(ike).get(ike, {})
            children = last.get("child-sas", {})
            if last.get("state") == state and any(
                c.get("state") == "INSTALLED" for c in children.values()
            ):
                return last
            time.sleep(0.05)
        raise CharonError(f"IKE SA {ike} not {state} after {timeout} s: {last}")

    def stats(self) -> dict[str, Any]:
        with self.session() as session:
            return _decode(session.stats())

    def version(self) -> dict[str, Any]:
        with self.session() as session:
            return _decode(session.version())

    # --- logs ----------------------------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


def child_sas(ike_sa: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The Child SAs of a list-sas IKE SA entry (their keys are 'name-uniqueid')."""
    return list(ike_sa.get("child-sas", {}).values())


def swanctl_section(
    name: str, body: Mapping[str, Any] | Sequence[tuple[str, Any]], indent: int = 0
) -> str:
    """Render one swanctl.conf section: one ``key = value`` per line, nested mappings as
    sections, lists joined with commas (strongSwan's settings syntax)."""
    pad = "    " * indent
    lines = [f"{pad}{name} {{"]
    items = body.items() if isinstance(body, Mapping) else body
    for key, value in items:
        if isinstance(value, Mapping):
            lines.append(swanctl_section(key, value, indent + 1))
        else:
            if isinstance(value, list | tuple):
                rendered = ",".join(str(v) for v in value)
            elif isinstance(value, bool):
                rendered = "yes" if value else "no"
            else:
                rendered = str(value)
            if "\n" in rendered:
                raise ValueError(f"setting {key} contains a newline")
            lines.append(f"{pad}    {key} = {rendered}")
    lines.append(f"{pad}}}")
    return "\n".join(lines)
