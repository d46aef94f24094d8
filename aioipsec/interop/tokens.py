"""Our daemon as an interop peer whose private key stays in a token (issue 16).

``Scenario(token="softhsm")``: a SoftHSM2 token is initialised in the peer's work folder
(its own SOFTHSM2_CONF), the key pair (``key_type``: ECDSA P-256 or RSA-3072) is generated
inside it, and the harness's CA (``pki``) issues the certificate for the token's public
key. ``Scenario(token="tpm")``: an swtpm runs in the peer's namespace, the key is made
with tpm2_createprimary/tpm2_create/tpm2_evictcontrol at a persistent handle, and its
public key (tpm2_readpublic) is certified the same way.

The daemon then gets exactly what a user writes: the certificate in ``x509/``, no key in
``private/``, ``secrets { token-ours { handle slot module pin } }`` in swanctl.conf, and
``[pkcs11.modules.softhsm] path`` or ``[tpm] tcti`` in its TOML file.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from aioipsec.interop.ours import AioipsecPeer
from aioipsec.interop.scenario import Scenario, Side
from aioipsec.netns import Lab, Namespace

__all__ = ["SOFTHSM2_MODULE", "TokenAioipsecPeer", "token_peer"]

SOFTHSM2_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PIN = "246810"
KEY_ID = "a1"
TPM_HANDLE = 0x81010003
SWTPM_PORT = 2321
TPM2_PKCS11_MODULE = "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so"
TPM2_PKCS11_ID = "ike1"  # tpm2_ptool addkey --id: the CKA_ID is these octets


def _run(argv: list[str], env: dict[str, str] | None = None) -> bytes:
    result = subprocess.run(argv, capture_output=True, timeout=120, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)}: {result.stderr.decode(errors='replace').strip()[-500:]}"
        )
    return result.stdout


class TokenAioipsecPeer(AioipsecPeer):
    """AioipsecPeer whose key is made inside a SoftHSM2 token or an swtpm."""

    def __init__(
        self, lab: Lab, namespace: Namespace, workdir: Path, scenario: Scenario, side: Side
    ) -> None:
        super().__init__(lab, namespace, workdir, keep_alive=scenario.keep_alive)
        self.scenario = scenario
        self.side = side
        self.token_toml = ""
        self.secrets_text = ""

    def daemon_table(self) -> str:
        return super().daemon_table() + self.token_toml

    def load(self, swanctl_conf_text: str, timeout: float = 30.0) -> None:
        make = {"softhsm": self._softhsm, "tpm": self._tpm, "tpm-pkcs11": self._tpm_pkcs11}
        public = make[self.scenario.token]()
        self._certify(public)
        super().load(swanctl_conf_text + self.secrets_text, timeout)

    # ---- the token ---------------------------------------------------------------------

    def _softhsm(self) -> bytes:
        folder = self.workdir / "softhsm"
        (folder / "tokens").mkdir(parents=True, exist_ok=True)
        conf = folder / "softhsm2.conf"
        conf.write_text(f"directories.tokendir = {folder / 'tokens'}\nlog.level = ERROR\n")
        env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
        out = _run(
            ["softhsm2-util", "--init-token", "--free", "--label", "interop", "--pin", PIN,
             "--so-pin", PIN],
            env,
        ).decode()  # fmt: skip
        slot = int(out.rsplit("slot", 1)[1].split()[0])
        kind = "ec256" if self.scenario.key_type == "ecdsa" else "rsa3072"
        public = _run(
            [sys.executable, "-m", "aioipsec.interop.tokens", "softhsm-keygen",
             "--kind", kind, "--id", KEY_ID, "--slot", str(slot)],
            env,
        )  # fmt: skip
        self.env = {"SOFTHSM2_CONF": str(conf)}
        self.token_toml = f'\n[pkcs11.modules.softhsm]\npath = "{SOFTHSM2_MODULE}"\n'
        self.secrets_text = (
            "secrets {\n    token-ours {\n"
            f"        handle = {KEY_ID}\n        slot = {slot}\n"
            f"        module = softhsm\n        pin = {PIN}\n    }}\n}}\n"
        )
        return public

    def _tpm(self) -> bytes:
        state, tcti = self._start_swtpm()
        script = " && ".join(
            f"{command} && tpm2_flushcontext -t"
            for command in (
                "tpm2_createprimary -Q -C o -g sha256 -G ecc -c primary.ctx",
                "tpm2_create -Q -C primary.ctx -G "
                + ("ecc256" if self.scenario.key_type == "ecdsa" else "rsa3072")
                + " -u key.pub -r key.priv",
                "tpm2_load -Q -C primary.ctx -u key.pub -r key.priv -c key.ctx",
                f"tpm2_evictcontrol -Q -C o -c key.ctx {TPM_HANDLE:#x}",
                f"tpm2_readpublic -Q -c {TPM_HANDLE:#x} -f pem -o key.pem",
            )
        )
        # swtpm needs a moment to listen; the loop retries the first command only.
        self.namespace.sh(
            f"cd {state} && export TPM2TOOLS_TCTI={tcti} && "
            "for i in $(seq 50); do tpm2_startup -c 2>/dev/null; "
            "tpm2_getcap properties-fixed >/dev/null 2>&1 && break; sleep 0.1; done && " + script,
            timeout=60,
        )
        self.token_toml = f'\n[tpm]\ntcti = "{tcti}"\n'
        self.secrets_text = (
            f"secrets {{\n    token-ours {{\n        handle = {TPM_HANDLE:#x}\n    }}\n}}\n"
        )
        return (state / "key.pem").read_bytes()

    def _start_swtpm(self) -> tuple[Path, str]:
        """An swtpm in our namespace (stopped with the Lab); its state folder and TCTI."""
        state = self.workdir / "swtpm"
        state.mkdir(parents=True, exist_ok=True)
        self.lab.start(
            self.namespace,
            ["swtpm", "socket", "--tpm2",
             "--server", f"type=tcp,port={SWTPM_PORT},bindaddr=127.0.0.1",
             "--ctrl", f"type=tcp,port={SWTPM_PORT + 1},bindaddr=127.0.0.1",
             "--tpmstate", f"dir={state}", "--flags", "not-need-init,startup-clear"],
            log=self.workdir / "swtpm.log",
        )  # fmt: skip
        return state, f"swtpm:host=127.0.0.1,port={SWTPM_PORT}"

    def _tpm_pkcs11(self) -> bytes:
        """The TPM as a PKCS#11 module: tpm2-pkcs11 over tpm2-abrmd (on a D-Bus session bus
        of our own) over swtpm; the key made by tpm2_ptool."""
        _, tcti = self._start_swtpm()
        bus = f"unix:path={self.workdir / 'dbus.sock'}"
        store = self.workdir / "tpm2-pkcs11"
        store.mkdir(parents=True, exist_ok=True)
        self.lab.start(
            self.namespace,
            ["dbus-daemon", "--session", "--nofork", f"--address={bus}"],
            log=self.workdir / "dbus.log",
        )
        env = {
            "DBUS_SESSION_BUS_ADDRESS": bus,
            "TPM2_PKCS11_TCTI": "tabrmd:bus_type=session",
            "TPM2_PKCS11_STORE": str(store),
            "TSS2_LOG": "all+NONE",
        }
        self.namespace.sh(  # the bus socket, then swtpm listening, before tpm2-abrmd
            f"for i in $(seq 50); do [ -S {self.workdir / 'dbus.sock'} ] && "
            f"TPM2TOOLS_TCTI={tcti} tpm2_getcap properties-fixed >/dev/null 2>&1 && break; "
            "sleep 0.1; done",
            timeout=30,
        )
        self.lab.start(
            self.namespace,
            ["tpm2-abrmd", "--session", "--allow-root", f"--tcti={tcti}"],
            log=self.workdir / "abrmd.log",
            env=env,
        )
        kind = "ecc256" if self.scenario.key_type == "ecdsa" else "rsa3072"
        exports = " ".join(f"{key}={value}" for key, value in env.items())
        self.namespace.sh(
            f"export {exports} TPM2TOOLS_TCTI=tabrmd:bus_type=session && "
            f"for i in $(seq 50); do tpm2_ptool init --path {store} >/dev/null 2>&1 && break; "
            "sleep 0.1; done && "
            f"tpm2_ptool addtoken --pid 1 --label interop --userpin {PIN} --sopin {PIN} "
            f"--path {store} && tpm2_ptool addkey --algorithm {kind} --label interop "
            f"--userpin {PIN} --key-label interop --id {TPM2_PKCS11_ID} --path {store}",
            timeout=60,
        )
        public = _run(
            [sys.executable, "-m", "aioipsec.interop.tokens", "pkcs11-public",
             "--module", TPM2_PKCS11_MODULE, "--id", TPM2_PKCS11_ID.encode().hex(),
             "--slot", "1"],
            {**os.environ, **env},
        )  # fmt: skip
        self.env = env
        self.token_toml = f'\n[pkcs11.modules.tpm2]\npath = "{TPM2_PKCS11_MODULE}"\n'
        self.secrets_text = (
            "secrets {\n    token-ours {\n"
            f"        handle = {TPM2_PKCS11_ID.encode().hex()}\n        slot = 1\n"
            f"        module = tpm2\n        pin = {PIN}\n    }}\n}}\n"
        )
        return public

    def _certify(self, public: bytes) -> None:
        """Replace the file key the harness installed with a certificate for the token key."""
        identity = self.scenario.identity(self.side)
        pki_dir = self.workdir.parent / "pki"
        (self.workdir / "token.pub.pem").write_bytes(public)
        certificates = list((self.workdir / "x509").glob("*.pem"))
        (certificate,) = certificates
        certificate.write_bytes(
            _run(
                ["pki", "--issue", "--lifetime", "30", "--cacert", str(pki_dir / "ca.pem"),
                 "--cakey", str(pki_dir / "ca.key"), "--type", "pub",
                 "--in", str(self.workdir / "token.pub.pem"),
                 "--dn", f"C=CH, O=aioipsec interop, CN={identity}", "--san", identity,
                 "--outform", "pem"],
                {**os.environ, "STRONGSWAN_CONF": str(pki_dir / "pki.conf")},
            )
        )  # fmt: skip
        for key_file in (self.workdir / "private").glob("*"):
            key_file.unlink()  # the key is in the token now, nowhere else


def token_peer(
    lab: Lab, namespace: Namespace, workdir: Path, scenario: Scenario, side: Side
) -> AioipsecPeer:
    """The peer factory for ``"aioipsec"`` sides of ``Scenario(token=...)`` rows."""
    if not scenario.token:
        return AioipsecPeer(lab, namespace, workdir, keep_alive=scenario.keep_alive)
    return TokenAioipsecPeer(lab, namespace, workdir, scenario, side)


def _softhsm_keygen(kind: str, key_id: bytes, slot: int) -> bytes:
    """A key pair generated inside the token in SOFTHSM2_CONF; the public key as PEM."""
    from pkcs11 import Attribute, KeyType, Mechanism
    from pkcs11.util.ec import encode_named_curve_parameters

    from aioipsec.tokens.pkcs11 import load_module

    (slot_object,) = [s for s in load_module(SOFTHSM2_MODULE).get_slots() if s.slot_id == slot]
    with slot_object.get_token().open(rw=True, user_pin=PIN) as session:
        common = {"store": True, "id": key_id, "label": "interop"}
        if kind == "ec256":
            params = session.create_domain_parameters(
                KeyType.EC,
                {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
                local=True,
            )
            params.generate_keypair(mechanism=Mechanism.EC_KEY_PAIR_GEN, **common)
        else:
            session.generate_keypair(
                KeyType.RSA, 3072, mechanism=Mechanism.RSA_PKCS_KEY_PAIR_GEN, **common
            )
    return _public_pem(SOFTHSM2_MODULE, key_id, slot)


def _public_pem(module: str, key_id: bytes, slot: int) -> bytes:
    """The public key of the token key ``key_id`` (read through our PKCS#11 backend)."""
    from cryptography.hazmat.primitives import serialization

    from aioipsec.tokens.pkcs11 import Pkcs11KeySpec, Pkcs11Signer

    signer = Pkcs11Signer(Pkcs11KeySpec("interop", module, key_id, slot, PIN))
    public = signer.public_key()
    signer.close()
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aioipsec.interop.tokens")
    parser.add_argument("command", choices=["softhsm-keygen", "pkcs11-public"])
    parser.add_argument("--kind", choices=["ec256", "rsa3072"], default="ec256")
    parser.add_argument("--module", default=SOFTHSM2_MODULE)
    parser.add_argument("--id", required=True, help="CKA_ID in hex")
    parser.add_argument("--slot", type=int, required=True)
    args = parser.parse_args(argv)
    key_id = bytes.fromhex(args.id)
    if args.command == "softhsm-keygen":
        sys.stdout.buffer.write(_softhsm_keygen(args.kind, key_id, args.slot))
    else:
        sys.stdout.buffer.write(_public_pem(args.module, key_id, args.slot))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
