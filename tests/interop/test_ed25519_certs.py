"""Ed25519 certificate chains made by strongSwan's ``pki`` (RFC 8410), validated by
ikev2.crypto.certs: cryptography's WebPKI verifier refuses Ed25519 keys, so these chains are
checked signature by signature; a wrong CA, a forged signature and an expired leaf still fail."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509

from aioipsec.interop.pki import Pki
from ikev2.crypto.certs import CertificateError, validate_chain
from ikev2.identity import Identity

pytestmark = pytest.mark.needs("pki")


def _load(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture(scope="module")
def ed25519_pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki-ed25519"), "ed25519")


@pytest.mark.timeout(60)
def test_pki_made_ed25519_chain_validates(ed25519_pki):
    credentials = ed25519_pki.credentials("responder.example")
    leaf, ca = _load(credentials.cert), _load(credentials.ca_cert)
    now = datetime.datetime.now(datetime.UTC)
    identity = Identity.parse("responder.example")
    public_key, chain = validate_chain(leaf, [], [ca], now, identity=identity)
    assert chain == [leaf, ca]
    assert public_key == leaf.public_key()


@pytest.mark.timeout(60)
def test_ed25519_leaf_from_another_ca_is_refused(ed25519_pki, tmp_path):
    other = Pki(tmp_path / "other", "ed25519")  # same CA name, other key
    leaf = _load(other.credentials("responder.example").cert)
    ca = _load(ed25519_pki.ca_cert)
    with pytest.raises(CertificateError, match="signature"):
        validate_chain(leaf, [], [ca], datetime.datetime.now(datetime.UTC))


@pytest.mark.timeout(60)
def test_ed25519_leaf_outside_its_validity_is_refused(ed25519_pki):
    credentials = ed25519_pki.credentials("initiator.example")
    leaf, ca = _load(credentials.cert), _load(credentials.ca_cert)
    later = leaf.not_valid_after_utc + datetime.timedelta(days=1)
    with pytest.raises(CertificateError) as raised:
        validate_chain(leaf, [], [ca], later)
    assert raised.value.check == "expired"
