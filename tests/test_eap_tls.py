"""EAP-TLS (RFC 5216) in both roles over pyOpenSSL memory BIOs, with certificates made by
strongSwan's pki tool; the MSK is the RFC 5705 exporter (RFC 5216 sec. 2.3) on both ends."""

from __future__ import annotations

import time

import pytest

from ikev2.eap.packet import EapError
from ikev2.eap.session import EapAuthenticator, EapPeer
from ikev2.eap.tls import FLAG_L, FLAG_M, EapTlsPeer, EapTlsServer, TlsCredentials
from ikev2.enums import EapCode, EapType
from tests.conftest_pki import Pki, pki_fixture  # noqa: F401  (the pki fixture)


def run(pki: Pki, client: str, client_id: str, server_id: str = "moon.example.org"):
    gateway, peer_entity = pki["rsa"], pki[client]
    # A test may read the clock; the code under test is given it. Read here, after the pki
    # fixture made its certificates (valid from their creation), not at import: collected
    # early in a long run, an import-time instant precedes them ("not yet valid").
    now = time.time()
    server = EapAuthenticator(
        {
            EapType.TLS: lambda identity: EapTlsServer(
                identity, TlsCredentials([gateway.cert], gateway.key, [pki["ca"].cert]), now
            )
        }
    )
    peer = EapPeer(
        client_id,
        {
            EapType.TLS: lambda: EapTlsPeer(
                TlsCredentials([peer_entity.cert], peer_entity.key, [pki["ca"].cert]),
                now,
                server_id,
            )
        },
    )
    wire = [server.start()]
    while True:
        response = peer.process(wire[-1].serialize())
        if response is None:
            return server, peer, wire
        wire.append(response)
        wire.append(server.process(response.serialize()))


def test_eap_tls_both_roles(pki: Pki) -> None:
    server, peer, wire = run(pki, "ecdsa256", "sun.example.org")
    assert server.succeeded and peer.succeeded, server.failure_reason
    assert wire[-1].code == EapCode.SUCCESS
    assert server.msk is not None and len(server.msk) == 64 and server.msk == peer.msk
    assert server.identity == "sun.example.org"
    # the gateway's 3072-bit RSA chain does not fit in one 1024-octet fragment: L and M
    # flags on its first fragment, acknowledgements in between
    flags = [p.data[0] for p in wire if p.type == EapType.TLS and p.data]
    assert any(f & FLAG_L and f & FLAG_M for f in flags)
    assert any(p.data == b"\x00" for p in wire if p.type == EapType.TLS)


def test_eap_tls_certificate_must_vouch_for_the_eap_identity(pki: Pki) -> None:
    server, _peer, wire = run(pki, "ecdsa256", "carol@example.org")
    assert not server.succeeded and wire[-1].code == EapCode.FAILURE
    assert "identity mismatch" in (server.failure_reason or "")


def test_eap_tls_unknown_ca_refused(pki: Pki) -> None:
    server, _peer, wire = run(pki, "foreign", "evil.example.org")
    assert wire[-1].code == EapCode.FAILURE and server.msk is None
    assert "EAP-TLS certificate refused" in (server.failure_reason or "")


def test_eap_tls_peer_checks_the_gateway_identity(pki: Pki) -> None:
    with pytest.raises(EapError, match="identity mismatch"):
        run(pki, "ecdsa256", "sun.example.org", server_id="other.example.org")
