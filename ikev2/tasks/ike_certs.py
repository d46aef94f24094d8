"""Public-key authentication inside IKE_AUTH: CERT payloads, RFC 7427 signatures (method
14) and the classic methods 1 and 9-11, chain validation against the configured CAs, and
the revocation check the daemon supplies (``AuthConfig.revocation``).

The cryptographic checks are ``ikev2.crypto.auth`` (signatures) and
``ikev2.crypto.certs`` (X.509 path validation with ``cryptography``'s verifier, validity
with a clock-skew allowance, identity in SAN or subject). This module wires them to the
exchange and names the failed check for ``AuthenticationFailed.check``.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ikev2.config import AuthConfig
from ikev2.crypto.auth import (
    AuthenticationError,
    choose_signature_scheme,
    sign_auth,
)
from ikev2.crypto.auth import verify_signature_auth as verify_signature
from ikev2.crypto.certs import validate_chain
from ikev2.enums import CertEncoding
from ikev2.identity import Identity
from ikev2.payloads import AuthPayload, CertPayload
from ikev2.tasks.context import Payload, TaskContext


def build_signature_auth(sa: TaskContext, auth: AuthConfig, octets: bytes) -> list[Payload]:
    """Our CERT payloads (leaf first) and the signed AUTH payload."""
    key = auth.private_key
    if key is None:
        raise AuthenticationError(
            "public-key authentication without a private key", check="no-credentials"
        )
    peer_hashes = (
        None
        if auth.signature_auth == "classic" or not sa.peer.signature_hashes
        else sa.peer.signature_hashes
    )
    method, scheme = choose_signature_scheme(
        key, peer_hashes, policy=sa.ctx.policy, rsa_pss=auth.rsa_pss
    )
    payloads: list[Payload] = []
    if auth.send_cert == "always" or (auth.send_cert == "ifasked" and sa.peer.certreq):
        payloads += [
            CertPayload(
                encoding=CertEncoding.X509_CERT_SIGNATURE, data=cert.public_bytes(Encoding.DER)
            )
            for cert in auth.certs
        ]
    payloads.append(AuthPayload(method=method, data=sign_auth(key, octets, method, scheme)))
    return payloads


def verify_signature_auth(
    sa: TaskContext,
    auth: AuthConfig,
    remote: Identity,
    payloads: list[Payload],
    auth_payload: AuthPayload,
    octets: bytes,
    now: float,
) -> None:
    """Validate the peer's certificate chain and its AUTH signature (raises with a check)."""
    der = [
        bytes(p.data)
        for p in payloads
        if isinstance(p, CertPayload) and int(p.encoding) == CertEncoding.X509_CERT_SIGNATURE
    ]
    try:
        certs = [x509.load_der_x509_certificate(data) for data in der]
    except ValueError as error:
        raise AuthenticationError(
            f"unparsable certificate from {remote}: {error}", check="bad-certificate"
        ) from None
    if not certs:
        # A peer certificate configured locally (swanctl remote.certs) stands in.
        certs = list(auth.certs)
    if not certs:
        raise AuthenticationError(
            f"{remote} sent no certificate and none is configured for it", check="no-credentials"
        )
    wall_time = now + sa.ctx.wall_time_offset
    # A CertificateError names its check (unknown-ca, expired, identity-mismatch, ...).
    public_key, chain = validate_chain(
        certs[0], certs[1:], auth.cacerts, wall_time, identity=remote
    )
    # A failure here is an AuthenticationError with check "bad-signature" (its default).
    verify_signature(
        public_key,
        int(auth_payload.method),
        bytes(auth_payload.data),
        octets,
        policy=sa.ctx.policy,
        peer_id=str(remote),
    )
    # Revocation last: only a peer that proved it holds the key of a valid certificate
    # makes the daemon ask a CRL server or OCSP responder (RFC 5280 sec. 6.3, RFC 6960).
    if auth.revocation is not None:
        auth.revocation.check(chain, wall_time)
