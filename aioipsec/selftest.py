"""Known-answer selftest: every record of ``aioipsec/vectors/*.json`` through our code.

Like strongSwan's ``crypto_test``: the daemon calls :func:`run_selftest` at start and refuses
to start when anything fails; ``aioipsec selftest`` (and ``python -m aioipsec.selftest``)
print :func:`format_table`.

Each record names its ``kind`` (or inherits the file's ``kind``); :data:`RUNNERS` maps a kind
to the function that checks it. A runner raises ``AssertionError`` on a mismatch; the code
it checks is imported plainly, so a broken module fails the run instead of being skipped.
Records of ``esp_*.json`` files belong to the data plane and go to
``esp.selftest.run_vector(record)``; when that module cannot be
imported each such record fails with the import error, never passes or is skipped.

The vectors are package data (``aioipsec/vectors/``), read with :mod:`importlib.resources`
so that an installed wheel finds them wherever it is run from. No vector files, or no ESP
vector files, is a failure of the run: an installation without its data must not start.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import json
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM

from ikev2.crypto import auth, sk
from ikev2.crypto.keyexchange import MontgomeryKeyExchange, new_key_exchange
from ikev2.crypto.keys import (
    IkeKeys,
    compute_skeyseed,
    derive_child_keymat,
    derive_ike_keys,
    derive_rekeyed_ike_keys,
)
from ikev2.crypto.modp import MODP_GENERATOR, MODP_PRIMES
from ikev2.crypto.prf import Prf
from ikev2.enums import EncrId, IntegId, KeId, PrfId
from ikev2.errors import IntegrityError, ProtocolError
from ikev2.payloads import KePayload

# The JSON vectors ship inside the package (pyproject package-data), not beside the checkout.
VECTORS_DIR: Traversable = files("aioipsec").joinpath("vectors")

Record = dict[str, Any]


@dataclass(frozen=True)
class CaseResult:
    """The outcome of one vector record."""

    file: str
    kind: str
    name: str
    source: str
    status: str  # "passed" | "failed" | "skipped"
    detail: str = ""

    @property
    def source_short(self) -> str:
        """The origin without the per-case part: the text file or RFC the record came from."""
        return self.source.split(" [", 1)[0].split(":", 1)[0].split(" COUNT", 1)[0]


@dataclass
class SelftestReport:
    """All case results of one selftest run."""

    results: list[CaseResult] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for result in self.results if result.status == status)

    @property
    def passed(self) -> int:
        return self.count("passed")

    @property
    def failed(self) -> int:
        return self.count("failed")

    @property
    def skipped(self) -> int:
        return self.count("skipped")

    @property
    def ok(self) -> bool:
        """True when nothing failed (skips are reported, not fatal) and something ran."""
        return self.failed == 0 and self.passed > 0

    @property
    def failures(self) -> list[CaseResult]:
        return [result for result in self.results if result.status == "failed"]


def _hex(record: Record, key: str) -> bytes:
    return bytes.fromhex(record[key] or "")


def _equal(what: str, got: bytes, expected: bytes) -> None:
    # Known-answer data only (no secrets of a live SA): printing a prefix helps debugging.
    if got != expected:
        raise AssertionError(
            f"{what}: got {got[:16].hex()}... ({len(got)} octets), "
            f"expected {expected[:16].hex()}... ({len(expected)} octets)"
        )


# --- PRF and key derivation ------------------------------------------------------------------
_INTEG_AS_PRF = {
    IntegId.AUTH_HMAC_SHA1_96: PrfId.PRF_HMAC_SHA1,
    IntegId.AUTH_HMAC_SHA2_256_128: PrfId.PRF_HMAC_SHA2_256,
    IntegId.AUTH_HMAC_SHA2_384_192: PrfId.PRF_HMAC_SHA2_384,
    IntegId.AUTH_HMAC_SHA2_512_256: PrfId.PRF_HMAC_SHA2_512,
}


def _prf(record: Record) -> Prf:
    return Prf(PrfId[record["prf"]])


def run_prf(record: Record) -> str:
    _equal(
        "PRF output",
        _prf(record)(_hex(record, "key"), _hex(record, "data")),
        _hex(record, "output"),
    )
    return "ikev2.crypto.prf"


def run_integ(record: Record) -> str:
    # The truncated-HMAC ICV is the PRF of the same hash cut to the ICV length (RFC 4868
    # sec. 2.1.1 / 2.6): checks our HMAC and the truncation lengths the SK/ESP code uses.
    integ = IntegId[record["integ"]]
    expected = _hex(record, "icv")
    prf = Prf(_INTEG_AS_PRF[integ])
    _equal("ICV", prf(_hex(record, "key"), _hex(record, "data"))[: len(expected)], expected)
    return "ikev2.crypto.prf"


def run_prf_plus(record: Record) -> str:
    expected = _hex(record, "output")
    got = _prf(record).plus(_hex(record, "key"), _hex(record, "seed"), len(expected))
    _equal("prf+", got, expected)
    return "ikev2.crypto.prf"


def _nonces(record: Record) -> tuple[bytes, bytes]:
    if "nonces" in record:  # Ni | Nr given as one string: for HMAC PRFs the key is the same
        return _hex(record, "nonces"), b""
    return _hex(record, "nonce_i"), _hex(record, "nonce_r")


def run_ike_skeyseed(record: Record) -> str:
    nonce_i, nonce_r = _nonces(record)
    got = compute_skeyseed(_prf(record), _hex(record, "shared_secret"), nonce_i, nonce_r)
    _equal("SKEYSEED", got, _hex(record, "skeyseed"))
    return "ikev2.crypto.keys"


def run_ike_dkm(record: Record) -> str:
    keys = derive_ike_keys(
        _prf(record),
        _hex(record, "shared_secret"),
        _hex(record, "nonce_i"),
        _hex(record, "nonce_r"),
        _hex(record, "spi_i"),
        _hex(record, "spi_r"),
        record["encr_key_len"],
        record["integ_key_len"],
    )
    got = b"".join(
        (keys.sk_d, keys.sk_ai, keys.sk_ar, keys.sk_ei, keys.sk_er, keys.sk_pi, keys.sk_pr)
    )
    _equal("DKM", got, _hex(record, "dkm"))
    return "ikev2.crypto.keys"


def run_child_keymat(record: Record) -> str:
    expected = _hex(record, "keymat")
    secret = record.get("shared_secret")
    got = derive_child_keymat(
        _prf(record),
        _hex(record, "sk_d"),
        _hex(record, "nonce_i"),
        _hex(record, "nonce_r"),
        bytes.fromhex(secret) if secret else None,
        len(expected),
    )
    _equal("Child SA KEYMAT", got, expected)
    return "ikev2.crypto.keys"


def run_rekey_skeyseed(record: Record) -> str:
    prf = _prf(record)
    keys = derive_rekeyed_ike_keys(
        prf,
        _hex(record, "sk_d_old"),
        prf,
        _hex(record, "shared_secret"),
        _hex(record, "nonce_i"),
        _hex(record, "nonce_r"),
        bytes(8),
        bytes(8),
        16,
        20,
    )
    _equal("SKEYSEED(rekey)", keys.skeyseed, _hex(record, "skeyseed"))
    return "ikev2.crypto.keys"


def _derive_from_record(record: Record) -> IkeKeys:
    return derive_ike_keys(
        _prf(record),
        _hex(record, "shared_secret"),
        _hex(record, "nonce_i"),
        _hex(record, "nonce_r"),
        _hex(record, "spi_i"),
        _hex(record, "spi_r"),
        record["encr_key_len"],
        record["integ_key_len"],
    )


def run_ike_keys(record: Record) -> str:
    keys = _derive_from_record(record)
    for name in ("skeyseed", "sk_d", "sk_ai", "sk_ar", "sk_ei", "sk_er", "sk_pi", "sk_pr"):
        _equal(name, getattr(keys, name), _hex(record, name))
    return "ikev2.crypto.keys"


def run_psk_auth(record: Record) -> str:
    prf = _prf(record)
    keys = _derive_from_record(record)
    id_body = _hex(record, "id_payload_body")
    _equal("prf(SK_pi, IDi')", prf(keys.sk_pi, id_body), _hex(record, "prf_sk_pi_id"))
    message, nonce_r = _hex(record, "ike_sa_init_request"), _hex(record, "nonce_r")
    octets = auth.signed_octets(message, nonce_r, prf, keys.sk_pi, id_body)
    got = auth.psk_auth(prf, _hex(record, "psk"), octets)
    _equal("AUTH", got, _hex(record, "auth"))
    return "ikev2.crypto.keys+auth"


# --- key exchange ----------------------------------------------------------------------------
def _check_ke_payload(record: Record, key: str, method: KeId, data: bytes) -> None:
    """A full KE payload as printed by RFC 5903: generic header | group | reserved | data."""
    payload = _hex(record, key)
    _equal(f"{key} length field", payload[2:4], len(payload).to_bytes(2, "big"))
    parsed = KePayload.parse(payload[4:])
    if parsed.group != method:
        raise AssertionError(f"{key}: group {parsed.group}, expected {method.name}")
    _equal(f"{key} data", parsed.data, data)


def run_ke(record: Record) -> str:
    method = KeId[record["method"]]
    initiator = new_key_exchange(method, private=_hex(record, "private_i"))
    responder = new_key_exchange(method, private=_hex(record, "private_r"))
    _equal("initiator public value", initiator.our_payload(), _hex(record, "public_i"))
    _equal("responder public value", responder.our_payload(), _hex(record, "public_r"))
    shared = _hex(record, "shared")
    _equal("initiator shared secret", initiator.compute(_hex(record, "public_r")), shared)
    _equal("responder shared secret", responder.compute(_hex(record, "public_i")), shared)
    used = "ikev2.crypto.keyexchange"
    if "ke_payload_i" in record:
        _check_ke_payload(record, "ke_payload_i", method, initiator.our_payload())
        _check_ke_payload(record, "ke_payload_r", method, responder.our_payload())
        used += "+payloads"
    return used


def run_x_function(record: Record) -> str:
    ke = MontgomeryKeyExchange(KeId[record["method"]], private=_hex(record, "scalar"))
    _equal("X25519/X448 output", ke.compute(_hex(record, "u")), _hex(record, "output"))
    return "ikev2.crypto.keyexchange"


def _pi_scaled(bits: int) -> int:
    """floor(pi * 2^bits) with Machin's formula in integers (64 guard bits)."""
    guard = 64
    scale = 1 << (bits + guard)

    def arctan_inverse(x: int) -> int:
        total, term, n, sign = 0, scale // x, 1, 1
        while term:
            total += sign * (term // n)
            term //= x * x
            n += 2
            sign = -sign
        return total

    return (4 * (4 * arctan_inverse(5) - arctan_inverse(239))) >> guard


def run_modp_group(record: Record) -> str:
    method = KeId[record["method"]]
    prime = MODP_PRIMES[method]
    _equal("prime", prime.to_bytes((prime.bit_length() + 7) // 8, "big"), _hex(record, "prime"))
    if record["generator"] != MODP_GENERATOR:
        raise AssertionError(f"generator {record['generator']} != {MODP_GENERATOR}")
    n = prime.bit_length()
    formula = 2**n - 2 ** (n - 64) - 1 + 2**64 * (_pi_scaled(n - 130) + record["k"])
    if formula != prime:
        raise AssertionError("prime does not follow the RFC 2409/3526 formula")
    ke = new_key_exchange(method, private=b"\x03")
    _equal("g^3", ke.our_payload(), (8).to_bytes(len(_hex(record, "prime")), "big"))
    return "ikev2.crypto.modp+keyexchange"


class NistKatDrbg:
    """AES-256 CTR_DRBG as in the NIST PQC KAT generator (``rng.c``), no personalization.

    Only to reproduce KAT files that publish the DRBG seed (liboqs / strongSwan ML-KEM
    vectors); never a source of keys.
    """

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 48:
            raise ValueError("the KAT DRBG seed is 48 octets")
        self._key = bytes(32)
        self._v = bytes(16)
        self._update(seed)

    def _next_block(self) -> bytes:
        self._v = ((int.from_bytes(self._v, "big") + 1) % (1 << 128)).to_bytes(16, "big")
        return Cipher(algorithms.AES(self._key), modes.ECB()).encryptor().update(self._v)

    def _update(self, provided: bytes | None) -> None:
        temp = b"".join(self._next_block() for _ in range(3))
        if provided is not None:
            temp = bytes(a ^ b for a, b in zip(temp, provided))
        self._key, self._v = temp[:32], temp[32:]

    def random_bytes(self, length: int) -> bytes:
        out = b""
        while len(out) < length:
            out += self._next_block()
        self._update(None)
        return out[:length]


def run_ke_mlkem_kat(record: Record) -> str:
    # liboqs KAT: keypair draws d || z (64 octets) in one call, encapsulation then m (32).
    method = KeId[record["method"]]
    drbg = NistKatDrbg(_hex(record, "drbg_seed"))
    keygen_seed, encaps_randomness = drbg.random_bytes(64), drbg.random_bytes(32)
    initiator = new_key_exchange(method, private=keygen_seed)
    responder = new_key_exchange(method, private=encaps_randomness)
    ek, shared = _hex(record, "encapsulation_key"), _hex(record, "shared")
    _equal("encapsulation key", initiator.our_payload(), ek)
    _equal("responder shared secret", responder.compute(ek), shared)
    _equal("ciphertext", responder.our_payload(), _hex(record, "ciphertext"))
    _equal("initiator shared secret", initiator.compute(_hex(record, "ciphertext")), shared)
    return "ikev2.crypto.mlkem_ke"


# --- ciphers ---------------------------------------------------------------------------------
_GCM_ICV = {EncrId.ENCR_AES_GCM_8: 8, EncrId.ENCR_AES_GCM_12: 12, EncrId.ENCR_AES_GCM_16: 16}
_CCM_ICV = {EncrId.ENCR_AES_CCM_8: 8, EncrId.ENCR_AES_CCM_12: 12, EncrId.ENCR_AES_CCM_16: 16}


def _expected_unpadded(plaintext: bytes) -> bytes | None:
    """What SK ``open`` must return for a KAT plaintext: the last octet is read as Pad
    Length (RFC 7296 sec. 3.14); None when that length is impossible (then open must fail
    with INVALID_SYNTAX, after the ICV verified)."""
    if not plaintext or plaintext[-1] + 1 > len(plaintext):
        return None
    return plaintext[: len(plaintext) - 1 - plaintext[-1]]


def _sk_open_check(cipher: Any, aad: bytes, body: bytes, plaintext: bytes) -> None:
    expected = _expected_unpadded(plaintext)
    try:
        got = cipher.open(aad, body)
    except IntegrityError as exc:
        raise AssertionError(f"SK open: ICV rejected ({exc.reason})") from None
    except ProtocolError:
        if expected is not None:
            raise AssertionError("SK open refused a valid padding") from None
        return
    if expected is None:
        raise AssertionError("SK open accepted an impossible Pad Length")
    _equal("SK open plaintext", got, expected)


def run_aead(record: Record) -> str:
    encr = EncrId[record["encr"]]
    key, salt, iv = _hex(record, "key"), _hex(record, "salt"), _hex(record, "iv")
    aad, plaintext, expected = (
        _hex(record, "aad"),
        _hex(record, "plaintext"),
        _hex(record, "ciphertext"),
    )
    nonce = salt + iv
    if encr in _GCM_ICV:
        icv = _GCM_ICV[encr]
        encryptor = Cipher(algorithms.AES(key), modes.GCM(nonce)).encryptor()
        encryptor.authenticate_additional_data(aad)
        got = encryptor.update(plaintext) + encryptor.finalize() + encryptor.tag[:icv]
        if icv == 16:
            _equal("AESGCM", AESGCM(key).encrypt(nonce, plaintext, aad), expected)
    else:
        got = AESCCM(key, tag_length=_CCM_ICV[encr]).encrypt(nonce, plaintext, aad)
    _equal("ciphertext||ICV", got, expected)
    if not plaintext:
        # An SK payload always carries at least the Pad Length octet: no SK form to test.
        return "cryptography"
    cipher = sk.make_sk_cipher(encr, 8 * len(key), None, key + salt, None)
    _sk_open_check(cipher, aad, iv + expected, plaintext)
    # and a flipped ICV bit must be refused
    tampered = iv + expected[:-1] + bytes((expected[-1] ^ 1,))
    try:
        cipher.open(aad, tampered)
    except IntegrityError:
        pass
    else:
        raise AssertionError("SK open accepted a modified ICV")
    return "cryptography+ikev2.crypto.sk"


def run_cipher_cbc(record: Record) -> str:
    key, iv = _hex(record, "key"), _hex(record, "iv")
    plaintext, expected = _hex(record, "plaintext"), _hex(record, "ciphertext")
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    _equal("AES-CBC ciphertext", encryptor.update(plaintext) + encryptor.finalize(), expected)
    # Encrypt-then-MAC around the KAT ciphertext, with an ICV computed here (hmac module).
    integ_key = bytes(range(32))
    aad = b"selftest-aad"
    icv = hmac.new(integ_key, aad + iv + expected, hashlib.sha256).digest()[:16]
    cipher = sk.make_sk_cipher(
        EncrId.ENCR_AES_CBC, 8 * len(key), IntegId.AUTH_HMAC_SHA2_256_128, key, integ_key
    )
    _sk_open_check(cipher, aad, iv + expected + icv, plaintext)
    return "cryptography+ikev2.crypto.sk"


def run_sk_payload(record: Record) -> str:
    """A whole SK payload body: seal with the given IV must give the RFC's bytes exactly
    (padding and Pad Length included), and open must return the inner payloads."""
    encr = EncrId[record["encr"]]
    integ = IntegId[record["integ"]] if record.get("integ") else None
    sk_a = bytes.fromhex(record["sk_a"]) if record.get("sk_a") else None
    cipher = sk.make_sk_cipher(encr, record.get("encr_key_bits"), integ, _hex(record, "sk_e"), sk_a)
    aad, sealed = _hex(record, "aad"), _hex(record, "sealed")
    inner = _hex(record, "inner_payloads")
    _equal("sealed SK body", cipher.seal(aad, inner, _hex(record, "iv")), sealed)
    _equal("opened SK body", cipher.open(aad, sealed), inner)
    if record.get("ike_message"):
        _equal("IKE message", aad + sealed, _hex(record, "ike_message"))
    return "ikev2.crypto.sk"


def run_cipher_ctr(record: Record) -> str:
    # RFC 3686 sec. 4 and 5.1: KEYMAT = key || 4-octet nonce; counter block = nonce || IV ||
    # 0x00000001. No IKE code uses AES-CTR; this checks the primitive and the key split.
    keymat, iv = _hex(record, "keymat"), _hex(record, "iv")
    key, nonce = keymat[:-4], keymat[-4:]
    counter_block = nonce + iv + b"\x00\x00\x00\x01"
    _equal("counter block", counter_block, _hex(record, "counter_block"))
    encryptor = Cipher(algorithms.AES(key), modes.CTR(counter_block)).encryptor()
    got = encryptor.update(_hex(record, "plaintext")) + encryptor.finalize()
    _equal("AES-CTR ciphertext", got, _hex(record, "ciphertext"))
    return "cryptography"


RUNNERS: dict[str, Callable[[Record], str]] = {
    "prf": run_prf,
    "integ": run_integ,
    "prf_plus": run_prf_plus,
    "ike_skeyseed": run_ike_skeyseed,
    "ike_dkm": run_ike_dkm,
    "ike_keys": run_ike_keys,
    "child_keymat": run_child_keymat,
    "rekey_skeyseed": run_rekey_skeyseed,
    "psk_auth": run_psk_auth,
    "ke": run_ke,
    "x_function": run_x_function,
    "modp_group": run_modp_group,
    "ke_mlkem_kat": run_ke_mlkem_kat,
    "aead": run_aead,
    "cipher_cbc": run_cipher_cbc,
    "cipher_ctr": run_cipher_ctr,
    "sk_payload": run_sk_payload,
}


def _run_esp(record: Record) -> str:
    # A broken data plane is a failure, not a skip: the daemon must not start without it.
    try:
        esp_selftest = importlib.import_module("esp.selftest")
    except Exception as exc:
        raise AssertionError(
            f"esp.selftest failed to import ({type(exc).__name__}: {exc}): "
            "the ESP vectors cannot run; reinstall aioipsec"
        ) from exc
    run_vector = getattr(esp_selftest, "run_vector", None)
    if run_vector is None:
        raise AssertionError("esp.selftest has no run_vector: the ESP vectors cannot run")
    run_vector(record)
    return "esp"


# --- loading and running ---------------------------------------------------------------------
def vector_files(vectors_dir: Path | Traversable | None = None) -> list[Traversable]:
    """The ``*.json`` files of ``vectors_dir`` (default: the package's), sorted by name."""
    folder = VECTORS_DIR if vectors_dir is None else vectors_dir
    if not folder.is_dir():
        return []
    found = [entry for entry in folder.iterdir() if entry.name.endswith(".json")]
    return sorted(found, key=lambda entry: entry.name)


def load_vector_files(
    vectors_dir: Path | Traversable | None = None,
) -> list[tuple[str, Record]]:
    """(file name, record) for every record of every ``*.json`` file, in a stable order.

    A file is either a list of records or an object with ``records`` (and optionally a
    file-wide ``kind`` that records without their own inherit).
    """
    loaded: list[tuple[str, Record]] = []
    for path in vector_files(vectors_dir):
        document = json.loads(path.read_text())
        if isinstance(document, list):
            records, default_kind = document, None
        else:
            records, default_kind = document.get("records", []), document.get("kind")
        for record in records:
            if default_kind and "kind" not in record:
                record = {**record, "kind": default_kind}
            loaded.append((path.name, record))
    return loaded


def run_record(file_name: str, record: Record) -> CaseResult:
    """Run one record; never raises (an unexpected exception is a failure with its text)."""
    kind = str(record.get("kind", "?"))
    name = str(record.get("name") or record.get("description") or record.get("id") or "?")
    source = str(record.get("source", file_name))

    def result(status: str, detail: str = "") -> CaseResult:
        return CaseResult(file_name, kind, name, source, status, detail)

    if file_name.startswith("esp_"):
        runner: Callable[[Record], str] | None = _run_esp
    else:
        runner = RUNNERS.get(kind)
    if runner is None:
        return result("failed", f"no selftest runner for kind {kind!r}")
    try:
        used = runner(record)
    except AssertionError as exc:
        return result("failed", str(exc) or "mismatch")
    except Exception as exc:  # a crash in the code under test is a failed case, not a crash
        return result("failed", f"{type(exc).__name__}: {exc}")
    return result("passed", used)


def run_selftest(vectors_dir: Path | Traversable | None = None) -> SelftestReport:
    """Run every vector record; ``report.ok`` is False if any failed or none ran.

    Missing data fails the run with a case of its own (file ``-``) that says where it looked:
    no ``*.json`` at all, or no ``esp_*.json`` (the data plane would go unchecked).
    """
    started = time.monotonic()
    report = SelftestReport()
    folder = VECTORS_DIR if vectors_dir is None else vectors_dir
    loaded = load_vector_files(folder)
    for file_name, record in loaded:
        report.results.append(run_record(file_name, record))
    if not loaded:
        report.results.append(
            CaseResult(
                "-", "files", "vector files", str(folder), "failed",
                f"no *.json vector files in {folder}: the installation lacks its package "
                "data; reinstall aioipsec (pip install --force-reinstall aioipsec)",
            )
        )  # fmt: skip
    elif not any(file_name.startswith("esp_") for file_name, _record in loaded):
        report.results.append(
            CaseResult(
                "-", "files", "ESP vector files", str(folder), "failed",
                f"no esp_*.json vector files in {folder}: the ESP data plane would go "
                "unchecked; reinstall aioipsec",
            )
        )  # fmt: skip
    report.seconds = time.monotonic() - started
    return report


def _grouped(results: Iterable[CaseResult]) -> list[tuple[str, str, str, dict[str, int]]]:
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for case in results:
        entry = groups.setdefault(
            (case.kind, case.source_short),
            {"passed": 0, "failed": 0, "skipped": 0, "code": set()},
        )
        entry[case.status] += 1
        if case.status in ("passed", "skipped") and case.detail:
            entry["code"].add(case.detail)
    rows = []
    for (kind, source), entry in groups.items():
        counts = {status: entry[status] for status in ("passed", "failed", "skipped")}
        rows.append((kind, source, ", ".join(sorted(entry["code"])), counts))
    return rows


def format_table(report: SelftestReport) -> str:
    """A plain-text table: kind, source, code exercised, passed/failed/skipped; then failures."""
    header = ("kind", "source", "passed", "failed", "skipped", "code")
    rows = [
        (kind, source, str(c["passed"]), str(c["failed"]), str(c["skipped"]), code)
        for kind, source, code, c in _grouped(report.results)
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    widths[-1] = 0  # the last column is not padded

    def line(cells: tuple[str, ...]) -> str:
        parts = []
        for index, cell in enumerate(cells):
            numeric = index in (2, 3, 4)
            parts.append(cell.rjust(widths[index]) if numeric else cell.ljust(widths[index]))
        return "  ".join(parts).rstrip()

    out = [line(header), line(tuple("-" * w if w else "----" for w in widths))]
    out.extend(line(row) for row in rows)
    verdict = "OK" if report.ok else "FAILED"
    out.append("")
    out.append(
        f"selftest {verdict}: {report.passed} passed, {report.failed} failed, "
        f"{report.skipped} skipped in {report.seconds:.2f} s"
    )
    out.extend(f"note: {note}" for note in report.notes)
    for failure in report.failures:
        out.append(f"FAILED {failure.file} {failure.kind} {failure.name}: {failure.detail}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """``python -m aioipsec.selftest [VECTORS_DIR]``: print the table, exit 1 on failure."""
    args = sys.argv[1:] if argv is None else argv
    report = run_selftest(Path(args[0]) if args else None)
    print(format_table(report))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
