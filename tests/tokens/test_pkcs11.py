"""Keys in a SoftHSM2 token (PKCS#11): IKE_AUTH between two engines with the initiator's
key in the token (RSA PKCS#1 v1.5 and PSS, ECDSA P-256/P-384, RFC 7427 and classic),
the certificate from the token, the wrong PIN, a token removed while SAs run."""

from __future__ import annotations

import pytest

from ikev2.enums import AuthMethod
from ikev2.events import AuthenticationFailed, ChildSaEstablished, IkeSaEstablished
from tests.tokens.engine_pair import (
    auth_method_seen_by_b,
    cert_network,
    establish_then_lose_the_token,
)
from tests.tokens.fixtures import PIN, Pki, SoftHsm, pki, softhsm

__all__ = ["pki", "softhsm"]  # the fixtures, imported for pytest


def _signer(hsm: SoftHsm, key_id: bytes, pin: str | None = PIN):
    from aioipsec.tokens.pkcs11 import Pkcs11KeySpec, Pkcs11Signer

    return Pkcs11Signer(Pkcs11KeySpec("softhsm", hsm.module, key_id, hsm.slot_id, pin))


@pytest.mark.parametrize(
    "kind,pss,classic,method",
    [
        ("ec256", False, False, AuthMethod.DIGITAL_SIGNATURE),
        ("ec384", False, True, AuthMethod.ECDSA_SHA384_P384),
        ("rsa3072", False, False, AuthMethod.DIGITAL_SIGNATURE),
        ("rsa2048", True, False, AuthMethod.DIGITAL_SIGNATURE),
    ],
)
def test_ike_auth_with_the_key_in_softhsm(
    softhsm: SoftHsm, pki: Pki, kind: str, pss: bool, classic: bool, method: AuthMethod
) -> None:
    public = softhsm.generate(kind, b"\x01")
    cert = pki.issue(public, "a.example")
    signer = _signer(softhsm, b"\x01")
    net = cert_network(
        pki, signer, cert, rsa_pss=pss, signature_auth="classic" if classic else "rfc7427"
    )
    net.a.initiate("conn", "net", now=0.0)
    net.pump()
    assert net.events("a", ChildSaEstablished) and net.events("b", IkeSaEstablished)
    assert auth_method_seen_by_b(net) == method


def test_both_sides_in_tokens_and_certificate_from_the_token(softhsm: SoftHsm, pki: Pki) -> None:
    """B's key is in the same token under another CKA_ID, its certificate stored there."""
    cert_a = pki.issue(softhsm.generate("ec256", b"\xa1"), "a.example")
    cert_b = pki.issue(softhsm.generate("rsa3072", b"\xb2"), "b.example")
    softhsm.store_certificate(cert_b, b"\xb2")
    signer_b = _signer(softhsm, b"\xb2")
    assert signer_b.certificate() is not None
    assert signer_b.certificate().subject.rfc4514_string().startswith("CN=b.example")
    net = cert_network(pki, _signer(softhsm, b"\xa1"), cert_a, signer_b=signer_b, cert_b=cert_b)
    net.a.initiate("conn", "net", now=0.0)
    net.pump()
    assert net.events("a", IkeSaEstablished) and net.events("b", ChildSaEstablished)


def test_wrong_pin_fails_at_start_and_is_not_tried_again(softhsm: SoftHsm) -> None:
    from aioipsec.tokens import TokenError

    softhsm.generate("ec256", b"\x01")
    with pytest.raises(TokenError) as first:
        _signer(softhsm, b"\x01", pin="9999")
    assert "refused the PIN" in first.value.reason and "9999" not in str(first.value)
    assert "secrets.token-NAME.pin" in first.value.hint
    # The same wrong PIN again: refused without a C_Login (the token's retry counter
    # would otherwise count down to a locked PIN).
    with pytest.raises(TokenError, match="refused this PIN before; not tried again"):
        _signer(softhsm, b"\x01", pin="9999")
    # After one wrong PIN the token says so (CKF_USER_PIN_COUNT_LOW), not locked.
    from pkcs11 import TokenFlag

    from aioipsec.tokens.pkcs11 import load_module

    token = load_module(softhsm.module).get_token(token_label=softhsm.label)
    assert not token.flags & TokenFlag.USER_PIN_LOCKED
    # The right PIN works, and no representation shows it.
    signer = _signer(softhsm, b"\x01")
    assert PIN not in repr(signer) and PIN not in repr(signer.spec)


def test_token_removed_while_running(softhsm: SoftHsm, pki: Pki) -> None:
    """AUTH fails with a clear reason, the established SA stays, a later attempt works
    once the token is back."""
    cert = pki.issue(softhsm.generate("ec256", b"\x01"), "a.example")
    signer = _signer(softhsm, b"\x01")
    establish_then_lose_the_token(
        cert_network(pki, signer, cert),
        signer,
        remove=softhsm.remove,
        restore=softhsm.reinsert,
        description="pkcs11:softhsm",
    )


def test_responder_token_removed_answers_authentication_failed(softhsm: SoftHsm, pki: Pki) -> None:
    """B (the responder) signs with a token key that is gone: B reports the failed check
    naming its key and answers AUTHENTICATION_FAILED; B's established SA stays, and with
    the token back A's next attempt succeeds."""
    from cryptography.hazmat.primitives import serialization

    key_a, cert_a = pki.issue_key("a.example")
    signer_a = serialization.load_pem_private_key(key_a.read_bytes(), None)
    cert_b = pki.issue(softhsm.generate("ec384", b"\xb2"), "b.example")
    net = cert_network(pki, signer_a, cert_a, signer_b=_signer(softhsm, b"\xb2"), cert_b=cert_b)
    net.a.initiate("conn", "net", now=0.0)
    net.pump()
    (first,) = net.events("b", IkeSaEstablished)

    softhsm.remove()
    net.a.initiate("conn", "net", now=net.now)
    net.pump()
    (failure,) = net.events("b", AuthenticationFailed)
    assert failure.check == "signer-unavailable"
    assert "pkcs11:softhsm" in failure.reason and "could not sign" in failure.reason
    assert [e.check for e in net.events("a", AuthenticationFailed)] == ["peer-rejected"]
    assert first.ike_sa_id in {info.ike_sa_id for info in net.b.sas()}

    softhsm.reinsert()
    net.a.initiate("conn", "net", now=net.now)
    net.pump()
    assert len(net.events("b", IkeSaEstablished)) == 2
