"""The ``[cluster]`` table (docs/cluster.md, docs/configuration.md).

``name`` names the cluster (members of one cluster share a Redis key prefix); ``member``
is this gateway as clients reach it (an address or an FQDN: what the other members put in
their REDIRECTs); ``store`` is ``redis://HOST:PORT/DB`` or ``unix:///PATH`` (a password,
if Redis wants one, is read from ``password_file``, never written in the configuration);
``policy`` one of none, round-robin, least-loaded, identity-hash; ``max_ike_sas`` the most
IKE SAs a member takes before placement sends clients elsewhere (0: no limit). Without a
store, ``members`` lists the gateways for round-robin and identity-hash (a single box needs
no Redis at all).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aioipsec.secretfile import SecretFileError, read_secret_file

POLICIES = ("none", "round-robin", "least-loaded", "identity-hash")


class ClusterSettingsError(ValueError):
    """One problem in ``[cluster]``: ``key`` names it, the message says what to do."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass
class ClusterSettings:
    name: str = "aioipsec"
    member: str = ""
    store: str | None = None
    password_file: str | None = None
    policy: str = "none"
    max_ike_sas: int = 0
    members: list[str] = field(default_factory=list)
    heartbeat: float = 1.0  # seconds between two publications of this member's state
    ttl: float = 3.0  # a member not heard from for this long is dead (its key expires)
    drain_rate: float = 20.0  # IKE SAs redirected per second while draining

    def check(self) -> None:
        """Raise ClusterSettingsError for the first inconsistent value."""
        from ikev2.redirect import GatewayIdentity

        if not self.member:
            raise ClusterSettingsError(
                "member", "[cluster] needs member: this gateway's address or FQDN as clients use it"
            )
        for key, value in [("member", self.member)] + [("members", m) for m in self.members]:
            try:
                GatewayIdentity.from_text(value)
            except ValueError as error:
                raise ClusterSettingsError(key, str(error)) from None
        if self.policy not in POLICIES:
            raise ClusterSettingsError(
                "policy", f"unknown policy {self.policy!r}: one of {', '.join(POLICIES)}"
            )
        if self.store is not None:
            store_address(self.store)
        elif self.policy == "least-loaded":
            raise ClusterSettingsError(
                "policy",
                'least-loaded needs the members\' load: set store = "redis://..." '
                "(or use round-robin / identity-hash with a static members list)",
            )
        if self.store is None and self.policy != "none" and self.member not in self.members:
            raise ClusterSettingsError(
                "members", f"members must list this gateway too ({self.member})"
            )
        if self.ttl <= self.heartbeat:
            raise ClusterSettingsError("ttl", "ttl must be longer than heartbeat")
        if self.max_ike_sas < 0 or self.drain_rate <= 0:
            raise ClusterSettingsError(
                "max_ike_sas" if self.max_ike_sas < 0 else "drain_rate",
                "max_ike_sas must be 0 (no limit) or more; drain_rate more than 0",
            )

    def password(self) -> str | None:
        """The Redis password from ``password_file`` (first line), or None."""
        if self.password_file is None:
            return None
        try:
            text = read_secret_file(Path(self.password_file), "the Redis password").decode()
        except SecretFileError as error:
            raise ClusterSettingsError("password_file", str(error)) from None
        return text.splitlines()[0] if text.strip() else None


def store_address(store: str) -> dict[str, Any]:
    """redis-py connection keywords for ``store``; ClusterSettingsError when malformed."""
    parts = urlsplit(store)
    if parts.scheme == "unix":
        if not parts.path:
            raise ClusterSettingsError("store", "unix:///PATH needs the socket's path")
        return {"unix_socket_path": parts.path}
    if parts.scheme == "redis":
        if parts.password is not None:
            raise ClusterSettingsError(
                "store", "no password in the store URL: put it in password_file (mode 0600)"
            )
        try:
            db = int(parts.path.lstrip("/") or 0)
            port = parts.port or 6379
        except ValueError:
            raise ClusterSettingsError(
                "store", f"{store!r}: write redis://HOST:PORT/DB with a numeric port and DB"
            ) from None
        if not parts.hostname:
            raise ClusterSettingsError("store", f"{store!r}: redis://HOST:PORT/DB needs a host")
        return {"host": parts.hostname, "port": port, "db": db}
    raise ClusterSettingsError(
        "store", f"{store!r}: the store is redis://HOST:PORT/DB or unix:///PATH"
    )
