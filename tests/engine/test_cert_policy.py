"""strongSwan's ``cert_policy`` between two engines: the peer's certificate must list
every configured policy OID in its certificatePolicies (RFC 5280 sec. 4.2.1.4)."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from ikev2.events import AuthenticationFailed, ChildSaEstablished
from tests.engine.test_certs import VALID_FROM, VALID_TO, _name, ca, cert_pair

POLICY = "1.3.6.1.4.1.36906.1.1.1"


def _leaf_with_policies(*oids: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    ca_key, ca_cert = ca("Test CA")
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name("a.example"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(VALID_FROM)
        .not_valid_after(VALID_TO)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("a.example")]), False)
    )
    if oids:
        policies = [x509.PolicyInformation(x509.ObjectIdentifier(oid), None) for oid in oids]
        builder = builder.add_extension(x509.CertificatePolicies(policies), False)
    return key, builder.sign(ca_key, hashes.SHA256())


@pytest.mark.parametrize(
    "oids,accepted",
    [((POLICY, "1.3.6.1.4.1.36906.1.1.2"), True), (("1.2.3.4",), False), ((), False)],
)
def test_cert_policy(oids: tuple[str, ...], accepted: bool) -> None:
    net = cert_pair("ecdsa", "ecdsa", leaf_a=_leaf_with_policies(*oids))
    (config_b,) = net.b.ctx.configs
    config_b.remote.cert_policy = [POLICY]
    net.a.initiate("conn", "net", now=0.0)
    net.pump()
    assert bool(net.events("b", ChildSaEstablished)) == accepted
    if not accepted:
        (failure,) = net.events("b", AuthenticationFailed)
        assert failure.check == "cert-policy" and POLICY in failure.reason


@pytest.mark.parametrize("ca_id,accepted", [("CN=Test CA", True), ("CN=Other CA", False)])
def test_ca_id(ca_id: str, accepted: bool) -> None:
    """strongSwan's ``ca_id``: a CA of the peer's validated chain must have that subject."""
    net = cert_pair("ecdsa", "ecdsa")
    (config_b,) = net.b.ctx.configs
    config_b.remote.ca_id = ca_id
    net.a.initiate("conn", "net", now=0.0)
    net.pump()
    assert bool(net.events("b", ChildSaEstablished)) == accepted
    if not accepted:
        (failure,) = net.events("b", AuthenticationFailed)
        assert failure.check == "unknown-ca" and "CN=Other CA" in failure.reason
