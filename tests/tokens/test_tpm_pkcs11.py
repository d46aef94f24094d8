"""The TPM used as a PKCS#11 module (Debian's libtpm2-pkcs11-1 over swtpm): a key made by
the TPM through tpm2_ptool, signing IKE_AUTH through our PKCS#11 backend."""

from __future__ import annotations

import pytest

from ikev2.enums import AuthMethod
from ikev2.events import ChildSaEstablished, IkeSaEstablished
from tests.tokens.engine_pair import auth_method_seen_by_b, cert_network
from tests.tokens.fixtures import PIN, Pki, TpmPkcs11, pki, public_pem, swtpm, tpm_pkcs11

__all__ = ["pki", "swtpm", "tpm_pkcs11"]  # the fixtures, imported for pytest


@pytest.mark.parametrize(
    "algorithm,classic,method",
    [
        ("ecc256", False, AuthMethod.DIGITAL_SIGNATURE),
        ("ecc256", True, AuthMethod.ECDSA_SHA256_P256),
    ],
)
def test_ike_auth_with_the_tpm_as_a_pkcs11_module(
    tpm_pkcs11: TpmPkcs11, pki: Pki, algorithm: str, classic: bool, method: AuthMethod
) -> None:
    from aioipsec.tokens.pkcs11 import Pkcs11KeySpec, Pkcs11Signer, list_module

    tpm_pkcs11.add_key(algorithm, "ike1", "ike")
    (listing,) = list_module(tpm_pkcs11.module, PIN)
    assert [key["id"] for key in listing.keys] == [b"ike1".hex()]
    signer = Pkcs11Signer(Pkcs11KeySpec("tpm2", tpm_pkcs11.module, b"ike1", listing.slot_id, PIN))
    cert = pki.issue(public_pem(signer.public_key()), "a.example")
    net = cert_network(pki, signer, cert, signature_auth="classic" if classic else "rfc7427")
    net.a.initiate("conn", "net", now=0.0)
    net.pump()
    assert net.events("a", ChildSaEstablished) and net.events("b", IkeSaEstablished)
    assert auth_method_seen_by_b(net) == method
