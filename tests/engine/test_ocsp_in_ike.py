"""RFC 4806 OCSP in IKE between two engines (strongSwan's ``ocsp = never | reply |
request | both``): an OCSP CERTREQ from the side that requests, the other side's OCSP
response for its own certificate in a CERT payload, checked by the revocation store like
one it fetched (signed by the CA, fresh, for that certificate). The responses are real
ones, signed by the test CA with cryptography's OCSP builder."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ReasonFlags, ocsp

from aioipsec.revocation import RevocationChecker, RevocationStore
from ikev2.events import AuthenticationFailed, ChildSaEstablished, IkeSaEstablished
from tests.engine.test_certs import NOW, ca, cert_pair, leaf


def _response(fqdn: str, revoked: bool = False) -> bytes:
    """The CA's OCSP response for the test leaf ``fqdn`` (good unless ``revoked``)."""
    ca_key, ca_cert = ca("Test CA")
    _, cert = leaf("ecdsa", fqdn)
    now = datetime.datetime.fromtimestamp(NOW, datetime.UTC)
    builder = ocsp.OCSPResponseBuilder().add_response(
        cert=cert,
        issuer=ca_cert,
        algorithm=hashes.SHA1(),
        cert_status=ocsp.OCSPCertStatus.REVOKED if revoked else ocsp.OCSPCertStatus.GOOD,
        this_update=now - datetime.timedelta(hours=1),
        next_update=now + datetime.timedelta(hours=1),
        revocation_time=now - datetime.timedelta(days=1) if revoked else None,
        revocation_reason=ReasonFlags.key_compromise if revoked else None,
    )
    signed = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, ca_cert).sign(
        ca_key, hashes.SHA256()
    )
    return signed.public_bytes(serialization.Encoding.DER)


def _pair(a_ocsp: str, b_ocsp: str, b_staple: bytes | None) -> Any:
    net = cert_pair("ecdsa", "ecdsa")
    (config_a,) = net.a.ctx.configs
    (config_b,) = net.b.ctx.configs
    config_a.ocsp, config_b.ocsp = a_ocsp, b_ocsp
    asked: list[Any] = []
    config_b.local.ocsp_staple = lambda cert: asked.append(cert) or b_staple
    # No CRL and no responder anywhere: only the peer's own response can give "good".
    config_a.remote.revocation = RevocationChecker(RevocationStore(), "strict")
    net.asked = asked
    return net


def test_the_responder_staples_its_status() -> None:
    net = _pair("request", "reply", _response("b.example"))
    net.a.initiate("conn", "net", now=0.0)
    net.pump()
    assert net.events("a", ChildSaEstablished) and net.events("b", IkeSaEstablished)
    assert [cert.subject.rfc4514_string() for cert in net.asked] == ["CN=b.example"]


@pytest.mark.parametrize(
    "a_ocsp,b_ocsp,staple,check",
    [
        ("request", "reply", "revoked", "revoked"),  # the peer's own answer says revoked
        ("request", "never", "good", "revocation-unknown"),  # it does not send one
        ("never", "reply", "good", "revocation-unknown"),  # we did not ask
        ("request", "reply", "other", "revocation-unknown"),  # an answer for another cert
    ],
)
def test_strict_needs_a_good_stapled_answer(
    a_ocsp: str, b_ocsp: str, staple: str, check: str
) -> None:
    der = {
        "revoked": _response("b.example", revoked=True),
        "good": _response("b.example"),
        "other": _response("a.example"),
    }[staple]
    net = _pair(a_ocsp, b_ocsp, der)
    net.a.initiate("conn", "net", now=0.0)
    net.pump()
    assert not net.events("a", ChildSaEstablished)
    (failure,) = net.events("a", AuthenticationFailed)
    assert failure.check == check, failure.reason
    if check == "revoked":
        assert "the OCSP response the peer sent (RFC 4806)" in failure.reason
    # "never" neither asks for nor sends a status.
    assert bool(net.asked) == (a_ocsp != "never" and b_ocsp != "never")


def test_both_sides_request_and_reply() -> None:
    """ocsp = both on each side: the responder asks in its IKE_SA_INIT response, the
    initiator in its IKE_AUTH request; each staples its own status."""
    net = _pair("both", "both", _response("b.example"))
    (config_a,) = net.a.ctx.configs
    (config_b,) = net.b.ctx.configs
    config_a.local.ocsp_staple = lambda cert: _response("a.example")
    config_b.remote.revocation = RevocationChecker(RevocationStore(), "strict")
    net.a.initiate("conn", "net", now=0.0)
    net.pump()
    assert net.events("a", ChildSaEstablished) and net.events("b", ChildSaEstablished)
