"""Credentials: certificate and private key files, read and checked at load time.

Private key files must not be readable by group or others; every pubkey connection must
have the private key that matches its certificate, and a CA certificate to check the
peer's. Key objects are ``cryptography`` objects and are never logged.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from aioipsec.config.model import AuthSettings, ConfigError, Configuration, ConnectionSettings

# Where swanctl looks for files named relatively (relative to swanctl.conf's folder).
SWANCTL_FOLDERS = {
    "certs": "x509",
    "cacerts": "x509ca",
    "private": "private",
    "rsa": "rsa",
    "ecdsa": "ecdsa",
    "pkcs8": "pkcs8",
}


# --------------------------------------------------------------------------- credentials


def _check_key_file_mode(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist", hint="check the path") from None
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"private key file {path} is readable or writable by group/others "
            f"(mode {stat.S_IMODE(mode):04o})",
            hint=f"chmod 600 {path}",
        )


def load_private_key(path: Path, passphrase: bytes | None = None) -> Any:
    """A ``cryptography`` private key from a PEM or DER file with mode 0600 (or stricter)."""

    _check_key_file_mode(path)
    data = path.read_bytes()
    loaders = (
        (serialization.load_pem_private_key, serialization.load_der_private_key)
        if b"-----BEGIN" in data
        else (serialization.load_der_private_key,)
    )
    last_error: Exception | None = None
    for loader in loaders:
        try:
            return loader(data, password=passphrase)
        except (ValueError, TypeError) as error:
            last_error = error
    raise ConfigError(
        f"{path} is not a private key we can read ({last_error})",
        hint="give a PEM or DER key (PKCS#1, SEC1 or PKCS#8); a passphrase goes in secret",
    )


def load_certificate(path: Path) -> Any:
    """A ``cryptography`` X.509 certificate from a PEM or DER file."""

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"certificate {path} does not exist", hint="check the path") from None
    except OSError as error:
        raise ConfigError(f"cannot read certificate {path}: {error.strerror}") from None
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as error:
        raise ConfigError(f"{path} is not an X.509 certificate ({error})") from None


def _public_bytes(key: Any) -> bytes:

    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def check_credentials(configuration: Configuration) -> None:
    """Every named certificate readable; every pubkey connection has its private key."""
    for connection in configuration.connections.values():
        for side in ("local", "remote"):
            auth: AuthSettings = getattr(connection, side)
            for kind in ("certs", "cacerts"):
                for cert_path in getattr(auth, kind):
                    try:
                        load_certificate(cert_path)
                    except ConfigError as error:
                        raise ConfigError(
                            error.reason,
                            file=connection.source,
                            key=f"connections.{connection.name}.{side}.{kind}",
                            hint=error.hint,
                        ) from None
        if connection.local.auth == "pubkey":
            find_private_key(configuration, connection)
        remote = connection.remote
        if (
            remote.auth == "pubkey"
            and not remote.cacerts
            and not remote.certs
            and not configuration.authorities
        ):
            raise ConfigError(
                "auth = pubkey for the peer, but no CA certificate to check its certificate",
                file=connection.source,
                key=f"connections.{connection.name}.remote.cacerts",
                hint="add cacerts = [<CA certificate>] to the remote section "
                "(swanctl.conf: or put it in x509ca/)",
            )
        uses_psk = "psk" in (connection.local.auth, connection.remote.auth)
        if uses_psk and not configuration.shared_secrets:
            raise ConfigError(
                "auth = psk but no ike secret is configured",
                file=connection.source,
                key=f"connections.{connection.name}",
                hint="add [secrets.ike-NAME] with secret = ... and the ids it is for",
            )


def find_private_key(configuration: Configuration, connection: ConnectionSettings) -> Any:
    leaf = load_certificate(connection.local.certs[0])
    wanted = _public_bytes(leaf.public_key())
    for private in configuration.private_keys:
        if _public_bytes(private.key.public_key()) == wanted:
            return private.key
    raise ConfigError(
        f"no private key matches certificate {connection.local.certs[0]}",
        file=connection.source,
        key=f"connections.{connection.name}.local.certs",
        hint="add [secrets.private-NAME] file = <key> (swanctl.conf: put it in private/)",
    )


_DN_NAMES = {
    "countryName": "C", "stateOrProvinceName": "ST", "localityName": "L",
    "organizationName": "O", "organizationalUnitName": "OU", "commonName": "CN",
    "emailAddress": "E", "serialNumber": "serialNumber", "domainComponent": "DC",
}  # fmt: skip


def strongswan_dn(name: Any) -> str:
    """An X.509 name as strongSwan prints it: in certificate order, ``C=CH, O=x, CN=y``."""
    parts = []
    for rdn in name.rdns:
        for attribute in rdn:
            label = _DN_NAMES.get(attribute.oid._name, attribute.oid.dotted_string)
            parts.append(f"{label}={attribute.value}")
    return ", ".join(parts)
