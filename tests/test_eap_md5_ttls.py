"""EAP-MD5 (RFC 3748 sec. 5.4) and EAP-TTLS (RFC 5281) in both roles, in memory; the
gateway's method choice and the client's Nak (RFC 3748 sec. 5.3.1, strongSwan's
eap-dynamic). The rows against a real charon are in tests/interop/test_eap_methods.py."""

from __future__ import annotations

import datetime
import functools
import hashlib
import struct
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ikev2.eap.md5 import Md5Message, Md5Peer, Md5Server, chap_md5
from ikev2.eap.mschapv2 import MsChapV2Peer, MsChapV2Server
from ikev2.eap.packet import EapError, EapPacket
from ikev2.eap.session import EapAuthenticator, EapPeer
from ikev2.eap.tls import TlsCredentials
from ikev2.eap.ttls import AVP_EAP_MESSAGE, Avp, EapTtlsPeer, EapTtlsServer, eap_from_avps
from ikev2.enums import EapCode, EapType
from tests.test_eap import converse

SECRETS = {"carol@example.org": "Ar3etTnp"}


def lookup(identity: str) -> str | None:
    return SECRETS.get(identity)


@functools.cache
def gateway_certificate() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed P-256 certificate for moon.example.org (its own CA): EAP-TTLS checks
    only the gateway's, and a made-in-memory one costs milliseconds, not a pki run."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "moon.example.org")])
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("moon.example.org")]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def md5_gateway() -> EapAuthenticator:
    return EapAuthenticator({EapType.MD5_CHALLENGE: lambda i: Md5Server(i, lookup)})


def md5_client(identity: str, secret: str) -> EapPeer:
    return EapPeer(identity, {EapType.MD5_CHALLENGE: lambda: Md5Peer(secret)})


def test_chap_md5_is_rfc1994() -> None:
    # RFC 1994 sec. 4.1: MD5 over Identifier || secret || challenge (no published vector;
    # this is the definition written out, and charon's answers pass in the interop rows).
    challenge = bytes(range(16))
    assert chap_md5(7, "Ar3etTnp", challenge) == hashlib.md5(b"\x07Ar3etTnp" + challenge).digest()
    assert Md5Message.parse(b"\x02ab" + b"name").name == b"name"
    for bad in (b"", b"\x00", b"\x05abc"):
        with pytest.raises(EapError, match="EAP-MD5"):
            Md5Message.parse(bad)


def test_md5_both_roles_without_msk() -> None:
    server = md5_gateway()
    peer = md5_client("carol@example.org", "Ar3etTnp")
    wire = converse(server, peer)
    assert server.succeeded and peer.succeeded and wire[-1].code == EapCode.SUCCESS
    assert server.msk is None and peer.msk is None  # AUTH falls back to SK_pi/SK_pr
    assert server.identity == "carol@example.org"
    (request,) = [p for p in wire if p.type == EapType.MD5_CHALLENGE and p.is_request]
    assert len(Md5Message.parse(request.data).value) == 16


def test_md5_wrong_secret_and_unknown_user() -> None:
    server = md5_gateway()
    wire = converse(server, md5_client("carol@example.org", "wrong"))
    assert wire[-1].code == EapCode.FAILURE
    assert server.failure_reason == "wrong EAP-MD5 secret for 'carol@example.org'"
    server = md5_gateway()
    wire = converse(server, md5_client("dave@example.org", "x"))
    assert server.failure_reason == "no EAP secret for 'dave@example.org'"


def test_md5_repeated_response_is_refused() -> None:
    server = md5_gateway()
    peer = md5_client("carol@example.org", "Ar3etTnp")
    identity = peer.process(server.start().serialize())
    assert identity is not None
    challenge = server.process(identity.serialize())
    answer = peer.process(challenge.serialize())
    assert answer is not None
    assert server.process(answer.serialize()).code == EapCode.SUCCESS
    with pytest.raises(EapError):
        server.process(answer.serialize())


def test_gateway_proposes_and_accepts_the_nak() -> None:
    """eap-dynamic: MSCHAPv2 proposed first, the MD5-only client Naks, MD5 runs."""
    server = EapAuthenticator(
        {
            EapType.MSCHAPV2: lambda i: MsChapV2Server(lookup),
            EapType.MD5_CHALLENGE: lambda i: Md5Server(i, lookup),
        }
    )
    wire = converse(server, md5_client("carol@example.org", "Ar3etTnp"))
    assert [p.type for p in wire if p.code == EapCode.RESPONSE] == [
        EapType.IDENTITY,
        EapType.NAK,
        EapType.MD5_CHALLENGE,
    ]
    assert server.succeeded and server.method_type == EapType.MD5_CHALLENGE


# ----------------------------------------------------------------------------- EAP-TTLS


def test_avp_layout_and_padding() -> None:
    inner = EapPacket(EapCode.RESPONSE, 0, EapType.IDENTITY, b"carol").serialize()
    avp = Avp(AVP_EAP_MESSAGE, inner).serialize()
    # code 79, flags M, length 8 + 10, padded to 20
    assert avp[:8] == struct.pack("!II", 79, 0x40 << 24 | 18) and len(avp) == 20
    assert eap_from_avps(avp) == inner
    skipped = Avp(1, b"user", mandatory=False, vendor=9).serialize()
    assert eap_from_avps(skipped + avp) == inner
    for bad, words in [
        (Avp(1, b"user").serialize() + avp, "mandatory and not understood"),
        (avp[:6], "header"),
        (avp[:12], "remaining"),
        (avp + avp, "2 EAP-Message AVPs"),
        (b"", "0 EAP-Message"),
        (struct.pack("!II", 79, 0x40 << 24 | 4), "AVP Length 4"),
    ]:
        with pytest.raises(EapError, match=words):
            eap_from_avps(bad)


def ttls_pair(secret: str, inner: list[EapType], server_id: str = "moon.example.org"):
    cert, key = gateway_certificate()
    now = time.time()
    credentials = TlsCredentials([cert], key, [])
    phase2_server = {
        EapType.MD5_CHALLENGE: lambda i: Md5Server(i, lookup),
        EapType.MSCHAPV2: lambda i: MsChapV2Server(lookup),
    }
    peer_methods = {
        EapType.MD5_CHALLENGE: lambda: Md5Peer(secret),
        EapType.MSCHAPV2: lambda: MsChapV2Peer("carol@example.org", secret),
    }
    server = EapAuthenticator(
        {EapType.TTLS: lambda i: EapTtlsServer(credentials, now, phase2_server)}
    )
    peer = EapPeer(
        "carol@example.org",
        {
            EapType.TTLS: lambda: EapTtlsPeer(
                TlsCredentials([], None, [cert]),
                now,
                "carol@example.org",
                {t: peer_methods[t] for t in inner},
                server_id,
            )
        },
    )
    return server, peer


@pytest.mark.parametrize("inner", [EapType.MD5_CHALLENGE, EapType.MSCHAPV2])
def test_ttls_both_roles(inner: EapType) -> None:
    server, peer = ttls_pair("Ar3etTnp", [inner])
    wire = converse(server, peer)
    assert server.succeeded and peer.succeeded, server.failure_reason
    assert wire[-1].code == EapCode.SUCCESS
    # RFC 5281 sec. 8: both ends export the same 64-octet MSK, not EAP-TLS's
    assert server.msk is not None and len(server.msk) == 64 and server.msk == peer.msk
    assert server.identity == "carol@example.org"
    assert all(p.data[0] & 0x07 == 0 for p in wire if p.type == EapType.TTLS and p.data)


def test_ttls_wrong_inner_secret() -> None:
    server, peer = ttls_pair("wrong", [EapType.MD5_CHALLENGE])
    wire = converse(server, peer)
    assert wire[-1].code == EapCode.FAILURE and server.msk is None
    assert "wrong EAP-MD5 secret for 'carol@example.org'" in (server.failure_reason or "")


def test_ttls_client_checks_the_gateway() -> None:
    server, peer = ttls_pair("Ar3etTnp", [EapType.MD5_CHALLENGE], "other.example.org")
    with pytest.raises(EapError, match="identity mismatch"):
        converse(server, peer)


def test_ttls_other_version_refused() -> None:
    server, peer = ttls_pair("Ar3etTnp", [EapType.MD5_CHALLENGE])
    identity = peer.process(server.start().serialize())
    assert identity is not None
    start = server.process(identity.serialize())
    version_1 = EapPacket(EapCode.REQUEST, start.identifier, EapType.TTLS, b"\x21")
    with pytest.raises(EapError, match="EAP-TTLS version 1"):
        peer.process(version_1.serialize())
