"""Keys in a TPM 2.0 (one swtpm simulator per test, keys made with tpm2-tools and
persisted with tpm2_evictcontrol): IKE_AUTH between two engines with the initiator's key
in the TPM, a restricted key (the TPM hashes), the TPM unreachable while SAs run."""

from __future__ import annotations

import pytest

from ikev2.enums import AuthMethod
from ikev2.events import ChildSaEstablished, IkeSaEstablished
from tests.tokens.engine_pair import (
    auth_method_seen_by_b,
    cert_network,
    establish_then_lose_the_token,
)
from tests.tokens.fixtures import Pki, Swtpm, pki, swtpm

__all__ = ["pki", "swtpm"]  # the fixtures, imported for pytest

HANDLE = 0x81010003


def _signer(tpm: Swtpm, handle: int = HANDLE):
    from aioipsec.tokens.tpm import TpmKeySpec, TpmSigner

    return TpmSigner(TpmKeySpec(tpm.tcti, handle))


@pytest.mark.parametrize(
    "algorithm,classic,method",
    [
        ("ecc256", False, AuthMethod.DIGITAL_SIGNATURE),
        ("ecc256", True, AuthMethod.ECDSA_SHA256_P256),
        ("rsa2048", False, AuthMethod.DIGITAL_SIGNATURE),
        # A restricted signing key with a fixed scheme: the TPM hashes the octets itself.
        (
            "ecc256:ecdsa-sha256:null",
            False,
            AuthMethod.DIGITAL_SIGNATURE,
        ),
    ],
)
def test_ike_auth_with_the_key_in_the_tpm(
    swtpm: Swtpm, pki: Pki, algorithm: str, classic: bool, method: AuthMethod
) -> None:
    restricted = ":" in algorithm
    public = swtpm.create_key(HANDLE, algorithm, restricted=restricted)
    cert = pki.issue(public, "a.example")
    signer = _signer(swtpm)
    assert signer._restricted == restricted
    net = cert_network(pki, signer, cert, signature_auth="classic" if classic else "rfc7427")
    net.a.initiate("conn", "net", now=0.0)
    net.pump()
    assert net.events("a", ChildSaEstablished) and net.events("b", IkeSaEstablished)
    assert auth_method_seen_by_b(net) == method


def test_tpm_unreachable_while_running(swtpm: Swtpm, pki: Pki) -> None:
    """AUTH fails while the TPM is gone, the established SA stays, and the next attempt
    works once the TPM answers again."""
    cert = pki.issue(swtpm.create_key(HANDLE), "a.example")
    signer = _signer(swtpm)
    establish_then_lose_the_token(
        cert_network(pki, signer, cert),
        signer,
        remove=swtpm.stop,
        restore=swtpm.start,  # same state folder: the persistent key is still there
        description="tpm:swtpm",
    )


def test_rsa_pss_in_the_tpm_verifies_with_our_algorithm_identifier(swtpm: Swtpm) -> None:
    """The TPM picks the PSS salt itself (TPM 2.0 Part 1 sec. B.7): the signature must
    verify with the salt length our RFC 7427 AlgorithmIdentifier announces."""
    from ikev2.crypto.auth import choose_signature_scheme, sign_auth, verify_signature_auth
    from ikev2.enums import HashAlgorithm

    swtpm.create_key(HANDLE, "rsa2048")
    signer = _signer(swtpm)
    hashes_ = [HashAlgorithm.SHA2_256, HashAlgorithm.SHA2_384]
    method, scheme = choose_signature_scheme(signer, hashes_, rsa_pss=True)
    octets = b"IKE_AUTH octets" * 80  # > 1024: the digest is ours, not a TPM sequence
    data = sign_auth(signer, octets, method, scheme)
    assert verify_signature_auth(signer.public_key(), method, data, octets).rsa_padding == "pss"
