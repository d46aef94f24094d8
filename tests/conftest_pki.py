"""A test PKI made by strongSwan's ``pki`` tool (not by our code), once per session.

Use the ``pki`` fixture in a test module after ``from tests.conftest_pki import pki_fixture``
(registered under the name ``pki``).
Everything is generated into a temporary directory; nothing is committed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.components import require_component

PKI_TOOL = shutil.which("pki") or "/usr/bin/pki"
DN = "C=CH, O=aioipsec test"


def _pki(*args: str, stdin: bytes | None = None) -> bytes:
    result = subprocess.run(
        [PKI_TOOL, *args],
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"pki {' '.join(args)} failed: {result.stderr.decode(errors='replace')}")
    return result.stdout


@dataclass
class Entity:
    name: str
    key_path: Path
    cert_path: Path
    key: object = field(repr=False)
    cert: x509.Certificate

    @property
    def public_pem(self) -> bytes:
        return self.cert.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


@dataclass
class Pki:
    directory: Path
    entities: dict[str, Entity]

    def __getitem__(self, name: str) -> Entity:
        return self.entities[name]


def _gen_key(directory: Path, name: str, key_type: str, size: int | None) -> Path:
    args = ["--gen", "--type", key_type, "--outform", "pem"]
    if size is not None:
        args += ["--size", str(size)]
    path = directory / f"{name}.key"
    path.write_bytes(_pki(*args))
    os.chmod(path, 0o600)
    return path


def _load(directory: Path, name: str, key_path: Path, cert_pem: bytes) -> Entity:
    cert_path = directory / f"{name}.crt"
    cert_path.write_bytes(cert_pem)
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    return Entity(name, key_path, cert_path, key, x509.load_pem_x509_certificate(cert_pem))


def _self_signed_ca(directory: Path, name: str, key_type: str, size: int | None, cn: str):
    key_path = _gen_key(directory, name, key_type, size)
    pem = _pki(
        "--self", "--ca", "--lifetime", "3650", "--in", str(key_path),
        "--type", "priv", "--dn", f"{DN}, CN={cn}", "--outform", "pem",
    )  # fmt: skip
    return _load(directory, name, key_path, pem)


def _issue(
    directory: Path,
    name: str,
    issuer: Entity,
    key_type: str,
    size: int | None,
    cn: str,
    *extra: str,
) -> Entity:
    key_path = _gen_key(directory, name, key_type, size)
    public = _pki("--pub", "--in", str(key_path), "--outform", "pem")
    pem = _pki(
        "--issue", "--cacert", str(issuer.cert_path), "--cakey", str(issuer.key_path),
        "--dn", f"{DN}, CN={cn}", "--outform", "pem", *extra,
        stdin=public,
    )  # fmt: skip
    return _load(directory, name, key_path, pem)


@pytest.fixture(scope="session", name="pki")
def pki_fixture(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    require_component("pki")
    d = tmp_path_factory.mktemp("pki")
    # The pki processes run four at a time (key generation is most of the time: three
    # 3072-bit RSA keys); a certificate waits only for its issuer's.
    with ThreadPoolExecutor(max_workers=4) as pool:
        made: dict[str, Future[Entity]] = {}

        def ca(name: str, *args: Any) -> None:
            made[name] = pool.submit(_self_signed_ca, d, name, *args)

        def issue(name: str, issuer: str, *args: Any) -> None:
            parent = made[issuer]
            made[name] = pool.submit(lambda: _issue(d, name, parent.result(), *args))

        _entities(ca, issue)
        e = {name: future.result() for name, future in made.items()}
    return Pki(d, e)


def _entities(ca: Callable[..., None], issue: Callable[..., None]) -> None:
    """Every entity of the test PKI, in order (an issuer before what it issues)."""
    ca("ca", "rsa", 3072, "aioipsec Root CA")
    ca("other_ca", "ecdsa", 256, "Unrelated CA")
    ca("ecdsa_ca", "ecdsa", 384, "aioipsec ECDSA CA")
    ca("ed25519_ca", "ed25519", None, "aioipsec Ed25519 CA")
    issue(
        "rsa", "ca", "rsa", 3072, "moon.example.org",
        "--san", "moon.example.org", "--san", "192.0.2.1", "--san", "moon@example.org",
        "--san", "2001:db8::1", "--lifetime", "180",
    )  # fmt: skip
    issue("ecdsa256", "ca", "ecdsa", 256, "sun.example.org", "--san", "sun.example.org")
    issue("ecdsa384", "ca", "ecdsa", 384, "mars.example.org", "--san", "mars.example.org")
    issue(
        "ecdsa521", "ca", "ecdsa", 521, "jupiter.example.org",
        "--san", "jupiter.example.org",
    )  # fmt: skip
    issue(
        "ed25519", "ca", "ed25519", None, "venus.example.org",
        "--san", "venus.example.org", "--flag", "serverAuth", "--flag", "ikeIntermediate",
    )  # fmt: skip
    issue("dn_only", "ca", "rsa", 3072, "carol")
    issue(
        "short_lived", "ca", "ecdsa", 256, "short.example.org",
        "--san", "short.example.org", "--lifetime", "1",
    )  # fmt: skip
    issue(
        "foreign", "other_ca", "ecdsa", 256, "evil.example.org",
        "--san", "evil.example.org",
    )  # fmt: skip
    issue("intermediate", "ca", "ecdsa", 384, "aioipsec Intermediate CA", "--ca")
    issue(
        "behind_intermediate", "intermediate", "ecdsa", 256, "deep.example.org",
        "--san", "deep.example.org",
    )  # fmt: skip
    issue("small_rsa", "ca", "rsa", 1024, "tiny.example.org", "--san", "tiny.example.org")
    # Certificates whose *own* signature shows pki's AlgorithmIdentifier encodings.
    for digest in ("sha256", "sha384", "sha512"):
        issue(
            f"pss_{digest}", "ca", "ecdsa", 256, f"pss-{digest}.example.org",
            "--rsa-padding", "pss", "--digest", digest,
        )  # fmt: skip
        issue(
            f"pkcs1_{digest}", "ca", "ecdsa", 256, f"pkcs1-{digest}.example.org",
            "--rsa-padding", "pkcs1", "--digest", digest,
        )  # fmt: skip
        issue(
            f"ecdsa_{digest}", "ecdsa_ca", "ecdsa", 256, f"ecdsa-{digest}.example.org",
            "--digest", digest,
        )  # fmt: skip
    issue("eddsa_signed", "ed25519_ca", "ecdsa", 256, "eddsa.example.org")
