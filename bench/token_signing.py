"""IKE_AUTH signing time per backend: an in-memory key next to the same key type in a
SoftHSM2 token and in a TPM (swtpm), through ``ikev2.crypto.auth.sign_auth`` exactly as
the engine calls it (RFC 7427, the peer offering SHA-256/384/512).

    .venv/bin/python -m bench.token_signing [--rounds 200]

Needs softhsm2, swtpm, tpm2-tools, python-pkcs11 and tpm2-pytss (make debian-deps venv).
Prints median and 90th percentile per backend; a figure, not a test.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ikev2.crypto.auth import as_signer, choose_signature_scheme, sign_auth
from ikev2.enums import HashAlgorithm

PEER_HASHES = [HashAlgorithm.SHA2_256, HashAlgorithm.SHA2_384, HashAlgorithm.SHA2_512]
SOFTHSM2_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PIN = "1234"
# About the size of the signed octets of an IKE_AUTH (IKE_SA_INIT message + nonce + prf).
OCTETS = os.urandom(600)


def measure(signer: Any, rounds: int, rsa_pss: bool = False) -> tuple[float, float]:
    method, scheme = choose_signature_scheme(signer, PEER_HASHES, rsa_pss=rsa_pss)
    sign_auth(signer, OCTETS, method, scheme)  # warm-up (session, caches)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        sign_auth(signer, OCTETS, method, scheme)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.9)]


def softhsm_signers(folder: Path) -> dict[str, Any]:
    from pkcs11 import Attribute, KeyType, Mechanism
    from pkcs11.util.ec import encode_named_curve_parameters

    from aioipsec.tokens.pkcs11 import Pkcs11KeySpec, Pkcs11Signer, load_module

    (folder / "tokens").mkdir(parents=True)
    conf = folder / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {folder / 'tokens'}\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", "bench", "--pin", PIN,
         "--so-pin", PIN],
        check=True, capture_output=True,
    )  # fmt: skip
    token = load_module(SOFTHSM2_MODULE).get_token(token_label="bench")
    with token.open(rw=True, user_pin=PIN) as session:
        params = session.create_domain_parameters(
            KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
            local=True,
        )  # fmt: skip
        params.generate_keypair(mechanism=Mechanism.EC_KEY_PAIR_GEN, store=True, id=b"\x01")
        session.generate_keypair(
            KeyType.RSA, 3072, mechanism=Mechanism.RSA_PKCS_KEY_PAIR_GEN, store=True, id=b"\x02"
        )
    slot = token.slot.slot_id
    return {
        "ECDSA P-256": Pkcs11Signer(Pkcs11KeySpec("softhsm", SOFTHSM2_MODULE, b"\x01", slot, PIN)),
        "RSA-3072": Pkcs11Signer(Pkcs11KeySpec("softhsm", SOFTHSM2_MODULE, b"\x02", slot, PIN)),
    }


def tpm_signers(folder: Path) -> tuple[dict[str, Any], subprocess.Popen[bytes]]:
    from aioipsec.tokens.tpm import TpmKeySpec, TpmSigner

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    state = folder / "swtpm"
    state.mkdir()
    process = subprocess.Popen(
        ["swtpm", "socket", "--tpm2", "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
         "--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1", "--tpmstate", f"dir={state}",
         "--flags", "not-need-init,startup-clear"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.5)
    tcti = f"swtpm:host=127.0.0.1,port={port}"
    env = {**os.environ, "TPM2TOOLS_TCTI": tcti}
    signers = {}
    for name, algorithm, handle in (("ECDSA P-256", "ecc256", 0x81010001),
                                    ("RSA-3072", "rsa3072", 0x81010002)):  # fmt: skip
        for command in (
            f"tpm2_createprimary -Q -C o -g sha256 -G ecc -c {state}/p.ctx",
            f"tpm2_create -Q -C {state}/p.ctx -G {algorithm} -u {state}/k.pub -r {state}/k.priv",
            f"tpm2_load -Q -C {state}/p.ctx -u {state}/k.pub -r {state}/k.priv -c {state}/k.ctx",
            f"tpm2_evictcontrol -Q -C o -c {state}/k.ctx {handle:#x}",
        ):
            subprocess.run(command.split(), env=env, check=True, capture_output=True)
            subprocess.run(["tpm2_flushcontext", "-t"], env=env, check=True, capture_output=True)
        signers[name] = TpmSigner(TpmKeySpec(tcti, handle))
    return signers, process


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    memory = {
        "ECDSA P-256": as_signer(ec.generate_private_key(ec.SECP256R1())),
        "RSA-3072": as_signer(rsa.generate_private_key(public_exponent=65537, key_size=3072)),
    }
    with tempfile.TemporaryDirectory() as tmp:
        backends = {"in memory": memory, "SoftHSM2 (PKCS#11)": softhsm_signers(Path(tmp))}
        tpm, process = tpm_signers(Path(tmp))
        backends["TPM (swtpm)"] = tpm
        try:
            print(f"{'backend':22} {'key':12} {'scheme':10} {'median ms':>10} {'p90 ms':>8}")
            for backend, signers in backends.items():
                for key, signer in signers.items():
                    for pss in (False, True) if key.startswith("RSA") else (False,):
                        median, p90 = measure(signer, args.rounds, rsa_pss=pss)
                        scheme = "PSS" if pss else ("PKCS#1" if key.startswith("RSA") else "ECDSA")
                        print(f"{backend:22} {key:12} {scheme:10} {median:10.3f} {p90:8.3f}")
        finally:
            process.terminate()
            process.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
