"""A throw-away PKI for certificate scenarios, made by strongSwan's own ``pki`` tool.

One CA, one certificate per identity (subjectAltName = the identity, so both charon and our
daemon match the IKE ID against the certificate), laid out the way swanctl expects next to
swanctl.conf: ``x509ca/ca.pem``, ``x509/<name>.pem``, ``private/<name>.key``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

KeyType = Literal["rsa", "ecdsa", "ed25519"]

_PKI_CONF = """pki {
    load = random nonce pem pkcs1 pkcs8 x509 pubkey openssl gmp curve25519 sha1 sha2 mgf1
}
"""

_SIZES = {"rsa": "3072", "ecdsa": "256", "ed25519": None}


@dataclass(frozen=True)
class Credentials:
    ca_cert: Path
    cert: Path
    key: Path


class Pki:
    """Keys and certificates under DIRECTORY; ``credentials(identity)`` for each identity."""

    def __init__(self, directory: str | os.PathLike[str], key_type: KeyType = "ecdsa") -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.key_type = key_type
        self._conf = self.directory / "pki.conf"
        self._conf.write_text(_PKI_CONF)
        self.ca_key = self.directory / "ca.key"
        self.ca_cert = self.directory / "ca.pem"
        self._gen_key(self.ca_key)
        self._run(
            "--self", "--ca", "--lifetime", "30", "--in", str(self.ca_key),
            "--type", "priv", "--dn", "C=CH, O=aioipsec interop, CN=aioipsec interop CA",
            "--outform", "pem", output=self.ca_cert,
        )  # fmt: skip
        self._issued: dict[str, Credentials] = {}

    def _run(self, *args: str, output: Path | None = None, stdin: bytes | None = None) -> bytes:
        env = dict(os.environ, STRONGSWAN_CONF=str(self._conf))
        result = subprocess.run(
            ["pki", *args], input=stdin, capture_output=True, env=env, timeout=60, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"pki {' '.join(args)}: {result.stderr.decode(errors='replace')}")
        if output is not None:
            output.write_bytes(result.stdout)
            output.chmod(0o600)
        return result.stdout

    def _gen_key(self, path: Path) -> None:
        args = ["--gen", "--type", self.key_type, "--outform", "pem"]
        size = _SIZES[self.key_type]
        if size:
            args += ["--size", size]
        self._run(*args, output=path)

    def credentials(
        self,
        identity: str,
        *,
        crl_uris: Sequence[str] = (),
        ocsp_uris: Sequence[str] = (),
        flags: Sequence[str] = (),
    ) -> Credentials:
        """Key and certificate for IDENTITY (an FQDN, e-mail or IP address), made once.

        ``crl_uris``/``ocsp_uris``: CRL distribution points and OCSP responders written
        into the certificate; ``flags``: extendedKeyUsage names (``ocspSigning``...)."""
        if identity in self._issued:
            return self._issued[identity]
        safe = "".join(ch if ch.isalnum() or ch in ".-_" else "_" for ch in identity)
        key = self.directory / f"{safe}.key"
        cert = self.directory / f"{safe}.pem"
        self._gen_key(key)
        public = self._run("--pub", "--in", str(key), "--type", "priv")
        self._run(
            "--issue", "--lifetime", "30", "--cacert", str(self.ca_cert), "--cakey",
            str(self.ca_key), "--type", "pub", "--dn",
            f"C=CH, O=aioipsec interop, CN={identity}", "--san", identity, "--outform", "pem",
            *(arg for uri in crl_uris for arg in ("--crl", uri)),
            *(arg for uri in ocsp_uris for arg in ("--ocsp", uri)),
            *(arg for flag in flags for arg in ("--flag", flag)),
            output=cert, stdin=public,
        )  # fmt: skip
        credentials = Credentials(self.ca_cert, cert, key)
        self._issued[identity] = credentials
        return credentials

    def install(self, identity: str, swanctl_dir: str | os.PathLike[str]) -> str:
        """Copy IDENTITY's key and certificate and the CA into swanctl's folders under
        SWANCTL_DIR; returns the certificate file name for ``certs = ...``."""
        credentials = self.credentials(identity)
        base = Path(swanctl_dir)
        for folder in ("x509ca", "x509", "private"):
            (base / folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(credentials.ca_cert, base / "x509ca" / "ca.pem")
        shutil.copy(credentials.cert, base / "x509" / credentials.cert.name)
        key_copy = base / "private" / credentials.key.name
        shutil.copy(credentials.key, key_copy)
        key_copy.chmod(0o600)
        return credentials.cert.name

    def sign_crl(
        self,
        revoked: Sequence[str | Path],
        output: str | os.PathLike[str],
        *,
        lifetime_days: int = 15,
        base_crl: Path | None = None,
    ) -> Path:
        """A CRL of this CA (``pki --signcrl``, DER) revoking (key-compromise) the
        certificates of the identities in REVOKED, or the certificate files given as Paths,
        valid for LIFETIME_DAYS. With BASE_CRL: a delta CRL to it (RFC 5280 sec. 5.2.4,
        ``--basecrl``; numbered after it with ``--lastcrl``)."""
        files = [
            item if isinstance(item, Path) else self.credentials(item).cert for item in revoked
        ]
        revocations = [
            arg for cert in files for arg in ("--reason", "key-compromise", "--cert", str(cert))
        ]
        path = Path(output)
        self._run(
            "--signcrl", "--cacert", str(self.ca_cert), "--cakey", str(self.ca_key),
            "--lifetime", str(lifetime_days), *revocations, "--outform", "der",
            *(("--basecrl", str(base_crl), "--lastcrl", str(base_crl)) if base_crl else ()),
            output=path,
        )  # fmt: skip
        return path
