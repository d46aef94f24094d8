"""Certificates, private keys, CERTREQ and IKE identities, against a PKI made by strongSwan's
``pki`` tool (tests/conftest_pki.py). strongSwan's own output is the oracle where it has
one: ``pki --keyid`` for the CERTREQ hash, ``pki --dn`` for the DER of a DN identity."""

from __future__ import annotations

import datetime
import os
import re
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from ikev2.crypto.auth import AuthenticationError
from ikev2.crypto.certs import (
    CertificateError,
    KeyFileError,
    build_certreq_data,
    ca_key_hashes,
    certificate_identities,
    certreq_hash,
    check_identity,
    load_certificate,
    load_certificates,
    load_private_key,
    load_private_key_file,
    parse_certreq_data,
    trusted_cas_for_certreq,
    validate_chain,
)
from ikev2.enums import IdType, NotifyType
from ikev2.errors import ProtocolError
from ikev2.identity import ANY, Identity, IdentitySyntaxError, dn_from_string, dn_to_string
from tests.conftest_pki import PKI_TOOL, Pki, pki_fixture  # noqa: F401

UTC = datetime.UTC


def _now() -> datetime.datetime:
    return datetime.datetime.now(UTC)  # the test's clock; ikev2/ never reads one


# ---- loading -------------------------------------------------------------------------


def test_load_pem_and_der_certificates(pki: Pki) -> None:
    pem = pki["rsa"].cert_path.read_bytes()
    der = pki["rsa"].cert.public_bytes(serialization.Encoding.DER)
    assert load_certificate(pem) == load_certificate(der) == pki["rsa"].cert
    bundle = pem + pki["ca"].cert_path.read_bytes()
    assert load_certificates(bundle) == [pki["rsa"].cert, pki["ca"].cert]
    with pytest.raises(ValueError, match="expected one certificate"):
        load_certificate(bundle)
    with pytest.raises(ValueError, match="not a PEM or DER"):
        load_certificate(b"\x30\x03\x02\x01\x00")


@pytest.mark.parametrize("name", ["rsa", "ecdsa256", "ecdsa384", "ecdsa521", "ed25519"])
def test_load_private_keys_made_by_pki(pki: Pki, name: str) -> None:
    entity = pki[name]
    key = load_private_key_file(entity.key_path)
    expected_public = entity.cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert (
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        == expected_public
    )
    # the same key as DER, converted by openssl
    converted = subprocess.run(
        ["openssl", "pkey", "-in", str(entity.key_path), "-outform", "DER"],
        capture_output=True,
        check=True,
    ).stdout
    assert (
        load_private_key(converted)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        == expected_public
    )
    pkcs8_der = entity.key.private_bytes(  # type: ignore[attr-defined]  # Entity.key: object
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert (
        load_private_key(pkcs8_der)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        == expected_public
    )


def test_key_file_permissions(pki: Pki, tmp_path: Path) -> None:
    exposed = tmp_path / "exposed.key"
    exposed.write_bytes(pki["ecdsa256"].key_path.read_bytes())
    os.chmod(exposed, 0o640)
    with pytest.raises(KeyFileError, match=r"group/others \(mode 0640\).*chmod 600"):
        load_private_key_file(exposed)
    os.chmod(exposed, 0o604)
    with pytest.raises(KeyFileError, match="0604"):
        load_private_key_file(exposed)
    assert load_private_key_file(exposed, allow_group_readable=True) is not None
    os.chmod(exposed, 0o600)
    assert load_private_key_file(exposed) is not None
    with pytest.raises(KeyFileError, match="cannot read"):
        load_private_key_file(tmp_path / "missing.key")


def test_bad_private_keys(pki: Pki) -> None:
    with pytest.raises(KeyFileError, match="1024 bits"):
        load_private_key(pki["small_rsa"].key_path.read_bytes())
    encrypted = pki["ecdsa256"].key.private_bytes(  # type: ignore[attr-defined]  # Entity.key: object
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"hunter2-secret"),
    )
    with pytest.raises(KeyFileError) as info:
        load_private_key(encrypted, password=b"wrong-password")
    assert "hunter2" not in str(info.value) and "wrong-password" not in str(info.value)
    assert load_private_key(encrypted, password=b"hunter2-secret") is not None
    with pytest.raises(KeyFileError):
        load_private_key(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")


# ---- CERTREQ -------------------------------------------------------------------------


def _pki_keyids(path: Path) -> dict[str, bytes]:
    """``pki --keyid --type x509``: SHA-1 of subjectPublicKey ("subjkey") and of
    subjectPublicKeyInfo ("keyid")."""
    out = subprocess.run(
        [PKI_TOOL, "--keyid", "--type", "x509", "--in", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = dict(re.findall(r"(\w+) \(SHA-1 of \w+\):\s*([0-9a-f:]+)", out))
    assert set(found) == {"subjkey", "keyid"}, out
    return {k: bytes.fromhex(v.replace(":", "")) for k, v in found.items()}


def test_certreq_hash_is_strongswans_keyid(pki: Pki) -> None:
    for name in ("ca", "ecdsa_ca", "ed25519_ca"):
        assert certreq_hash(pki[name].cert) == _pki_keyids(pki[name].cert_path)["keyid"]
    data = build_certreq_data([pki["ca"].cert, pki["ecdsa_ca"].cert])
    assert data == b"".join(ca_key_hashes([pki["ca"].cert, pki["ecdsa_ca"].cert]))
    assert len(data) == 40
    hashes = parse_certreq_data(data)
    assert trusted_cas_for_certreq(hashes, [pki["other_ca"].cert, pki["ca"].cert]) == [
        pki["ca"].cert
    ]
    with pytest.raises(ProtocolError, match="multiple of 20"):
        parse_certreq_data(data[:-1])
    assert parse_certreq_data(b"") == []


# ---- chain validation ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["rsa", "ecdsa256", "ecdsa521", "ed25519", "dn_only"])
def test_valid_chain(pki: Pki, name: str) -> None:
    public, chain = validate_chain(pki[name].cert, [], [pki["ca"].cert], _now())
    assert chain == [pki[name].cert, pki["ca"].cert]
    assert public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == pki[name].cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_time_as_posix_seconds(pki: Pki) -> None:
    validate_chain(pki["rsa"].cert, [], [pki["ca"].cert], _now().timestamp())


def test_intermediate_ca(pki: Pki) -> None:
    leaf = pki["behind_intermediate"].cert
    _, chain = validate_chain(leaf, [pki["intermediate"].cert], [pki["ca"].cert], _now())
    assert chain == [leaf, pki["intermediate"].cert, pki["ca"].cert]
    with pytest.raises(CertificateError, match=r"unknown CA.*aioipsec Intermediate CA"):
        validate_chain(leaf, [], [pki["ca"].cert], _now())


def test_unknown_ca(pki: Pki) -> None:
    with pytest.raises(CertificateError) as info:
        validate_chain(pki["foreign"].cert, [], [pki["ca"].cert], _now())
    assert info.value.notify is NotifyType.AUTHENTICATION_FAILED
    assert isinstance(info.value, AuthenticationError)
    assert info.value.reason.startswith(
        'unknown CA: the peer\'s certificate "C=CH, O=aioipsec test, CN=evil.example.org" '
        'chains up to "C=CH, O=aioipsec test, CN=Unrelated CA", which is not a configured CA'
    )
    # a forged issuer name: right name, wrong key -> the signature check catches it
    validate_chain(pki["foreign"].cert, [], [pki["other_ca"].cert, pki["ca"].cert], _now())
    with pytest.raises(CertificateError, match="does not validate"):
        validate_chain(pki["rsa"].cert, [], [_impostor_ca(pki)], _now())
    with pytest.raises(CertificateError, match="no CA certificates configured"):
        validate_chain(pki["rsa"].cert, [], [], _now())


def _impostor_ca(pki: Pki) -> x509.Certificate:
    """A CA with the real CA's name but another key (made by pki as well)."""
    key = pki.directory / "impostor.key"
    if not key.exists():
        key.write_bytes(
            subprocess.run(
                [PKI_TOOL, "--gen", "--type", "ecdsa", "--size", "256", "--outform", "pem"],
                capture_output=True,
                check=True,
            ).stdout
        )
    pem = subprocess.run(
        [PKI_TOOL, "--self", "--ca", "--in", str(key), "--type", "priv", "--dn",
         "C=CH, O=aioipsec test, CN=aioipsec Root CA", "--outform", "pem"],
        capture_output=True,
        check=True,
    ).stdout  # fmt: skip
    return x509.load_pem_x509_certificate(pem)


def test_expired_and_not_yet_valid(pki: Pki) -> None:
    cert = pki["short_lived"].cert  # pki --issue --lifetime 1
    not_after = cert.not_valid_after_utc
    ca = [pki["ca"].cert]
    validate_chain(cert, [], ca, not_after - datetime.timedelta(minutes=1))
    # inside the clock-skew allowance (default 300 s) it still passes ...
    validate_chain(cert, [], ca, not_after + datetime.timedelta(seconds=200))
    # ... beyond it, or with the allowance set to 0, it is expired
    with pytest.raises(CertificateError, match=r"expired at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"):
        validate_chain(cert, [], ca, not_after + datetime.timedelta(days=2))
    with pytest.raises(CertificateError, match="expired"):
        validate_chain(cert, [], ca, not_after + datetime.timedelta(seconds=200), clock_skew=0)
    not_before = cert.not_valid_before_utc
    with pytest.raises(CertificateError, match="is not yet valid: valid from"):
        validate_chain(cert, [], ca, not_before - datetime.timedelta(days=1))
    validate_chain(cert, [], ca, not_before - datetime.timedelta(seconds=100))
    with pytest.raises(ValueError, match="timezone-aware"):
        validate_chain(cert, [], ca, datetime.datetime.now())


def test_expired_ca(pki: Pki) -> None:
    ca = pki["ca"].cert
    later = ca.not_valid_after_utc + datetime.timedelta(days=1)
    with pytest.raises(CertificateError, match="expired"):
        validate_chain(pki["rsa"].cert, [], [ca], later)


def test_small_rsa_certificate_is_refused(pki: Pki) -> None:
    with pytest.raises(CertificateError, match="1024-bit RSA key"):
        validate_chain(pki["small_rsa"].cert, [], [pki["ca"].cert], _now())


# ---- identities ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "id_type", "data_hex", "rendered"),
    [
        ("192.0.2.1", IdType.ID_IPV4_ADDR, "c0000201", "192.0.2.1"),
        ("2001:db8::1", IdType.ID_IPV6_ADDR, "20010db8" + "00" * 11 + "01", "2001:db8::1"),
        ("moon.example.org", IdType.ID_FQDN, b"moon.example.org".hex(), "moon.example.org"),
        ("@moon.example.org", IdType.ID_FQDN, b"moon.example.org".hex(), "moon.example.org"),
        ("fqdn:192.0.2.1", IdType.ID_FQDN, b"192.0.2.1".hex(), "fqdn:192.0.2.1"),
        ("moon@example.org", IdType.ID_RFC822_ADDR, b"moon@example.org".hex(), "moon@example.org"),
        ("email:moon@example.org", IdType.ID_RFC822_ADDR, b"moon@example.org".hex(), None),
        ("@#0102ab", IdType.ID_KEY_ID, "0102ab", "@#0102ab"),
        ("keyid:#0102ab", IdType.ID_KEY_ID, "0102ab", "@#0102ab"),
        ("ipv4:192.0.2.1", IdType.ID_IPV4_ADDR, "c0000201", "192.0.2.1"),
    ],
)
def test_identity_strings(text: str, id_type: IdType, data_hex: str, rendered: str | None) -> None:
    identity = Identity.parse(text)
    assert identity.to_payload() == (id_type, bytes.fromhex(data_hex))
    assert str(identity) == (rendered if rendered is not None else text.split(":", 1)[1])
    assert Identity.parse(str(identity)) == identity
    assert Identity.from_payload(int(id_type), bytes.fromhex(data_hex)) == identity
    assert identity.payload_body() == bytes([id_type, 0, 0, 0]) + bytes.fromhex(data_hex)


def test_dn_identity_is_byte_identical_to_strongswan(pki: Pki) -> None:
    # pki --dn "C=CH, O=aioipsec test, CN=moon.example.org" built this subject
    identity = Identity.parse("C=CH, O=aioipsec test, CN=moon.example.org")
    assert identity.id_type is IdType.ID_DER_ASN1_DN
    assert identity.data == pki["rsa"].cert.subject.public_bytes()
    assert str(identity) == "C=CH, O=aioipsec test, CN=moon.example.org"
    assert dn_to_string(pki["rsa"].cert.subject) == str(identity)
    assert Identity.parse("asn1dn:/C=CH/O=aioipsec test/CN=moon.example.org") == identity
    name = dn_from_string('C=CH, O="Example, Inc.", CN=a\\,b')
    assert [a.value for a in name] == ["CH", "Example, Inc.", "a,b"]


def test_any_and_errors() -> None:
    assert Identity.parse("%any") is ANY and ANY.is_any and str(ANY) == "%any"
    with pytest.raises(ValueError):
        ANY.to_payload()
    for bad in ("", "C=CH, XYZ=1", "C=CHE, CN=x", "@#zz", "ipv4:300.1.1.1", "CN="):
        with pytest.raises(IdentitySyntaxError):
            Identity.parse(bad)


def test_identity_from_wire_is_checked() -> None:
    for id_type, data in (
        (1, b"\x01\x02"),
        (5, b"\x00" * 4),
        (9, b"\x30\x05"),
        (2, b""),
        (99, b"x"),
    ):
        with pytest.raises(ProtocolError):
            Identity.from_payload(id_type, data)


def test_configured_identity_matching() -> None:
    peer = Identity.parse("moon.example.org")
    assert ANY.matches(peer)
    assert Identity.parse("MOON.example.org").matches(peer)
    assert Identity.parse("*.example.org").matches(peer)
    assert not Identity.parse("*.example.com").matches(peer)
    assert not Identity.parse("moon@example.org").matches(peer)
    assert Identity.parse("*@example.org").matches(Identity.parse("carol@example.org"))
    dn = Identity.parse("C=CH, O=aioipsec test, CN=carol")
    assert Identity.parse("C=CH, O=aioipsec test, CN=*").matches(dn)
    assert not Identity.parse("C=CH, O=other, CN=*").matches(dn)
    assert not Identity.parse("C=CH, CN=*").matches(dn)
    assert not dn.matches(Identity.parse("C=CH, O=aioipsec test, CN=*"))  # no peer wildcards


@pytest.mark.parametrize(
    "text",
    [
        "moon.example.org",
        "MOON.Example.org",
        "192.0.2.1",
        "2001:db8::1",
        "moon@example.org",
        "C=CH, O=aioipsec test, CN=moon.example.org",
    ],
)
def test_identity_in_certificate(pki: Pki, text: str) -> None:
    check_identity(pki["rsa"].cert, Identity.parse(text))


def test_identity_key_id(pki: Pki) -> None:
    for name in ("rsa", "ecdsa256", "ed25519"):
        for keyid in _pki_keyids(pki[name].cert_path).values():
            check_identity(pki[name].cert, Identity.parse("@#" + keyid.hex()))
    with pytest.raises(CertificateError):
        check_identity(pki["rsa"].cert, Identity.parse("@#" + "00" * 20))


@pytest.mark.parametrize(
    "text",
    [
        "sun.example.org",
        "192.0.2.2",
        "moon@example.com",
        "C=CH, O=aioipsec test, CN=sun.example.org",
        "C=CH, O=aioipsec test, CN=*",
    ],
)
def test_identity_mismatch(pki: Pki, text: str) -> None:
    with pytest.raises(CertificateError) as info:
        check_identity(pki["rsa"].cert, Identity.parse(text))
    assert info.value.notify is NotifyType.AUTHENTICATION_FAILED
    assert info.value.reason.startswith(f"identity mismatch: the peer's ID {Identity.parse(text)}")
    assert "moon.example.org, 192.0.2.1, moon@example.org" in info.value.reason


def test_identity_checked_by_validate_chain(pki: Pki) -> None:
    validate_chain(
        pki["dn_only"].cert,
        [],
        [pki["ca"].cert],
        _now(),
        identity=Identity.parse("C=CH, O=aioipsec test, CN=carol"),
    )
    with pytest.raises(CertificateError, match="identity mismatch"):
        validate_chain(
            pki["dn_only"].cert, [], [pki["ca"].cert], _now(), identity=Identity.parse("carol")
        )


def test_certificate_identities(pki: Pki) -> None:
    names = [str(i) for i in certificate_identities(pki["rsa"].cert)]
    assert names == [
        "C=CH, O=aioipsec test, CN=moon.example.org",
        "moon.example.org",
        "192.0.2.1",
        "moon@example.org",
        "2001:db8::1",
    ]


# ---- fuzz: wire input is accepted or refused with ProtocolError ------------------------


@settings(deadline=None)
@given(st.integers(min_value=0, max_value=255), st.binary(max_size=80))
def test_fuzz_identity_from_payload(id_type: int, data: bytes) -> None:
    try:
        identity = Identity.from_payload(id_type, data)
    except ProtocolError:
        return
    assert identity.to_payload() == (id_type, data)
    str(identity)  # printable whatever the peer sent
    identity.matches(identity)


@settings(deadline=None)
@given(st.binary(max_size=100))
def test_fuzz_certreq(data: bytes) -> None:
    try:
        hashes = parse_certreq_data(data)
    except ProtocolError:
        assert len(data) % 20
        return
    assert b"".join(hashes) == data


@settings(deadline=None)
@given(st.text(max_size=60))
def test_fuzz_identity_strings(text: str) -> None:
    try:
        identity = Identity.parse(text)
    except IdentitySyntaxError:
        return
    if not identity.is_any:
        assert Identity.parse(str(identity)) == identity


def test_type_prefixes() -> None:
    assert Identity.parse("dns:moon.example.org") == Identity.parse("moon.example.org")
    assert Identity.parse("userfqdn:a@b.c") == Identity.parse("a@b.c")
    assert Identity.parse("rfc822:a@b.c") == Identity.parse("email:a@b.c")
    assert Identity.parse("ipv6:2001:db8::1") == Identity.parse("2001:db8::1")
    for empty in ("fqdn:", "keyid:", "asn1dn:", "@", "@@", "@#"):
        with pytest.raises(IdentitySyntaxError, match="nothing after"):
            Identity.parse(empty)
