"""Certificate authentication between two engines: RSA (PKCS#1 v1.5 and PSS), ECDSA,
Ed25519 with RFC 7427, the classic ECDSA method, and the failure explanations."""

from __future__ import annotations

import datetime
from functools import cache

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from ikev2.config import AuthConfig
from ikev2.dispatcher import Dispatcher
from ikev2.enums import AuthMethod
from ikev2.events import AuthenticationFailed, ChildSaEstablished, IkeSaEstablished
from tests.engine.harness import Network, pair_configs, psk_lookup_for, seeded_rng

VALID_FROM = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
VALID_TO = datetime.datetime(2027, 1, 1, tzinfo=datetime.UTC)
NOW = datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC).timestamp()


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _hash_for(key) -> hashes.HashAlgorithm | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


@cache
def ca(name: str):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(VALID_FROM)
        .not_valid_after(VALID_TO)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


@cache
def leaf(kind: str, fqdn: str, ca_name: str = "Test CA", expired: bool = False):
    if kind.startswith("rsa"):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif kind == "ecdsa":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        key = ed25519.Ed25519PrivateKey.generate()
    ca_key, ca_cert = ca(ca_name)
    not_after = datetime.datetime(2026, 3, 1, tzinfo=datetime.UTC) if expired else VALID_TO
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(fqdn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(VALID_FROM)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(fqdn)]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def cert_pair(kind_a: str, kind_b: str, **overrides) -> Network:
    a_conf, b_conf = pair_configs()
    key_a, cert_a = overrides.get("leaf_a") or leaf(kind_a, "a.example")
    key_b, cert_b = leaf(kind_b, "b.example")
    trust_a = overrides.get("trust_a") or [ca("Test CA")[1]]
    a_conf.local = AuthConfig(
        auth="pubkey",
        id=overrides.get("id_a", "a.example"),
        certs=[cert_a],
        private_key=key_a,
        rsa_pss=kind_a == "rsa-pss",
        signature_auth=overrides.get("signature_auth", "rfc7427"),
    )
    a_conf.remote = AuthConfig(
        auth="pubkey",
        id="b.example",
        cacerts=trust_a,
        signature_auth=overrides.get("signature_auth", "rfc7427"),
    )
    b_conf.local = AuthConfig(
        auth="pubkey",
        id="b.example",
        certs=[cert_b],
        private_key=key_b,
        rsa_pss=kind_b == "rsa-pss",
    )
    b_conf.remote = AuthConfig(
        auth="pubkey",
        id="%any",
        cacerts=[ca("Test CA")[1]],
        revocation=overrides.get("revocation_b"),
    )
    a = Dispatcher([a_conf], psk_lookup_for(), rng=seeded_rng(1), wall_time_offset=NOW)
    b = Dispatcher([b_conf], psk_lookup_for(), rng=seeded_rng(2), wall_time_offset=NOW)
    return Network(a, b)


@pytest.mark.parametrize(
    "kind_a,kind_b", [("rsa", "ecdsa"), ("rsa-pss", "ed25519"), ("ed25519", "rsa")]
)
def test_certificate_auth_rfc7427(kind_a: str, kind_b: str) -> None:
    net = cert_pair(kind_a, kind_b)
    net.a.initiate("conn", "net", now=0.0)
    net.pump()
    (ike_a,) = net.events("a", IkeSaEstablished)
    (ike_b,) = net.events("b", IkeSaEstablished)
    assert ike_b.remote_id == "a.example" and ike_a.remote_id == "b.example"
    assert net.events("a", ChildSaEstablished) and net.events("b", ChildSaEstablished)
    method = _peer_auth_method(net, "a")
    assert method == AuthMethod.DIGITAL_SIGNATURE


def _peer_auth_method(net: Network, side: str) -> int:
    dispatcher = net.a if side == "a" else net.b
    (info,) = dispatcher.sas()
    sa = dispatcher.ike_sa(info.ike_sa_id)
    return int(sa.peer.auth_method)


def test_classic_ecdsa_method_without_rfc7427() -> None:
    net = cert_pair("ecdsa", "ecdsa", signature_auth="classic")
    net.a.initiate("conn", "net", now=0.0)
    net.pump()
    assert net.events("a", ChildSaEstablished)
    assert _peer_auth_method(net, "b") == AuthMethod.ECDSA_SHA256_P256
    assert _peer_auth_method(net, "a") == AuthMethod.ECDSA_SHA256_P256


@pytest.mark.parametrize(
    "case,check",
    [("unknown-ca", "unknown-ca"), ("expired", "expired"), ("wrong-id", "identity-mismatch")],
)
def test_certificate_failures_explained(case: str, check: str) -> None:
    overrides = {}
    if case == "unknown-ca":
        overrides["leaf_a"] = leaf("ecdsa", "a.example", ca_name="Other CA")
    elif case == "expired":
        overrides["leaf_a"] = leaf("ecdsa", "a.example", expired=True)
    else:
        overrides["id_a"] = "c.example"
    net = cert_pair("ecdsa", "ecdsa", **overrides)
    net.a.initiate("conn", "net", now=0.0)
    net.pump()
    (failure,) = net.events("b", AuthenticationFailed)
    assert failure.check == check, failure.reason
    assert not net.events("b", IkeSaEstablished)
    (rejected,) = net.events("a", AuthenticationFailed)
    assert rejected.check == "peer-rejected"
    if case == "unknown-ca":
        assert "Other CA" in failure.reason and "Test CA" in failure.reason
    if case == "expired":
        assert "expired" in failure.reason


@pytest.mark.parametrize("kind", ["rsa", "rsa-pss", "ecdsa", "ed25519"])
def test_certificate_sa_lifecycle(kind: str) -> None:
    """Establish, rekey Child and IKE SA, liveness check and delete with each key type."""
    from ikev2.events import ChildSaRekeyed, IkeSaDeleted, IkeSaRekeyed, PeerUnreachable

    net = cert_pair(kind, kind)
    ike_id = net.a.initiate("conn", "net", now=0.0)
    net.pump()
    (child,) = net.events("a", ChildSaEstablished)
    net.a.rekey_child(ike_id, child.child_sa_id, net.now)
    net.pump()
    assert net.events("b", ChildSaRekeyed)
    (info_b,) = net.b.sas()
    net.b.rekey_ike(info_b.ike_sa_id, net.now)
    net.pump()
    (rekeyed,) = net.events("a", IkeSaRekeyed)
    net.a.send_liveness(rekeyed.ike_sa_id, net.now)
    net.run_until(net.now + 60.0)
    assert not net.events("a", PeerUnreachable)
    net.a.terminate_ike(rekeyed.ike_sa_id, net.now)
    net.pump()
    assert net.a.sas() == [] and net.b.sas() == []
    assert len(net.events("b", IkeSaDeleted)) == 2  # the rekeyed one and the new one


def test_initiator_rejecting_responder_tells_it() -> None:
    """A cannot verify B (B's CA is unknown to A): A sends AUTHENTICATION_FAILED in an
    INFORMATIONAL (RFC 7296 sec. 2.21.2) and neither side keeps an SA."""
    net = cert_pair("ecdsa", "ecdsa", trust_a=[ca("Other CA")[1]])
    net.a.initiate("conn", "net", now=0.0)
    net.pump()
    (failure_a,) = net.events("a", AuthenticationFailed)
    assert failure_a.check == "unknown-ca" and "Other CA" in failure_a.reason
    (failure_b,) = net.events("b", AuthenticationFailed)
    assert failure_b.check == "peer-rejected"
    assert net.a.sas() == [] and net.b.sas() == []
