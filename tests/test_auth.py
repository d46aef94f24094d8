"""AUTH payload computation (RFC 7296 sec. 2.15) and signatures (RFC 7427, RFC 4754).

PSK: the worked example in tests/data/reference/vectors/ikev2_worked_example_psk_auth.txt
(record C2: initiator PSK AUTH, PRF_HMAC_SHA1, with its expected AUTH value).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ikev2.crypto.auth import (
    KEY_PAD,
    AuthenticationError,
    SignatureScheme,
    build_signature_hash_algorithms,
    choose_signature_scheme,
    parse_signature_hash_algorithms,
    psk_auth,
    sign_auth,
    signed_octets,
    verify_psk_auth,
    verify_signature_auth,
)
from ikev2.enums import AuthMethod, HashAlgorithm, NotifyType
from ikev2.errors import ProtocolError
from ikev2.policy import AlgorithmPolicy
from tests.conftest_pki import Pki, pki_fixture  # noqa: F401
from tests.reference_data import REFERENCE_VECTORS

PSK_FILE = REFERENCE_VECTORS / "ikev2_worked_example_psk_auth.txt"


def _record(name: str) -> dict[str, str]:
    """The ``key = value`` lines of one ``[name ...]`` record (comments stripped)."""
    values: dict[str, str] = {}
    inside = False
    for line in PSK_FILE.read_text().splitlines():
        if line.startswith("["):
            inside = line.startswith(f"[{name}")
            continue
        if inside and "=" in line and not line.startswith("#"):
            key = line.split("=", 1)[0]
            value = line.rsplit("=", 1)[1]  # "AUTH = prf(...) = <hex>": the hex at the end
            values[key.strip()] = value.split("#", 1)[0].strip()
    return values


def hmac_sha1(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha1).digest()


def _derive_sk_pi(c2: dict[str, str]) -> bytes:
    """SK_pi for record C2 from its own inputs (RFC 7296 sec. 2.14, PRF_HMAC_SHA1,
    AES-CBC-128 + HMAC-SHA1-96 as in the IKE_SA_INIT request's proposal)."""
    ni, nr = bytes.fromhex(c2["Ni"]), bytes.fromhex(c2["Nr"])
    spis = bytes.fromhex(c2["SPIi"]) + bytes.fromhex(c2["SPIr"])
    skeyseed = hmac_sha1(ni + nr, bytes.fromhex(c2["g^ir"]))
    needed = 20 + 20 + 20 + 16 + 16 + 20 + 20  # SK_d, SK_ai, SK_ar, SK_ei, SK_er, SK_pi, SK_pr
    stream, block, counter = b"", b"", 1
    while len(stream) < needed:
        block = hmac_sha1(skeyseed, block + ni + nr + spis + bytes([counter]))
        stream += block
        counter += 1
    return stream[20 + 20 + 20 + 16 + 16 : 20 + 20 + 20 + 16 + 16 + 20]


@pytest.fixture(scope="module")
def c2() -> dict[str, str]:
    if not PSK_FILE.exists():
        pytest.fail(f"reference vector file missing: {PSK_FILE}")
    return _record("C2")


def test_key_pad_is_the_17_octets_of_rfc7296() -> None:
    assert KEY_PAD == b"Key Pad for IKEv2" and len(KEY_PAD) == 17


def test_psk_auth_worked_example(c2: dict[str, str]) -> None:
    sk_pi = _derive_sk_pi(c2)
    id_body = bytes.fromhex(c2["IDi_body"])
    assert hmac_sha1(sk_pi, id_body).hex() == c2["prf(SK_pi, IDi')"]
    octets = signed_octets(
        bytes.fromhex(c2["IKE_SA_INIT_request"]),
        bytes.fromhex(c2["Nr"]),
        hmac_sha1,
        sk_pi,
        id_body,
    )
    psk = bytes.fromhex(c2["PSK"])
    expected = c2["AUTH"]
    assert psk_auth(hmac_sha1, psk, octets).hex() == expected
    verify_psk_auth(hmac_sha1, psk, octets, bytes.fromhex(expected), peer_id="10.0.3.1")


def test_psk_auth_with_the_project_prf(c2: dict[str, str]) -> None:
    from ikev2.crypto.prf import Prf
    from ikev2.enums import PrfId

    prf = Prf(PrfId.PRF_HMAC_SHA1)
    sk_pi = _derive_sk_pi(c2)
    octets = signed_octets(
        bytes.fromhex(c2["IKE_SA_INIT_request"]),
        bytes.fromhex(c2["Nr"]),
        prf,
        sk_pi,
        bytes.fromhex(c2["IDi_body"]),
    )
    assert psk_auth(prf, bytes.fromhex(c2["PSK"]), octets).hex() == (c2["AUTH"])


def test_wrong_psk_is_refused_without_leaking_it(c2: dict[str, str]) -> None:
    octets = signed_octets(b"msg", b"nonce" * 4, hmac_sha1, b"k" * 20, b"\x02\x00\x00\x00a.b")
    good = psk_auth(hmac_sha1, b"right secret", octets)
    with pytest.raises(AuthenticationError) as info:
        verify_psk_auth(hmac_sha1, b"wrong secret", octets, good, peer_id="a.b")
    assert isinstance(info.value, ProtocolError)
    assert info.value.notify is NotifyType.AUTHENTICATION_FAILED
    assert info.value.reason == (
        "AUTH payload does not verify with the configured PSK for id a.b (PSK mismatch?)"
    )
    assert "secret" not in info.value.reason
    with pytest.raises(AuthenticationError):
        verify_psk_auth(hmac_sha1, b"right secret", octets, good[:-1], peer_id="a.b")
    with pytest.raises(AuthenticationError):  # a tampered message changes the octets
        verify_psk_auth(
            hmac_sha1,
            b"right secret",
            signed_octets(b"msG", b"nonce" * 4, hmac_sha1, b"k" * 20, b"\x02\x00\x00\x00a.b"),
            good,
        )


def test_signed_octets_layout() -> None:
    octets = signed_octets(
        b"M" * 10, b"N" * 16, hmac_sha1, b"K", b"\x01\x00\x00\x00\x0a\x00\x00\x01"
    )
    assert octets[:10] == b"M" * 10 and octets[10:26] == b"N" * 16
    assert octets[26:] == hmac_sha1(b"K", b"\x01\x00\x00\x00\x0a\x00\x00\x01")
    with pytest.raises(ValueError):
        signed_octets(b"M", b"N", hmac_sha1, b"K", b"\x01\x00")


# ======================================================================================
# Signatures (keys and certificates made by strongSwan's pki tool; signatures cross-checked
# with the openssl command line tool)
# ======================================================================================

OCTETS = b"IKE_SA_INIT message | peer nonce | prf(SK_p, ID')" * 3
ALL_HASHES = [
    HashAlgorithm.SHA2_256,
    HashAlgorithm.SHA2_384,
    HashAlgorithm.SHA2_512,
    HashAlgorithm.IDENTITY,
]
SHA1_OK = AlgorithmPolicy(allow_weak=frozenset({"sha1_signatures"}))


def _signature_algorithm_der(cert: x509.Certificate) -> bytes:
    """The raw signatureAlgorithm TLV of a certificate (2nd element of the outer SEQUENCE)."""
    der = cert.public_bytes(serialization.Encoding.DER)

    def tlv(data: bytes, pos: int) -> tuple[int, int]:  # (content start, end)
        first = data[pos + 1]
        if first < 0x80:
            return pos + 2, pos + 2 + first
        n = first & 0x7F
        length = int.from_bytes(data[pos + 2 : pos + 2 + n], "big")
        return pos + 2 + n, pos + 2 + n + length

    start, _ = tlv(der, 0)
    _, tbs_end = tlv(der, start)
    _, alg_end = tlv(der, tbs_end)
    return der[tbs_end:alg_end]


@pytest.mark.parametrize("digest", ["sha256", "sha384", "sha512"])
def test_algorithm_identifiers_match_pki(pki: Pki, digest: str) -> None:
    hash_id = {
        "sha256": HashAlgorithm.SHA2_256,
        "sha384": HashAlgorithm.SHA2_384,
        "sha512": HashAlgorithm.SHA2_512,
    }[digest]
    pss = SignatureScheme("rsa", hash_id, "pss").algorithm_identifier()
    assert pss == _signature_algorithm_der(pki[f"pss_{digest}"].cert)
    pkcs1 = SignatureScheme("rsa", hash_id, "pkcs1").algorithm_identifier()
    assert pkcs1 == _signature_algorithm_der(pki[f"pkcs1_{digest}"].cert)
    ecdsa_id = SignatureScheme("ecdsa", hash_id).algorithm_identifier()
    assert ecdsa_id == _signature_algorithm_der(pki[f"ecdsa_{digest}"].cert)


def test_ed25519_identifier_matches_pki(pki: Pki) -> None:
    ed = SignatureScheme("ed25519", HashAlgorithm.IDENTITY).algorithm_identifier()
    assert (
        ed == _signature_algorithm_der(pki["eddsa_signed"].cert) == bytes.fromhex("300506032b6570")
    )


def _openssl(*args: str, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["openssl", *args], input=data, capture_output=True, timeout=60, check=False
    )


def _openssl_verify(pki: Pki, name: str, scheme: SignatureScheme, signature: bytes) -> bool:
    directory = pki.directory
    (directory / "octets.bin").write_bytes(OCTETS)
    (directory / "sig.bin").write_bytes(signature)
    pub = directory / f"{name}.pub.pem"
    pub.write_bytes(pki[name].public_pem)
    if scheme.key_type == "ed25519":
        args = ["pkeyutl", "-verify", "-pubin", "-inkey", str(pub), "-rawin"]
        args += ["-in", str(directory / "octets.bin"), "-sigfile", str(directory / "sig.bin")]
    else:
        digest = {2: "-sha256", 3: "-sha384", 4: "-sha512", 1: "-sha1"}[scheme.hash]
        args = ["dgst", digest, "-verify", str(pub), "-signature", str(directory / "sig.bin")]
        if scheme.rsa_padding == "pss":
            args += ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest"]
        args.append(str(directory / "octets.bin"))
    return _openssl(*args).returncode == 0


def _openssl_sign(pki: Pki, name: str, scheme: SignatureScheme) -> bytes:
    directory = pki.directory
    (directory / "octets.bin").write_bytes(OCTETS)
    key = str(pki[name].key_path)
    if scheme.key_type == "ed25519":
        args = ["pkeyutl", "-sign", "-inkey", key, "-rawin", "-in", str(directory / "octets.bin")]
    else:
        digest = {2: "-sha256", 3: "-sha384", 4: "-sha512", 1: "-sha1"}[scheme.hash]
        args = ["dgst", digest, "-sign", key]
        if scheme.rsa_padding == "pss":
            args += ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest"]
        args.append(str(directory / "octets.bin"))
    result = _openssl(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _split_7427(auth_data: bytes) -> tuple[bytes, bytes]:
    return auth_data[1 : 1 + auth_data[0]], auth_data[1 + auth_data[0] :]


@pytest.mark.parametrize(
    ("name", "rsa_pss", "expected"),
    [
        ("rsa", False, "RSA PKCS#1 v1.5 with SHA2_256"),
        ("rsa", True, "RSA-PSS with SHA2_256"),
        ("ecdsa256", False, "ECDSA with SHA2_256"),
        ("ecdsa384", False, "ECDSA with SHA2_384"),
        ("ecdsa521", False, "ECDSA with SHA2_512"),
        ("ed25519", False, "Ed25519"),
    ],
)
def test_rfc7427_sign_verify_and_openssl_agrees(
    pki: Pki, name: str, rsa_pss: bool, expected: str
) -> None:
    entity = pki[name]
    method, scheme = choose_signature_scheme(entity.key, ALL_HASHES, rsa_pss=rsa_pss)
    assert method is AuthMethod.DIGITAL_SIGNATURE and scheme.name == expected
    auth_data = sign_auth(entity.key, OCTETS, method, scheme)
    identifier, signature = _split_7427(auth_data)
    assert identifier == scheme.algorithm_identifier()
    # our signature verifies with openssl ...
    assert _openssl_verify(pki, name, scheme, signature)
    # ... and with our verifier, using the key from the pki-made certificate
    public = entity.cert.public_key()
    assert verify_signature_auth(public, method, auth_data, OCTETS, peer_id=name).name == expected
    # openssl's signature verifies with ours
    theirs = _openssl_sign(pki, name, scheme)
    verify_signature_auth(public, method, bytes([len(identifier)]) + identifier + theirs, OCTETS)
    # a changed octet anywhere in the signed data fails
    with pytest.raises(AuthenticationError, match="does not verify"):
        verify_signature_auth(public, method, auth_data, OCTETS[:-1] + b"X", peer_id=name)


@pytest.mark.parametrize(
    ("name", "method"),
    [
        ("ecdsa256", AuthMethod.ECDSA_SHA256_P256),
        ("ecdsa384", AuthMethod.ECDSA_SHA384_P384),
        ("ecdsa521", AuthMethod.ECDSA_SHA512_P521),
    ],
)
def test_rfc4754_ecdsa_raw_r_s(pki: Pki, name: str, method: AuthMethod) -> None:
    entity = pki[name]
    chosen, scheme = choose_signature_scheme(entity.key, None)  # peer sent no hash notify
    assert chosen is method
    auth_data = sign_auth(entity.key, OCTETS, chosen, scheme)
    size = {9: 32, 10: 48, 11: 66}[method]
    assert len(auth_data) == 2 * size
    der = encode_dss_signature(
        int.from_bytes(auth_data[:size], "big"), int.from_bytes(auth_data[size:], "big")
    )
    assert _openssl_verify(pki, name, scheme, der)
    verify_signature_auth(entity.cert.public_key(), method, auth_data, OCTETS)
    theirs = _openssl_sign(pki, name, scheme)
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    r, s = decode_dss_signature(theirs)
    raw = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    verify_signature_auth(entity.cert.public_key(), method, raw, OCTETS)
    with pytest.raises(AuthenticationError, match="RFC 4754 needs"):
        verify_signature_auth(entity.cert.public_key(), method, raw[:-1], OCTETS)


def test_rfc4754_method_with_the_wrong_curve(pki: Pki) -> None:
    _, scheme = choose_signature_scheme(pki["ecdsa384"].key, None)
    auth_data = sign_auth(pki["ecdsa384"].key, OCTETS, AuthMethod.ECDSA_SHA384_P384, scheme)
    with pytest.raises(AuthenticationError, match="needs a secp256r1 key"):
        verify_signature_auth(
            pki["ecdsa384"].cert.public_key(), AuthMethod.ECDSA_SHA256_P256, auth_data, OCTETS
        )


def test_legacy_rsa_method_1_needs_the_sha1_setting(pki: Pki) -> None:
    entity = pki["rsa"]
    with pytest.raises(AuthenticationError, match="sha1_signatures"):
        choose_signature_scheme(entity.key, None)
    method, scheme = choose_signature_scheme(entity.key, None, policy=SHA1_OK)
    assert method is AuthMethod.RSA_DIGITAL_SIGNATURE and scheme.hash is HashAlgorithm.SHA1
    auth_data = sign_auth(entity.key, OCTETS, method, scheme)
    assert _openssl_verify(pki, "rsa", scheme, auth_data)
    verify_signature_auth(entity.cert.public_key(), method, auth_data, OCTETS, policy=SHA1_OK)
    with pytest.raises(AuthenticationError, match="sha1_signatures"):
        verify_signature_auth(entity.cert.public_key(), method, auth_data, OCTETS)


def test_sha1_in_rfc7427_is_refused_by_default(pki: Pki) -> None:
    entity = pki["rsa"]
    scheme = SignatureScheme("rsa", HashAlgorithm.SHA1, "pkcs1")
    auth_data = sign_auth(entity.key, OCTETS, AuthMethod.DIGITAL_SIGNATURE, scheme)
    with pytest.raises(AuthenticationError, match="SHA-1 MUST NOT"):
        verify_signature_auth(
            entity.cert.public_key(), AuthMethod.DIGITAL_SIGNATURE, auth_data, OCTETS
        )
    verify_signature_auth(
        entity.cert.public_key(), AuthMethod.DIGITAL_SIGNATURE, auth_data, OCTETS, policy=SHA1_OK
    )
    # and we never pick SHA-1 even if it is the only hash the peer offers
    with pytest.raises(AuthenticationError):
        choose_signature_scheme(entity.key, [HashAlgorithm.SHA1])


def test_hash_choice_follows_the_peer(pki: Pki) -> None:
    _, scheme = choose_signature_scheme(pki["rsa"].key, [HashAlgorithm.SHA2_512])
    assert scheme.hash is HashAlgorithm.SHA2_512
    _, scheme = choose_signature_scheme(
        pki["ecdsa384"].key, [HashAlgorithm.SHA2_256, HashAlgorithm.SHA2_384]
    )
    assert scheme.hash is HashAlgorithm.SHA2_384  # the curve's own hash first
    with pytest.raises(AuthenticationError, match="ed25519"):
        choose_signature_scheme(pki["ed25519"].key, [HashAlgorithm.SHA2_256])


def test_signature_hash_notify_data() -> None:
    data = build_signature_hash_algorithms()
    assert data == bytes.fromhex("0002000300040005")
    assert parse_signature_hash_algorithms(data) == ALL_HASHES
    assert parse_signature_hash_algorithms(b"\x00\x02\x12\x34") == [HashAlgorithm.SHA2_256, 0x1234]
    assert parse_signature_hash_algorithms(b"") == []
    with pytest.raises(ProtocolError, match="odd length"):
        parse_signature_hash_algorithms(b"\x00\x02\x00")


# ---- bad inputs (bad-inputs.md: AUTH section) -----------------------------------------


def _pss_identifier(salt: int, *, mgf_params: bool = True, hash_params: bool = True) -> bytes:
    sha256 = bytes.fromhex("300d06096086480165030402010500")
    parts = b""
    if hash_params:
        parts += b"\xa0" + bytes([len(sha256)]) + sha256
    mgf = bytes.fromhex("06092a864886f70d010108") + (sha256 if mgf_params else b"")
    mgf_seq = b"\x30" + bytes([len(mgf)]) + mgf
    parts += b"\xa1" + bytes([len(mgf_seq)]) + mgf_seq
    parts += b"\xa2\x03\x02\x01" + bytes([salt])
    params = b"\x30" + bytes([len(parts)]) + parts
    body = bytes.fromhex("06092a864886f70d01010a") + params
    return b"\x30" + bytes([len(body)]) + body


def test_pss_identifier_helper_is_right(pki: Pki) -> None:
    assert _pss_identifier(32) == _signature_algorithm_der(pki["pss_sha256"].cert)


def test_pss_salt_longer_than_hash_is_refused(pki: Pki) -> None:
    """strongSwan CVE-2021-41990."""
    key = pki["rsa"].key
    assert isinstance(key, rsa.RSAPrivateKey)
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    signature = key.sign(
        OCTETS, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=40), hashes.SHA256()
    )
    identifier = _pss_identifier(40)
    with pytest.raises(AuthenticationError, match="salt length 40 is longer"):
        verify_signature_auth(
            pki["rsa"].cert.public_key(),
            AuthMethod.DIGITAL_SIGNATURE,
            bytes([len(identifier)]) + identifier + signature,
            OCTETS,
        )


def test_pss_with_a_shorter_salt_verifies(pki: Pki) -> None:
    key = pki["rsa"].key
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    signature = key.sign(  # type: ignore[attr-defined]  # Entity.key is typed object: RSA here
        OCTETS, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=20), hashes.SHA256()
    )
    identifier = _pss_identifier(20)
    verify_signature_auth(
        pki["rsa"].cert.public_key(),
        AuthMethod.DIGITAL_SIGNATURE,
        bytes([len(identifier)]) + identifier + signature,
        OCTETS,
    )


@pytest.mark.parametrize(
    ("identifier", "pattern"),
    [
        (_pss_identifier(32, mgf_params=False), "MGF1 without hash parameters"),
        (_pss_identifier(32, hash_params=False), "without hashAlgorithm"),
        (bytes.fromhex("300b06092a864886f70d01010a"), "without parameters"),
        (bytes.fromhex("300d06092a864886f70d01010b0101ff"), "malformed AlgorithmIdentifier"),
        (bytes.fromhex("300d06092a864886f70d01010b05"), "malformed AlgorithmIdentifier"),
        (bytes.fromhex("3007060560864801ff"), "unsupported signature algorithm"),
    ],
)
def test_malformed_identifiers_are_refused(pki: Pki, identifier: bytes, pattern: str) -> None:
    signature = bytes(384)
    with pytest.raises(AuthenticationError, match=pattern):
        verify_signature_auth(
            pki["rsa"].cert.public_key(),
            AuthMethod.DIGITAL_SIGNATURE,
            bytes([len(identifier)]) + identifier + signature,
            OCTETS,
        )


def test_rsa_signature_equal_to_n_is_refused(pki: Pki) -> None:
    """strongSwan CVE-2017-11185: s == n (and s > n) must fail cleanly."""
    public = pki["rsa"].cert.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    n = public.public_numbers().n
    identifier = SignatureScheme("rsa", HashAlgorithm.SHA2_256, "pkcs1").algorithm_identifier()
    for value in (n, n + 1, 2 ** (8 * 384) - 1):
        auth_data = bytes([len(identifier)]) + identifier + value.to_bytes(384, "big")
        with pytest.raises(AuthenticationError, match="not below modulus n"):
            verify_signature_auth(public, AuthMethod.DIGITAL_SIGNATURE, auth_data, OCTETS)
    auth_data = bytes([len(identifier)]) + identifier + bytes(383)
    with pytest.raises(AuthenticationError, match="383 octets, the key needs 384"):
        verify_signature_auth(public, AuthMethod.DIGITAL_SIGNATURE, auth_data, OCTETS)


def test_key_type_mismatch(pki: Pki) -> None:
    method, scheme = choose_signature_scheme(pki["rsa"].key, ALL_HASHES)
    auth_data = sign_auth(pki["rsa"].key, OCTETS, method, scheme)
    with pytest.raises(AuthenticationError, match="certificate has a ecdsa key"):
        verify_signature_auth(pki["ecdsa256"].cert.public_key(), method, auth_data, OCTETS)
    with pytest.raises(AuthenticationError, match="has a ed25519 key"):
        verify_signature_auth(
            pki["ed25519"].cert.public_key(), AuthMethod.RSA_DIGITAL_SIGNATURE, auth_data, OCTETS
        )
    _, ec_scheme = choose_signature_scheme(pki["ecdsa256"].key, None)
    raw = sign_auth(pki["ecdsa256"].key, OCTETS, AuthMethod.ECDSA_SHA256_P256, ec_scheme)
    with pytest.raises(AuthenticationError, match="has a rsa key"):
        verify_signature_auth(
            pki["rsa"].cert.public_key(), AuthMethod.ECDSA_SHA256_P256, raw, OCTETS
        )


def test_tiny_rsa_modulus_is_refused(pki: Pki) -> None:
    small = pki["small_rsa"]
    assert small.cert.public_key().key_size == 1024  # type: ignore[union-attr]  # an RSA key
    with pytest.raises(AuthenticationError, match="1024 bits"):
        choose_signature_scheme(small.key, ALL_HASHES)  # type: ignore[arg-type]  # Entity.key: object
    with pytest.raises(AuthenticationError, match="1024 bits"):
        verify_signature_auth(
            small.cert.public_key(), AuthMethod.DIGITAL_SIGNATURE, b"\x00", OCTETS
        )


def test_truncated_and_garbage_auth_data(pki: Pki) -> None:
    public = pki["ecdsa256"].cert.public_key()
    for data in (b"", b"\x20", b"\x0c" + bytes.fromhex("300a06082a8648ce3d04")):
        with pytest.raises(AuthenticationError):
            verify_signature_auth(public, AuthMethod.DIGITAL_SIGNATURE, data, OCTETS)
    identifier = SignatureScheme("ecdsa", HashAlgorithm.SHA2_256).algorithm_identifier()
    with pytest.raises(AuthenticationError, match=r"malformed|does not verify"):
        verify_signature_auth(
            public,
            AuthMethod.DIGITAL_SIGNATURE,
            bytes([len(identifier)]) + identifier + b"\x30\x00",
            OCTETS,
        )
    with pytest.raises(AuthenticationError, match="not a signature method"):
        verify_signature_auth(public, AuthMethod.SHARED_KEY_MESSAGE_INTEGRITY_CODE, b"x", OCTETS)
    assert isinstance(public, ec.EllipticCurvePublicKey)


# ---- fuzz: any AUTH data is accepted or refused with AuthenticationError ---------------


_IDENTIFIERS = [
    SignatureScheme("rsa", HashAlgorithm.SHA2_256, "pss").algorithm_identifier(),
    SignatureScheme("rsa", HashAlgorithm.SHA2_384, "pkcs1").algorithm_identifier(),
    SignatureScheme("ecdsa", HashAlgorithm.SHA2_256).algorithm_identifier(),
    SignatureScheme("ed25519", HashAlgorithm.IDENTITY).algorithm_identifier(),
]


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    method=st.sampled_from([1, 9, 10, 11, 14, 2, 0, 255]),
    prefix=st.sampled_from([b"", *_IDENTIFIERS]),
    mutation=st.binary(max_size=80),
    tail=st.binary(max_size=520),
    key_name=st.sampled_from(["rsa", "ecdsa256", "ecdsa384", "ed25519"]),
)
def test_fuzz_verify_signature_auth(
    pki: Pki, method: int, prefix: bytes, mutation: bytes, tail: bytes, key_name: str
) -> None:
    body = bytearray(prefix)
    for i, value in enumerate(mutation[: len(body)]):
        if value & 1:
            body[i] ^= value
    data = (bytes([len(body)]) + bytes(body) if prefix else b"") + mutation + tail
    try:
        verify_signature_auth(pki[key_name].cert.public_key(), method, data, OCTETS, policy=SHA1_OK)
    except AuthenticationError:
        return
    pytest.fail("random AUTH data verified")


@settings(deadline=None)
@given(st.binary(max_size=64))
def test_fuzz_signature_hash_notify(data: bytes) -> None:
    try:
        values = parse_signature_hash_algorithms(data)
    except ProtocolError as error:
        assert error.notify is NotifyType.INVALID_SYNTAX
        return
    assert build_signature_hash_algorithms(values) == data


# ======================================================================================
# Against a real charon: two charons authenticate each other with pki-made certificates;
# with enc/ike logging at level 4 charon dumps every AUTH payload it parses or generates and
# the octets it signed/verified. Our signed_octets() must reproduce charon's octets from the
# captured IKE_SA_INIT request, and verify_signature_auth() must accept charon's signatures.
# ======================================================================================

_DUMP_START = re.compile(r"^\S+ \S+ (?:<[^>]*> )?(.*?) => (\d+) bytes @ 0x[0-9a-f]+$")
_DUMP_LINE = re.compile(r"^\S+ \S+ (?:<[^>]*> )?\s*\d+: ((?:[0-9A-F]{2} )+)")


def _log_events(log: str) -> list[tuple[str, object]]:
    """('line', text) for every log line and ('dump', (label, bytes)) for every hex dump."""
    events: list[tuple[str, object]] = []
    lines = log.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        events.append(("line", line))
        start = _DUMP_START.match(line)
        i += 1
        if start:
            size, data = int(start.group(2)), bytearray()
            while len(data) < size and i < len(lines):
                match = _DUMP_LINE.match(lines[i])
                if not match:
                    break
                data += bytes.fromhex(match.group(1))
                i += 1
            events.append(("dump", (start.group(1), bytes(data))))
    return events


def _auth_payloads(events: list[tuple[str, object]], verb: str) -> list[tuple[int, bytes]]:
    """(method, data) of each AUTH payload charon parsed (verb 'parsing') or generated."""
    found: list[tuple[int, bytes]] = []
    section = False
    method = None
    for kind, value in events:
        if kind == "line":
            text = str(value)
            if (
                verb == "parsing" and text.endswith("bytes left") and "parsing AUTH payload" in text
            ) or (verb == "generating" and text.endswith("generating payload of type AUTH")):
                section, method = True, None
            elif section and "AUTH payload finished" in text:
                section = False
            elif section and method is None and re.search(rf"{verb} rule 10 U_INT_8$", text):
                method = -1
            elif section and method == -1 and "=> " in text:
                method = int(text.rsplit("=> ", 1)[1])
        if section and kind == "dump":
            data = value[1]  # type: ignore[index]  # a dump event is (label, octets)
            if method is not None and method > 0 and len(data) > 8:
                found.append((method, data))
                section = False
    return found


def _octets(events: list[tuple[str, object]]) -> list[tuple[bytes, bytes]]:
    """(SK_p, octets) pairs in log order."""
    pairs: list[tuple[bytes, bytes]] = []
    sk_p = b""
    for kind, value in events:
        if kind != "dump":
            continue
        label, data = value  # type: ignore[misc]  # a dump event is (label, octets)
        if label == "SK_p":
            sk_p = data
        elif label == "octets = message + nonce + prf(Sk_px, IDx')":
            pairs.append((sk_p, data))
    return pairs


def _id_bodies(events: list[tuple[str, object]]) -> dict[str, bytes]:
    """Body of IDi as parsed and of IDr as generated by the responder."""
    bodies: dict[str, bytes] = {}
    want: str | None = None
    for kind, value in events:
        if kind == "line":
            text = str(value)
            if "parsing ID_INITIATOR payload" in text and text.endswith("bytes left"):
                want = "IDi"
            elif text.endswith("generating payload of type ID_RESPONDER"):
                want = "IDr"
        elif want is not None:
            label, data = value  # type: ignore[misc]  # a dump event is (label, octets)  # a dump event is (label, octets)
            if label in ("parsing payload from", "generated data for this payload"):
                length = int.from_bytes(data[2:4], "big")
                bodies.setdefault(want, data[4:length])
                want = None
    return bodies


_PKCS1_256, _PSS_256, _PSS_512 = (
    "RSA PKCS#1 v1.5 with SHA2_256",
    "RSA-PSS with SHA2_256",
    "RSA-PSS with SHA2_512",
)
CHARON_AUTH_CASES = [
    pytest.param(
        "rsa", "pubkey", "ecdsa384", "pubkey", (_PKCS1_256, "ECDSA with SHA2_384"), id="pkcs1"
    ),
    pytest.param("rsa", "rsa/pss-sha256", "ed25519", "pubkey", (_PSS_256, "Ed25519"), id="pss"),
    pytest.param(
        "ecdsa521", "pubkey", "rsa", "rsa/pss-sha512", ("ECDSA with SHA2_512", _PSS_512), id="p521"
    ),
    pytest.param("ecdsa384", "pubkey", "ecdsa256", "pubkey", None, id="classic-rfc4754"),
    pytest.param("rsa", "pubkey", "ecdsa256", "pubkey", None, id="classic-rsa-sha1"),
]


@pytest.mark.interop
@pytest.mark.timeout(120)
@pytest.mark.needs("root", "charon")
@pytest.mark.parametrize(
    ("init_key", "init_auth", "resp_key", "resp_auth", "schemes"), CHARON_AUTH_CASES
)
def test_charon_signatures_verify(
    pki: Pki,
    init_key: str,
    init_auth: str,
    resp_key: str,
    resp_auth: str,
    schemes: tuple[str, str] | None,
) -> None:
    """schemes: what charon signs with (RFC 7427), None: classic methods (no HASH_ALG)."""
    rfc7427 = schemes is not None
    from scapy.all import UDP, rdpcap

    from aioipsec.interop.charon import Charon, swanctl_section
    from aioipsec.interop.scenario import Scenario
    from aioipsec.interop.topology import build_topology
    from aioipsec.netns import Lab
    from ikev2.crypto.prf import Prf
    from ikev2.enums import PrfId
    from ikev2.message import parse_message
    from ikev2.payloads import NoncePayload

    identity = {name: str(pki[name].cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value[0].value) for name in (init_key, resp_key)}  # fmt: skip
    settings_text = "" if rfc7427 else "    signature_authentication = no\n"
    workdir = Path(tempfile.mkdtemp(prefix="aioipsec-sg-", dir="/tmp"))
    scenario = Scenario(name="sig")
    try:
        with Lab("sg") as lab:
            topology = build_topology(lab, scenario)
            charons = {}
            for side, key, auth, peer_key in (
                ("initiator", init_key, init_auth, resp_key),
                ("responder", resp_key, resp_auth, init_key),
            ):
                charon = Charon(
                    lab,
                    topology.namespace(side),
                    workdir / side,
                    key_debug=True,
                    extra_charon_settings=settings_text,
                )
                shutil.copy(pki[key].cert_path, charon.workdir / "x509" / f"{key}.crt")
                shutil.copy(pki["ca"].cert_path, charon.workdir / "x509ca" / "ca.crt")
                shutil.copy(pki[key].key_path, charon.workdir / "private" / f"{key}.key")
                initiating = side == "initiator"
                connection = {
                    "version": 2,
                    "local_addrs": topology.initiator_outer
                    if initiating
                    else topology.responder_outer,
                    "remote_addrs": topology.responder_outer if initiating else "%any",
                    "proposals": "aes256gcm16-prfsha256-x25519",
                    "local": {"auth": auth, "id": identity[key], "certs": f"{key}.crt"},
                    "remote": {"auth": "pubkey", "id": identity[peer_key]},
                    "children": {
                        "sig": {
                            "local_ts": "10.1.0.0/24" if initiating else "10.2.0.0/24",
                            "remote_ts": "10.2.0.0/24" if initiating else "10.1.0.0/24",
                            "esp_proposals": "aes256gcm16",
                        }
                    },
                }
                charon.start()
                charon.load(swanctl_section("connections", {"sig": connection}) + "\n")
                charons[side] = charon
            capture = lab.capture(
                topology.initiator, topology.interfaces["initiator"], workdir / "wire.pcap"
            )
            time.sleep(0.3)
            charons["initiator"].initiate("sig", "sig", timeout=20)
            time.sleep(0.3)
            capture.stop()
            log = charons["responder"].log_path.read_text()
            packets = [
                bytes(p[UDP].payload) for p in rdpcap(str(workdir / "wire.pcap")) if UDP in p
            ]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    init_request = next(p for p in packets if len(p) > 28 and p[18] == 34 and not p[19] & 0x20)
    init_response = next(p for p in packets if len(p) > 28 and p[18] == 34 and p[19] & 0x20)
    nonce_r = next(
        pl for pl in parse_message(init_response).payloads if isinstance(pl, NoncePayload)
    ).nonce
    events = _log_events(log)
    (sk_pi, octets_i), (sk_pr, octets_r) = _octets(events)[:2]
    prf = Prf(PrfId.PRF_HMAC_SHA2_256)
    ids = _id_bodies(events)
    # charon's octets for the initiator = what our signed_octets builds from the wire
    assert octets_i == signed_octets(init_request, nonce_r, prf, sk_pi, ids["IDi"])
    assert octets_r[-32:] == prf(sk_pr, ids["IDr"])

    (method_i, data_i), = _auth_payloads(events, "parsing")  # fmt: skip
    (method_r, data_r), = _auth_payloads(events, "generating")  # fmt: skip
    expected_methods = {"rsa": 1, "ecdsa256": 9, "ecdsa384": 10, "ecdsa521": 11}
    if rfc7427:
        assert method_i == method_r == AuthMethod.DIGITAL_SIGNATURE
    else:
        assert (method_i, method_r) == (expected_methods[init_key], expected_methods[resp_key])
    policy = SHA1_OK if 1 in (method_i, method_r) else AlgorithmPolicy()
    scheme_i = verify_signature_auth(
        pki[init_key].cert.public_key(), method_i, data_i, octets_i, policy=policy
    )
    scheme_r = verify_signature_auth(
        pki[resp_key].cert.public_key(), method_r, data_r, octets_r, policy=policy
    )
    if schemes is not None:
        assert (scheme_i.name, scheme_r.name) == schemes
    if method_i == AuthMethod.RSA_DIGITAL_SIGNATURE:
        with pytest.raises(AuthenticationError, match="sha1_signatures"):
            verify_signature_auth(pki[init_key].cert.public_key(), method_i, data_i, octets_i)
    # a signature over other octets fails, whatever the scheme
    with pytest.raises(AuthenticationError):
        verify_signature_auth(
            pki[init_key].cert.public_key(), method_i, data_i, octets_r, policy=policy
        )


# ---- the other direction: charon verifies the signatures our daemon makes ---------------

OUR_SIGNING_CASES = [
    pytest.param("rsa", "RSA_EMSA_PKCS1_SHA2_256", id="rsa-pkcs1"),
    pytest.param("ecdsa256", "ECDSA_WITH_SHA256_DER", id="ecdsa-p256"),
    pytest.param("ecdsa521", "ECDSA_WITH_SHA512_DER", id="ecdsa-p521"),
    pytest.param("ed25519", "ED25519", id="ed25519"),
]


@pytest.mark.interop
@pytest.mark.netns
@pytest.mark.timeout(120)
@pytest.mark.needs("root", "charon")
@pytest.mark.parametrize(("our_key", "charon_scheme"), OUR_SIGNING_CASES)
def test_charon_accepts_our_signatures(pki: Pki, our_key: str, charon_scheme: str) -> None:
    from aioipsec.interop.charon import Charon, swanctl_section
    from aioipsec.netns import Lab
    from tests.e2e.helpers import OurDaemon, Side, toml_config

    our_id = str(
        pki[our_key].cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value[0].value
    )  # fmt: skip
    their_key, their_id = "ecdsa384", "mars.example.org"
    side = Side(
        name="sig", outer="192.168.51.1", inner="10.1.0.1", subnet="10.1.0.0/24",
        peer_outer="192.168.51.2", peer_subnet="10.2.0.0/24", local_id=our_id,
        remote_id=their_id,
    )  # fmt: skip
    workdir = Path(tempfile.mkdtemp(prefix="aioipsec-os-", dir="/tmp"))
    try:
        with Lab("os") as lab:
            moon, sun = lab.namespace("moon"), lab.namespace("sun")
            lab.veth(moon, f"{side.outer}/24", sun, f"{side.peer_outer}/24")
            # charon's kernel-libipsec routes need a source address inside its local TS
            moon.add_address("lo", f"{side.inner}/32")
            sun.add_address("lo", "10.2.0.1/32")
            charon = Charon(lab, sun, workdir / "charon")
            shutil.copy(pki[their_key].cert_path, charon.workdir / "x509" / "sun.crt")
            shutil.copy(pki["ca"].cert_path, charon.workdir / "x509ca" / "ca.crt")
            shutil.copy(pki[their_key].key_path, charon.workdir / "private" / "sun.key")
            connection = {
                "version": 2,
                "local_addrs": side.peer_outer,
                "remote_addrs": side.outer,
                "proposals": "aes256gcm16-prfsha256-x25519",
                "local": {"auth": "pubkey", "id": their_id, "certs": "sun.crt"},
                "remote": {"auth": "pubkey", "id": our_id},
                "children": {
                    "net": {
                        "local_ts": side.peer_subnet,
                        "remote_ts": side.subnet,
                        "esp_proposals": "aes256gcm16",
                    }
                },
            }
            charon.start()
            charon.load(swanctl_section("connections", {"sig": connection}) + "\n")
            config = toml_config(
                side,
                workdir,
                auth="pubkey",
                certs={
                    "cert": str(pki[our_key].cert_path),
                    "ca": str(pki["ca"].cert_path),
                    "key": str(pki[our_key].key_path),
                },
            )
            ours = OurDaemon(lab, moon, config, workdir)
            ours.start()
            try:
                ours.call("initiate", child="net", timeout=30)
                ike = ours.wait_for_child("sig")
                charon.wait_for_sa("sig")
            finally:
                log = charon.log_path.read_text()
                our_log = ours.log_tail(40)
                ours.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    assert f"authentication of '{our_id}' with {charon_scheme} successful" in log, (
        log[-3000:] + our_log
    )
    assert ike["state"] == "ESTABLISHED"
