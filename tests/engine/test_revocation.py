"""The engine asks ``AuthConfig.revocation`` once the peer's chain and AUTH signature are
good: a revoked certificate fails IKE_AUTH with check ``revoked`` (its serial and the CRL
named) and the peer gets AUTHENTICATION_FAILED; a good one establishes. The checker is
aioipsec's (aioipsec/revocation.py) over a CRL held in memory: no I/O here."""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from aioipsec.revocation import RevocationChecker, RevocationStore
from ikev2.events import AuthenticationFailed, IkeSaEstablished
from tests.engine.test_certs import NOW, ca, cert_pair, leaf


def _crl_revoking(*serials: int) -> x509.CertificateRevocationList:
    ca_key, ca_cert = ca("Test CA")
    when = datetime.datetime.fromtimestamp(NOW, datetime.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(when - datetime.timedelta(days=1))
        .next_update(when + datetime.timedelta(days=7))
    )
    for serial in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(when - datetime.timedelta(hours=1))
            .build()
        )
    return builder.sign(ca_key, hashes.SHA256())


def test_revoked_peer_is_refused_and_told() -> None:
    _, cert_a = leaf("ecdsa", "a.example")
    store = RevocationStore(crls=[(_crl_revoking(cert_a.serial_number), "CRL file ca.crl")])
    net = cert_pair("ecdsa", "ecdsa", revocation_b=RevocationChecker(store))
    net.a.initiate("conn", "net", now=0.0)
    net.pump()
    (failure,) = net.events("b", AuthenticationFailed)
    assert failure.check == "revoked", failure.reason
    assert (
        format(cert_a.serial_number, "x") in failure.reason and "CRL file ca.crl" in failure.reason
    )
    (told,) = net.events("a", AuthenticationFailed)
    assert told.check == "peer-rejected"
    assert not net.events("b", IkeSaEstablished) and net.a.sas() == [] and net.b.sas() == []


def test_unrevoked_peer_establishes_under_strict() -> None:
    store = RevocationStore(crls=[(_crl_revoking(12345), "CRL file ca.crl")])
    net = cert_pair("ecdsa", "ecdsa", revocation_b=RevocationChecker(store, "strict"))
    net.a.initiate("conn", "net", now=0.0)
    net.pump()
    assert net.events("a", IkeSaEstablished) and net.events("b", IkeSaEstablished)
