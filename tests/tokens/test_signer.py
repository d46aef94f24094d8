"""The signer interface (ikev2.crypto.auth.Signer): the in-memory backend signs every
method the engine chooses, ECDSA signature conversions. A token's failure (SignerError)
is tested against SoftHSM in test_pkcs11.py."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ikev2.crypto.auth import (
    AuthenticationError,
    InMemorySigner,
    Signer,
    as_signer,
    choose_signature_scheme,
    ecdsa_der_to_raw,
    ecdsa_raw_to_der,
    sign_auth,
    verify_signature_auth,
)
from ikev2.enums import AuthMethod, HashAlgorithm
from ikev2.policy import AlgorithmPolicy

OCTETS = b"signed octets of an IKE_AUTH" * 3
HASHES = [HashAlgorithm.SHA2_256, HashAlgorithm.SHA2_384, HashAlgorithm.SHA2_512]
SHA1_POLICY = AlgorithmPolicy(allow_weak=frozenset({"sha1_signatures"}))


@pytest.fixture(scope="module")
def keys() -> dict[str, object]:
    return {
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "p256": ec.generate_private_key(ec.SECP256R1()),
        "p384": ec.generate_private_key(ec.SECP384R1()),
        "p521": ec.generate_private_key(ec.SECP521R1()),
    }


@pytest.mark.parametrize(
    "name,hashes_,pss,method",
    [
        ("rsa", HASHES, False, AuthMethod.DIGITAL_SIGNATURE),
        ("rsa", HASHES, True, AuthMethod.DIGITAL_SIGNATURE),
        ("rsa", None, False, AuthMethod.RSA_DIGITAL_SIGNATURE),
        ("p256", HASHES, False, AuthMethod.DIGITAL_SIGNATURE),
        ("p256", None, False, AuthMethod.ECDSA_SHA256_P256),
        ("p384", None, False, AuthMethod.ECDSA_SHA384_P384),
        ("p521", None, False, AuthMethod.ECDSA_SHA512_P521),
    ],
)
def test_in_memory_signer_signs_every_method(keys, name, hashes_, pss, method) -> None:
    key = keys[name]
    signer = as_signer(key)
    assert isinstance(signer, InMemorySigner) and isinstance(signer, Signer)
    policy = SHA1_POLICY if hashes_ is None and name == "rsa" else AlgorithmPolicy()
    chosen, scheme = choose_signature_scheme(signer, hashes_, policy=policy, rsa_pss=pss)
    assert chosen == method
    data = sign_auth(signer, OCTETS, chosen, scheme)
    used = verify_signature_auth(key.public_key(), chosen, data, OCTETS, policy=policy)
    assert used.hash == scheme.hash
    # A bare key gives the same choice as its signer (today's behaviour).
    assert choose_signature_scheme(key, hashes_, policy=policy, rsa_pss=pss) == (chosen, scheme)
    assert "PRIVATE" not in repr(signer) and str(key) not in repr(signer)


def test_ecdsa_raw_der_round_trip(keys) -> None:
    der = keys["p384"].sign(OCTETS, ec.ECDSA(hashes.SHA384()))
    raw = ecdsa_der_to_raw(der, 48)
    assert len(raw) == 96
    assert ecdsa_raw_to_der(raw) == der
    with pytest.raises(ValueError):
        ecdsa_raw_to_der(b"\x01" * 3)


def test_something_that_is_no_key_is_refused() -> None:
    with pytest.raises(AuthenticationError, match="unsupported private key type"):
        as_signer(object())  # type: ignore[arg-type]  # misuse on purpose: refused
