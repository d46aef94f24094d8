"""Real tokens for the tests: a SoftHSM2 token initialised per test in a temporary
SOFTHSM2_CONF, one swtpm simulator per test with keys made by tpm2-tools, and
certificates issued by strongSwan's ``pki`` for each token key's public key.

Nothing here is a stand-in: keys are generated inside the token (C_GenerateKeyPair,
TPM2_Create) and the tests sign through the same backends the daemon uses.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.components import SOFTHSM2_MODULE, TPM2_PKCS11_MODULE, require_component

PIN = "4711"
SO_PIN = "0815"
CA_DN = "C=CH, O=aioipsec tokens, CN=Token Test CA"


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> bytes:
    result = subprocess.run(list(args), capture_output=True, timeout=timeout, check=False, env=env)
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} failed ({result.returncode}): "
            f"{result.stderr.decode(errors='replace')}"
        )
    return result.stdout


@dataclass
class Pki:
    """A CA made with ``pki``; issues certificates for public keys of tokens."""

    folder: Path
    ca_key: Path = field(init=False)
    ca_cert: Path = field(init=False)

    def __post_init__(self) -> None:
        require_component("pki")
        self.ca_key = self.folder / "ca.key"
        self.ca_cert = self.folder / "ca.pem"
        self.ca_key.write_bytes(run("pki", "--gen", "--type", "ecdsa", "--size", "256"))
        self.ca_cert.write_bytes(
            run(
                "pki",
                "--self",
                "--ca",
                "--in",
                str(self.ca_key),
                "--type",
                "ecdsa",
                "--dn",
                CA_DN,
                "--outform",
                "pem",
            )
        )
        os.chmod(self.ca_key, 0o600)

    def issue(self, public_pem: bytes, name: str) -> Path:
        """A certificate for ``public_pem`` with subject CN=name and SAN dNSName name."""
        pub = self.folder / f"{name}.pub.pem"
        pub.write_bytes(public_pem)
        cert = self.folder / f"{name}.pem"
        cert.write_bytes(
            run(
                "pki",
                "--issue",
                "--cacert",
                str(self.ca_cert),
                "--cakey",
                str(self.ca_key),
                "--type",
                "pub",
                "--in",
                str(pub),
                "--dn",
                f"C=CH, O=aioipsec tokens, CN={name}",
                "--san",
                name,
                "--outform",
                "pem",
            )
        )
        return cert

    def issue_key(self, name: str, kind: str = "ecdsa", size: str = "256") -> tuple[Path, Path]:
        """An in-memory key file and its certificate (the peer that has no token)."""
        key = self.folder / f"{name}.key"
        key.write_bytes(run("pki", "--gen", "--type", kind, "--size", size, "--outform", "pem"))
        os.chmod(key, 0o600)
        public = run("pki", "--pub", "--in", str(key), "--outform", "pem")
        return key, self.issue(public, name)


def public_pem(public: object) -> bytes:
    return public.public_bytes(  # type: ignore[attr-defined]  # any cryptography public key
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


# ---- SoftHSM2 ---------------------------------------------------------------------------


@dataclass
class SoftHsm:
    folder: Path
    conf: Path
    label: str = "aioipsec"
    slot_id: int = 0
    module: str = SOFTHSM2_MODULE

    def generate(self, kind: str, key_id: bytes, label: str = "") -> bytes:
        """A key pair generated inside the token; returns the public key as PEM."""
        import pkcs11
        from pkcs11 import Attribute, KeyType, Mechanism
        from pkcs11.util.ec import encode_named_curve_parameters

        from aioipsec.tokens.pkcs11 import Pkcs11KeySpec, Pkcs11Signer, load_module

        token = load_module(self.module).get_token(token_label=self.label)
        with token.open(rw=True, user_pin=PIN) as session:
            common = {"store": True, "id": key_id, "label": label or kind}
            if kind.startswith("ec"):
                curve = {"ec256": "secp256r1", "ec384": "secp384r1"}[kind]
                params = session.create_domain_parameters(
                    KeyType.EC,
                    {Attribute.EC_PARAMS: encode_named_curve_parameters(curve)},
                    local=True,
                )
                params.generate_keypair(mechanism=Mechanism.EC_KEY_PAIR_GEN, **common)
            else:
                bits = int(kind.removeprefix("rsa"))
                session.generate_keypair(
                    KeyType.RSA, bits, mechanism=Mechanism.RSA_PKCS_KEY_PAIR_GEN, **common
                )
        del pkcs11
        signer = Pkcs11Signer(Pkcs11KeySpec("softhsm", self.module, key_id, self.slot_id, PIN))
        try:
            return public_pem(signer.public_key())
        finally:
            signer.close()

    def store_certificate(self, cert_path: Path, key_id: bytes) -> None:
        """Put a certificate on the token under the key's CKA_ID."""
        from pkcs11 import Attribute, ObjectClass
        from pkcs11.constants import CertificateType

        from aioipsec.tokens.pkcs11 import load_module

        cert = load_cert(cert_path)
        token = load_module(self.module).get_token(token_label=self.label)
        with token.open(rw=True, user_pin=PIN) as session:
            session.create_object(
                {
                    Attribute.CLASS: ObjectClass.CERTIFICATE,
                    Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
                    Attribute.TOKEN: True,
                    Attribute.ID: key_id,
                    Attribute.LABEL: "cert",
                    Attribute.SUBJECT: cert.subject.public_bytes(),
                    Attribute.VALUE: cert.public_bytes(serialization.Encoding.DER),
                }
            )

    def remove(self) -> None:
        """Take the token away (its object store disappears, as when a card is pulled)."""
        (self.folder / "tokens").rename(self.folder / "tokens.away")
        (self.folder / "tokens").mkdir()

    def reinsert(self) -> None:
        shutil.rmtree(self.folder / "tokens")
        (self.folder / "tokens.away").rename(self.folder / "tokens")


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """A CA of its own per test, in tmp_path/pki."""
    folder = tmp_path / "pki"
    folder.mkdir()
    return Pki(folder)


@pytest.fixture
def softhsm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SoftHsm]:
    require_component("softhsm2", "python-pkcs11")
    from aioipsec.tokens import registry
    from aioipsec.tokens.pkcs11 import reset_modules

    folder = tmp_path / "softhsm"
    (folder / "tokens").mkdir(parents=True)
    conf = folder / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {folder / 'tokens'}\nobjectstore.backend = file\n"
        "log.level = ERROR\nslots.removable = true\n"
    )
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    registry.close_all()
    reset_modules()  # the module re-reads SOFTHSM2_CONF at its next C_Initialize
    hsm = SoftHsm(folder, conf)
    out = run(
        "softhsm2-util",
        "--init-token",
        "--free",
        "--label",
        hsm.label,
        "--pin",
        PIN,
        "--so-pin",
        SO_PIN,
        env={**os.environ, "SOFTHSM2_CONF": str(conf)},
    ).decode()
    hsm.slot_id = int(out.rsplit("slot", 1)[1].split()[0])
    yield hsm
    registry.close_all()
    reset_modules()


# ---- swtpm --------------------------------------------------------------------------


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
        if port >= 65535:
            continue
        with socket.socket() as second:
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two free consecutive TCP ports")


@dataclass
class Swtpm:
    folder: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def tcti(self) -> str:
        return f"swtpm:host=127.0.0.1,port={self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "swtpm",
                "socket",
                "--tpm2",
                "--server",
                f"type=tcp,port={self.port},bindaddr=127.0.0.1",
                "--ctrl",
                f"type=tcp,port={self.port + 1},bindaddr=127.0.0.1",
                "--tpmstate",
                f"dir={self.folder}",
                "--flags",
                "not-need-init,startup-clear",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("swtpm did not start listening")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def tools(self, *args: str) -> bytes:
        env = {**os.environ, "TPM2TOOLS_TCTI": self.tcti}
        out = run(*args, env=env)
        # No resource manager in front of swtpm: free transient objects after each tool.
        run("tpm2_flushcontext", "-t", env=env)
        return out

    def create_key(self, handle: int, algorithm: str = "ecc256", restricted: bool = False) -> bytes:
        """A signing key under the owner's primary, made persistent at ``handle``;
        returns its public key as PEM (tpm2_readpublic). ``restricted``: a restricted
        signing key (needs a scheme in ``algorithm``, e.g. ``ecc256:ecdsa-sha256``)."""
        work = self.folder.parent
        attributes = (
            ["-a", "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign"]
            if restricted
            else []
        )
        self.tools(
            "tpm2_createprimary",
            "-Q",
            "-C",
            "o",
            "-g",
            "sha256",
            "-G",
            "ecc",
            "-c",
            str(work / "primary.ctx"),
        )
        self.tools(
            "tpm2_create",
            "-Q",
            "-C",
            str(work / "primary.ctx"),
            "-G",
            algorithm,
            *attributes,
            "-u",
            str(work / "key.pub"),
            "-r",
            str(work / "key.priv"),
        )
        self.tools(
            "tpm2_load",
            "-Q",
            "-C",
            str(work / "primary.ctx"),
            "-u",
            str(work / "key.pub"),
            "-r",
            str(work / "key.priv"),
            "-c",
            str(work / "key.ctx"),
        )
        self.tools("tpm2_evictcontrol", "-Q", "-C", "o", "-c", str(work / "key.ctx"), hex(handle))
        pem = work / f"{handle:x}.pem"
        self.tools("tpm2_readpublic", "-Q", "-c", hex(handle), "-f", "pem", "-o", str(pem))
        return pem.read_bytes()


@pytest.fixture
def swtpm(tmp_path: Path) -> Iterator[Swtpm]:
    require_component("swtpm", "tpm2-tools", "tpm2-pytss")
    from aioipsec.tokens import registry

    state = tmp_path / "swtpm"
    state.mkdir()
    tpm = Swtpm(state, _free_port_pair())
    tpm.start()
    yield tpm
    registry.close_all()
    tpm.stop()


# ---- the TPM as a PKCS#11 module (tpm2-pkcs11) ------------------------------------------


@dataclass
class TpmPkcs11:
    """swtpm behind tpm2-abrmd (on its own D-Bus session bus: tpm2-pkcs11 and tpm2_ptool
    open many transient objects, which a bare simulator cannot hold), and a tpm2-pkcs11
    store with one token."""

    store: Path
    label: str = "ike"
    slot_id: int = 1
    module: str = TPM2_PKCS11_MODULE

    def add_key(self, algorithm: str, key_id: str, label: str) -> None:
        """``tpm2_ptool addkey``: the key is made by the TPM; its CKA_ID is ``key_id``'s
        octets (tpm2_ptool takes the text as it is)."""
        run("tpm2_ptool", "addkey", "--algorithm", algorithm, "--label", self.label,
            "--userpin", PIN, "--key-label", label, "--id", key_id, "--path", str(self.store),
            env=os.environ.copy())  # fmt: skip


@pytest.fixture
def tpm_pkcs11(
    tmp_path: Path, swtpm: Swtpm, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TpmPkcs11]:
    require_component("tpm2-pkcs11", "python-pkcs11")
    from aioipsec.tokens import registry
    from aioipsec.tokens.pkcs11 import reset_modules

    bus = subprocess.Popen(
        ["dbus-daemon", "--session", "--nofork", "--print-address=1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert bus.stdout is not None
    address = bus.stdout.readline().decode().strip()
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", address)
    abrmd = subprocess.Popen(
        ["tpm2-abrmd", "--session", "--allow-root", f"--tcti={swtpm.tcti}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    tcti = "tabrmd:bus_type=session"
    store = tmp_path / "tpm2-pkcs11"
    store.mkdir()
    monkeypatch.setenv("TPM2TOOLS_TCTI", tcti)
    monkeypatch.setenv("TPM2_PKCS11_TCTI", tcti)
    monkeypatch.setenv("TPM2_PKCS11_STORE", str(store))
    monkeypatch.setenv("TSS2_LOG", "all+NONE")
    try:
        deadline = time.monotonic() + 10
        while True:  # tpm2-abrmd takes its bus name once it has reached the TPM
            try:
                run("tpm2_ptool", "init", "--path", str(store), env=os.environ.copy())
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        run("tpm2_ptool", "addtoken", "--pid", "1", "--label", "ike", "--userpin", PIN,
            "--sopin", SO_PIN, "--path", str(store), env=os.environ.copy())  # fmt: skip
        registry.close_all()
        reset_modules()
        yield TpmPkcs11(store)
    finally:
        registry.close_all()
        reset_modules()
        abrmd.terminate()
        abrmd.wait(timeout=10)
        bus.terminate()
        bus.wait(timeout=10)
