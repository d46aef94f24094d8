"""Credentials: certificate and private key files, read and checked at load time.

Private key files must not be readable by group or others; every pubkey connection must
have the private key that matches its certificate, and a CA certificate to check the
peer's. Key objects are ``cryptography`` objects and are never logged.
"""

from __future__ import annotations

import base64
import hashlib
import re
import stat
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import padding, serialization
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import pkcs12

from aioipsec.config.model import (
    AuthSettings,
    ConfigError,
    Configuration,
    ConnectionSettings,
    identity_matches,
    raise_collected,
)
from aioipsec.config.tokens import find_token_signer

# Where swanctl looks for files named relatively (relative to swanctl.conf's folder).
SWANCTL_FOLDERS = {
    "certs": "x509",
    "cacerts": "x509ca",
    "private": "private",
    "rsa": "rsa",
    "ecdsa": "ecdsa",
    "pkcs8": "pkcs8",
    "pubkeys": "pubkey",
    "pkcs12": "pkcs12",
}

# Certificates that come out of a PKCS#12 container have no file of their own: they are
# known as "<container>#<n>" and load_certificate returns them from here.
_CONTAINED: dict[Path, Any] = {}


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


def _encrypted(data: bytes) -> bool:
    """A legacy PEM key with ``Proc-Type: 4,ENCRYPTED`` or a PKCS#8 EncryptedPrivateKeyInfo."""
    return b"ENCRYPTED" in data[:4096] if b"-----BEGIN" in data else False


def check_secret_file_modes(
    files: dict[str, str], configuration: Configuration, problems: list[ConfigError]
) -> None:
    """A file holding a PSK or a key's passphrase (TOML or swanctl.conf, or one it
    includes) must not be readable by group or others: refused, unless ``[daemon]
    allow_readable_secret_files = true``, then a warning. The same rule for both formats."""
    for name, key in sorted(files.items()):
        try:
            mode = Path(name).stat().st_mode
        except OSError:
            continue
        if not mode & (stat.S_IRWXG | stat.S_IRWXO):
            continue
        text = (
            "holds a secret and is readable or writable by group/others "
            f"(mode {stat.S_IMODE(mode):04o})"
        )
        if configuration.daemon.allow_readable_secret_files:
            configuration.warnings.append(f"{name} {text}: chmod 600 {name}")
        else:
            problems.append(
                ConfigError(
                    "the file " + text,
                    file=name,
                    key=key,
                    hint=f"chmod 600 {name} (or set [daemon] allow_readable_secret_files = "
                    "true to accept it with a warning)",
                )
            )


def load_private_key(path: Path, passphrase: bytes | None = None) -> Any:
    """A ``cryptography`` private key from a PEM or DER file with mode 0600 (or stricter).

    As strongSwan does, a passphrase given for a key that is not encrypted is not needed
    and is ignored. cryptography's RSA key validation (a primality check of p and q,
    about 30 s for a 16384-bit key) is skipped: these are our own keys, read from files
    only root can read, and a broken key fails its first signature anyway.
    """

    _check_key_file_mode(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None
    pem = b"-----BEGIN" in data
    loader = serialization.load_pem_private_key if pem else serialization.load_der_private_key
    try:
        return loader(data, password=passphrase, unsafe_skip_rsa_key_validation=True)
    except TypeError as error:
        if passphrase is not None and "not encrypted" in str(error):
            # A superfluous passphrase: strongSwan loads the key as it is.
            return _load_plain(loader, data, path)
        if passphrase is None and "encrypted" in str(error):
            raise ConfigError(
                f"{path} is encrypted and no passphrase is given for it",
                hint="add a secrets entry: rsa-NAME { file = "
                f"{path.name}  secret = <passphrase> }} (private-, ecdsa- or pkcs8- as well)",
            ) from None
        raise ConfigError(f"{path} is not a private key we can read ({error})") from None
    except ValueError as error:
        if passphrase is not None and "unknown cipher" in str(error):
            # OpenSSL's legacy PEM encryption with a cipher cryptography does not read
            # (AES-192-CBC, used by strongSwan's strong-keys-certs scenario).
            return _load_legacy_pem(data, passphrase, path)
        if passphrase is not None and (_encrypted(data) or "password" in str(error).lower()):
            raise ConfigError(
                f"{path}: the passphrase is wrong (the key does not decrypt with it)",
                hint="correct the secret of this key",
            ) from None
        raise ConfigError(
            f"{path} is not a private key we can read",
            hint="give a PEM or DER key (PKCS#1, SEC1 or PKCS#8); a passphrase goes in secret",
        ) from None
    except (UnsupportedAlgorithm, RecursionError):
        raise ConfigError(
            f"{path} is not a private key we can read (unsupported key type or format)",
            hint="give an RSA, ECDSA, Ed25519 or Ed448 key in PEM or DER",
        ) from None


_LEGACY_PEM_CIPHERS = {"AES-128-CBC": 16, "AES-192-CBC": 24, "AES-256-CBC": 32}


def _load_legacy_pem(data: bytes, passphrase: bytes, path: Path) -> Any:
    """A ``Proc-Type: 4,ENCRYPTED`` PEM key: the key is OpenSSL's EVP_BytesToKey(MD5,
    one round, salt = the first 8 octets of the IV) of the passphrase, the body is
    AES-CBC with PKCS#7 padding over the DER key (RFC 1421 sec. 4.6.1, OpenSSL's PEM)."""
    text = data.decode("ascii", "replace")
    match = re.search(r"DEK-Info:\s*([A-Z0-9-]+),([0-9A-Fa-f]+)", text)
    body = re.search(r"\n\s*\n(.*?)-----END", text, re.DOTALL)
    if not match or not body or match.group(1) not in _LEGACY_PEM_CIPHERS:
        raise ConfigError(
            f"{path} is encrypted with a cipher aioipsec cannot read",
            hint="re-encrypt it: openssl pkey -in KEY -aes256 -out NEW",
        )
    key_length = _LEGACY_PEM_CIPHERS[match.group(1)]
    iv = bytes.fromhex(match.group(2))
    key, block = b"", b""
    while len(key) < key_length:
        block = hashlib.md5(block + passphrase + iv[:8], usedforsecurity=False).digest()
        key += block
    try:
        encrypted = base64.b64decode("".join(body.group(1).split()), validate=True)
        decryptor = Cipher(algorithms.AES(key[:key_length]), modes.CBC(iv)).decryptor()
        padded = decryptor.update(encrypted) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        der = unpadder.update(padded) + unpadder.finalize()
        return serialization.load_der_private_key(
            der, password=None, unsafe_skip_rsa_key_validation=True
        )
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigError(
            f"{path}: the passphrase is wrong (the key does not decrypt with it)",
            hint="correct the secret of this key",
        ) from None


def _load_plain(loader: Any, data: bytes, path: Path) -> Any:
    try:
        return loader(data, password=None, unsafe_skip_rsa_key_validation=True)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigError(f"{path} is not a private key we can read") from None


def _read_credential(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist", hint="check the path") from None
    except OSError as error:
        raise ConfigError(f"cannot read {what} {path}: {error.strerror}") from None


def load_certificate(path: Path) -> Any:
    """A ``cryptography`` X.509 certificate from a PEM or DER file (or from a PKCS#12
    container loaded before, ``<container>#<n>``)."""

    contained = _CONTAINED.get(path)
    if contained is not None:
        return contained
    data = _read_credential(path, "certificate")
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as error:
        raise ConfigError(f"{path} is not an X.509 certificate ({error})") from None


def load_public_key(path: Path) -> Any:
    """A raw public key as swanctl reads ``pubkey/``: PEM or DER SubjectPublicKeyInfo
    (``-----BEGIN PUBLIC KEY-----``) or PKCS#1 (``-----BEGIN RSA PUBLIC KEY-----``)."""
    data = _read_credential(path, "public key")
    try:
        if b"-----BEGIN" in data:
            return serialization.load_pem_public_key(data)
        return serialization.load_der_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as error:
        raise ConfigError(
            f"{path} is not a public key we can read ({error})",
            hint="give a PEM or DER public key, as `pki --pub` writes it",
        ) from None


def key_id_identity(key: Any) -> str:
    """strongSwan's default identity of a raw public key without an id: its KEY_ID, the
    SHA-1 of its SubjectPublicKeyInfo (pubkey_cert.c, KEYID_PUBKEY_INFO_SHA1)."""
    return "keyid:#" + hashlib.sha1(_public_bytes(key)).hexdigest()


def load_crl_file(path: Path) -> x509.CertificateRevocationList:
    """A CRL from a PEM or DER file (swanctl's x509crl/); its signature is checked against
    its CA when it is used (aioipsec/revocation.py), as the CA may be loaded later."""
    try:
        data = path.read_bytes()
        loader = x509.load_pem_x509_crl if b"-----BEGIN" in data else x509.load_der_x509_crl
        return loader(data)
    except OSError as error:
        raise ConfigError(f"cannot read CRL {path}: {error.strerror}") from None
    except ValueError as error:
        raise ConfigError(
            f"{path} is not an X.509 CRL ({error})",
            hint="write a CRL as strongSwan's pki --signcrl or openssl ca -gencrl makes it",
        ) from None


def load_pkcs12(path: Path, passphrase: bytes | None) -> tuple[Any, list[tuple[Path, bool]]]:
    """A PKCS#12 container (RFC 7292) as swanctl reads it from pkcs12/: its private key,
    and its certificates, each known as ``<container>#<n>`` with whether it is a CA."""
    _check_key_file_mode(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None
    try:
        key, certificate, others = pkcs12.load_key_and_certificates(data, passphrase)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # cryptography says "Invalid password or PKCS12 data" for both.
        if passphrase is None:
            raise ConfigError(
                f"{path} is encrypted and no passphrase is given for it (or it is not "
                "a PKCS#12 container)",
                hint=f"add a secrets entry: pkcs12-NAME {{ file = {path.name}  "
                "secret = <passphrase> }",
            ) from None
        raise ConfigError(
            f"{path}: the passphrase is wrong, or the file is not a PKCS#12 container",
            hint="correct the secret of this container",
        ) from None
    if key is None:
        raise ConfigError(f"{path} holds no private key", hint="export it with its key")
    certificates: list[tuple[Path, bool]] = []
    for number, cert in enumerate([c for c in (certificate, *others) if c is not None]):
        name = Path(f"{path}#{number}")
        _CONTAINED[name] = cert
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        certificates.append((name, is_ca))
    return key, certificates


def _public_bytes(key: Any) -> bytes:

    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def check_credentials(configuration: Configuration, secrets_refused: bool = False) -> None:
    """Every named certificate readable; every pubkey connection has its private key.

    Every problem is reported (``ConfigErrors`` when there are several). With
    ``secrets_refused`` (a secret was already refused), a missing PSK is not reported
    again as a second error."""
    problems: list[ConfigError] = []
    for connection in configuration.connections.values():
        try:
            _check_connection_credentials(configuration, connection, secrets_refused)
        except ConfigError as error:
            problems.extend(error.errors)
    raise_collected(problems)


def _check_connection_credentials(
    configuration: Configuration, connection: ConnectionSettings, secrets_refused: bool
) -> None:
    problems: list[ConfigError] = []
    modes = {child.mode for child in connection.children.values()}
    if modes and modes <= {"pass", "drop"}:
        return  # shunts only (aioipsec/runtime/shunts.py): no IKE, no credentials
    for side in ("local", "remote"):
        auth: AuthSettings = getattr(connection, side)
        for kind, loader in (("certs", load_certificate), ("cacerts", load_certificate),
                             ("pubkeys", load_public_key)):  # fmt: skip
            for file_path in getattr(auth, kind):
                try:
                    loader(file_path)
                except ConfigError as error:
                    problems.append(
                        ConfigError(
                            error.reason,
                            file=connection.source,
                            key=f"connections.{connection.name}.{side}.{kind}",
                            hint=error.hint,
                        )
                    )
    if connection.local.auth in ("pubkey", "eap-tls") and not problems:  # EAP-TLS: TLS key
        try:
            find_private_key(configuration, connection)
        except ConfigError as error:
            problems.append(error)
    remote = connection.remote
    if (
        remote.auth == "pubkey"
        and not remote.cacerts
        and not remote.certs
        and not remote.pubkeys
        and not configuration.authorities
        and not _peer_public_keys(configuration, connection)
    ):
        problems.append(
            ConfigError(
                "auth = pubkey for the peer, but no CA certificate to check its certificate "
                "and no raw public key to check its signature (keys in DNS, strongSwan's "
                "dnssec plugin, are not looked up)",
                file=connection.source,
                key=f"connections.{connection.name}.remote.cacerts",
                hint="add cacerts = [<CA certificate>] or pubkeys = <peer's public key> to "
                "the remote section (swanctl.conf: or put it in x509ca/ or pubkey/)",
            )
        )
    uses_psk = "psk" in (connection.local.auth, connection.remote.auth)
    if uses_psk and not configuration.shared_secrets and not secrets_refused:
        problems.append(
            ConfigError(
                "auth = psk but no ike secret is configured",
                file=connection.source,
                key=f"connections.{connection.name}",
                hint="add [secrets.ike-NAME] with secret = ... and the ids it is for",
            )
        )
    raise_collected(problems)


def certificate_identities(certificate: Any) -> list[str]:
    """The identities a certificate vouches for: its subject and subjectAltNames."""
    names = [strongswan_dn(certificate.subject)]
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return names
    for entry in san.value:
        if isinstance(entry, x509.DNSName | x509.RFC822Name):
            names.append(entry.value)
        elif isinstance(entry, x509.IPAddress):
            names.append(str(entry.value))
    return names


def _certificate_by_identity(configuration: Configuration, connection: ConnectionSettings) -> Path:
    """strongSwan's rule for ``auth = pubkey`` without ``certs``: the loaded certificate
    (swanctl's x509/) whose subject or subjectAltName is our id and whose private key
    we hold; without an id, the first certificate with a private key."""
    wanted = connection.local.id
    private = {_public_bytes(key.key.public_key()) for key in configuration.private_keys}
    for path in configuration.certificates:
        try:
            certificate = load_certificate(path)
        except ConfigError:
            continue
        if _public_bytes(certificate.public_key()) not in private:
            continue
        if wanted is None or any(
            identity_matches(wanted, name) for name in certificate_identities(certificate)
        ):
            return path
    auth = f"auth = {connection.local.auth}"
    raise ConfigError(
        f"{auth} needs our certificate, and no certificate in x509/ with a private "
        f"key matches our id {wanted!r}"
        if wanted
        else f"{auth} needs our certificate, and no certificate with a private key is loaded",
        file=connection.source,
        key=f"connections.{connection.name}.local",
        hint="add certs = <file> (PEM or DER), put the certificate in x509/ and its key in "
        "private/, or use auth = psk",
    )


def local_certificates(configuration: Configuration, connection: ConnectionSettings) -> list[Path]:
    """Our certificates for ``auth = pubkey`` or ``eap-tls``: those named by ``certs``, or
    else (swanctl.conf and VICI ``load-conn`` may leave it out) the one strongSwan picks by
    our id, recorded in ``certs`` from then on. ConfigError says why there is none."""
    if not connection.local.certs:
        connection.local.certs = [_certificate_by_identity(configuration, connection)]
    return connection.local.certs


def _peer_public_keys(configuration: Configuration, connection: ConnectionSettings) -> list[Path]:
    """The keys of pubkey/ a peer of this connection may sign with: all but our own."""
    own = {path.resolve() for path in connection.local.pubkeys}
    return [path for path in configuration.public_keys if path.resolve() not in own]


def find_private_key(configuration: Configuration, connection: ConnectionSettings) -> Any:
    if connection.local.auth == "pubkey" and connection.local.pubkeys:
        # A raw public key (strongSwan uses the first of the list): its private key.
        wanted = _public_bytes(load_public_key(connection.local.pubkeys[0]))
        for private in configuration.private_keys:
            if _public_bytes(private.key.public_key()) == wanted:
                return private.key
        raise ConfigError(
            f"no private key matches public key {connection.local.pubkeys[0]}",
            file=connection.source,
            key=f"connections.{connection.name}.local.pubkeys",
            hint="add [secrets.private-NAME] file = <key> (swanctl.conf: put it in private/)",
        )
    leaf = load_certificate(local_certificates(configuration, connection)[0])
    wanted = _public_bytes(leaf.public_key())
    for private in configuration.private_keys:
        if _public_bytes(private.key.public_key()) == wanted:
            return private.key
    signer = find_token_signer(configuration, connection, leaf)
    if signer is not None:
        return signer
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
