"""The ``[radius]`` table of the daemon configuration (docs/configuration.md).

strongSwan keeps these in strongswan.conf (``charon.plugins.eap-radius.servers...``);
aioipsec in its TOML daemon configuration::

    [radius]
    servers = ["192.0.2.10", "192.0.2.11:1812"]   # tried in this order (fail-over)
    secret_file = "/etc/aioipsec/radius.secret"    # the shared secret, first line, mode 0600
    nas_identifier = "aioipsec"                     # NAS-Identifier (RFC 2865 sec. 5.32)
    timeout = "2s"                                  # wait for an answer, per try
    tries = 3                                       # sends per server before the next one
    class_group = true                              # Class attributes are groups

The secret is never written in the configuration itself (it would show in listings and
backups): it is read from ``secret_file``, which must not be readable by group or others.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from aioipsec.secretfile import SecretFileError, read_secret_file

DEFAULT_PORT = 1812  # RFC 2865 sec. 3, IANA "radius"


class RadiusSettingsError(ValueError):
    """One problem in ``[radius]``: ``key`` names it, the message says what to do."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class RadiusServer:
    host: str
    port: int = DEFAULT_PORT

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass
class RadiusSettings:
    servers: list[str] = field(default_factory=list)
    secret_file: str | None = None
    nas_identifier: str = "aioipsec"
    timeout: float = 2.0
    tries: int = 3
    # strongSwan's eap-radius class_group (its default is no): Class attributes of the
    # Access-Accept are the peer's groups, checked against remote.groups.
    class_group: bool = True
    secret: bytes = field(default=b"", repr=False)

    def check(self) -> None:
        """Parse the servers and read the secret; RadiusSettingsError for the first problem."""
        if not self.servers:
            raise RadiusSettingsError(
                "servers", "[radius] needs servers: the RADIUS servers' addresses, in order"
            )
        for text in self.servers:
            parse_server(text)
        if self.secret_file is None:
            raise RadiusSettingsError(
                "secret_file",
                "[radius] needs secret_file: a file (mode 0600) whose first line is the "
                "secret shared with the RADIUS servers",
            )
        self.secret = read_secret(Path(self.secret_file))

    def parsed_servers(self) -> list[RadiusServer]:
        return [parse_server(text) for text in self.servers]


def parse_server(text: str) -> RadiusServer:
    """``ADDRESS``, ``ADDRESS:PORT`` or ``[IPv6]:PORT`` (an address: the daemon does not
    resolve names at each request)."""
    host, port = text.strip(), DEFAULT_PORT
    if host.startswith("["):
        host, _, rest = host[1:].partition("]")
        if rest:
            port = _port(text, rest.removeprefix(":"))
    elif host.count(":") == 1:
        host, _, rest = host.partition(":")
        port = _port(text, rest)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise RadiusSettingsError(
            "servers", f"RADIUS server {text!r} is not an IP address (with an optional :port)"
        ) from None
    return RadiusServer(host, port)


def _port(text: str, value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise RadiusSettingsError("servers", f"RADIUS server {text!r}: bad port {value!r}")
    return int(value)


def read_secret(path: Path) -> bytes:
    """The first line of ``path``; refused when group or others may read the file."""
    try:
        data = read_secret_file(path, "the RADIUS secret")
    except SecretFileError as error:
        raise RadiusSettingsError("secret_file", str(error)) from None
    secret = data.split(b"\n", 1)[0].strip()
    if not secret:
        raise RadiusSettingsError("secret_file", f"the RADIUS secret file {path} is empty")
    return secret
