"""Public-key authentication inside IKE_AUTH: CERT payloads, RFC 7427 signatures (method
14) and the classic methods 1 and 9-11, chain validation against the configured CAs, and
the revocation check the daemon supplies (``AuthConfig.revocation``).

The cryptographic checks are ``ikev2.crypto.auth`` (signatures) and
``ikev2.crypto.certs`` (X.509 path validation with ``cryptography``'s verifier, validity
with a clock-skew allowance, identity in SAN or subject). This module wires them to the
exchange and names the failed check for ``AuthenticationFailed.check``.
"""

from __future__ import annotations

import hashlib
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ikev2.config import AuthConfig
from ikev2.crypto.auth import (
    AuthenticationError,
    choose_signature_scheme,
    sign_auth,
)
from ikev2.crypto.auth import verify_signature_auth as verify_signature
from ikev2.crypto.certs import validate_chain
from ikev2.enums import CertEncoding, IdType, NotifyType
from ikev2.identity import Identity
from ikev2.payloads import AuthPayload, CertPayload
from ikev2.tasks import find_notify
from ikev2.tasks.context import Payload, TaskContext
from ikev2.tasks.ike_init import http_lookup_notify, ocsp_certreq


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
    x509_requested = any(
        int(p.encoding) == CertEncoding.X509_CERT_SIGNATURE for p in sa.peer.certreq
    )
    if auth.send_cert == "always" or (auth.send_cert == "ifasked" and x509_requested):
        payloads += [_cert_payload(sa, auth, cert, index) for index, cert in enumerate(auth.certs)]
    payloads += _ocsp_reply(sa, auth)
    if sa.initiator:
        # The initiator's RFC 4806 request and HTTP_CERT_LOOKUP_SUPPORTED go with its
        # IKE_AUTH request (the responder's in its IKE_SA_INIT response, ike_init).
        payloads += ocsp_certreq(sa)
        if sa.config.remote.send_certreq:
            payloads += http_lookup_notify(sa)
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
    sa.peer.hash_and_url = (
        sa.peer.hash_and_url
        or find_notify(payloads, NotifyType.HTTP_CERT_LOOKUP_SUPPORTED) is not None
    )
    der = [
        _certificate_der(auth, p, remote)
        for p in payloads
        if isinstance(p, CertPayload)
        and int(p.encoding) in (CertEncoding.X509_CERT_SIGNATURE, CertEncoding.HASH_URL_X509_CERT)
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
    if (auth.pubkeys and not (certs and auth.cacerts)) or (not certs and auth.trusted_pubkeys):
        _verify_raw_key_auth(sa, auth, remote, auth_payload, octets)
        return
    if not certs:
        raise AuthenticationError(
            f"{remote} sent no certificate and none is configured for it", check="no-credentials"
        )
    wall_time = now + sa.ctx.wall_time_offset
    # A CertificateError names its check (unknown-ca, expired, identity-mismatch, ...).
    public_key, chain = validate_chain(
        certs[0], certs[1:], auth.cacerts, wall_time, identity=remote
    )
    _check_cert_policy(auth, certs[0], remote)
    _check_ca_id(auth, chain, remote)
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
        stapled = [
            bytes(p.data)
            for p in payloads
            if isinstance(p, CertPayload) and int(p.encoding) == CertEncoding.OCSP_CONTENT
        ]
        if stapled and sa.config.ocsp in ("request", "both"):
            # RFC 4806: the peer's own OCSP status, checked like one we fetched.
            auth.revocation.check(chain, wall_time, stapled=stapled)
        else:
            auth.revocation.check(chain, wall_time)


def _cert_payload(
    sa: TaskContext, auth: AuthConfig, cert: x509.Certificate, index: int
) -> CertPayload:
    """Our certificate, or (RFC 7296 sec. 3.6) the SHA-1 hash of its DER and the URL it is
    published at, when it is our end-entity certificate, a ``cert_uri_base`` is set and the
    peer announced HTTP_CERT_LOOKUP_SUPPORTED (sec. 3.10.1: only then)."""
    der = cert.public_bytes(Encoding.DER)
    if index == 0 and auth.cert_uri_base and sa.peer.hash_and_url:
        digest = hashlib.sha1(der).digest()
        url = auth.cert_uri_base + digest.hex()
        return CertPayload(encoding=CertEncoding.HASH_URL_X509_CERT, data=digest + url.encode())
    return CertPayload(encoding=CertEncoding.X509_CERT_SIGNATURE, data=der)


def _certificate_der(auth: AuthConfig, payload: CertPayload, remote: Identity) -> bytes:
    """A certificate's DER from a CERT payload: as sent, or fetched from its Hash and URL
    (the hash must be the SHA-1 of what the URL gives, sec. 3.6)."""
    data = bytes(payload.data)
    if int(payload.encoding) == CertEncoding.X509_CERT_SIGNATURE:
        return data
    if len(data) <= 20:
        raise AuthenticationError(
            f"{remote} sent a Hash and URL certificate without a URL", check="bad-certificate"
        )
    digest, url = data[:20], data[20:].decode("ascii", "replace")
    if auth.fetch_certificate is None:
        raise AuthenticationError(
            f"{remote} sent its certificate as a URL ({url}) and we cannot fetch it",
            check="no-credentials",
        )
    try:
        der = auth.fetch_certificate(url)
    except (OSError, ValueError) as error:
        raise AuthenticationError(
            f"cannot fetch the certificate of {remote} from {url}: {error}",
            check="bad-certificate",
        ) from None
    if hashlib.sha1(der).digest() != digest:
        raise AuthenticationError(
            f"the certificate at {url} is not the one {remote} named (SHA-1 differs)",
            check="bad-certificate",
        )
    return der


def _check_ca_id(auth: AuthConfig, chain: list[x509.Certificate], remote: Identity) -> None:
    """strongSwan's ``ca_id``: one CA of the validated chain has that subject, as
    ``cacerts`` would demand, for CAs that come from the peer or elsewhere."""
    if not auth.ca_id:
        return
    wanted = Identity.parse(auth.ca_id)
    subjects = [Identity(IdType.ID_DER_ASN1_DN, ca.subject.public_bytes()) for ca in chain[1:]]
    if not any(wanted.matches(subject) for subject in subjects):
        raise AuthenticationError(
            f"the certificate of {remote} was not issued under CA {auth.ca_id} (ca_id; its "
            f"chain: {', '.join(str(s) for s in subjects) or 'none'})",
            check="unknown-ca",
        )


def _check_cert_policy(auth: AuthConfig, cert: x509.Certificate, remote: Identity) -> None:
    """strongSwan's ``cert_policy``: every configured OID among the certificate policies
    of the peer's certificate (RFC 5280 sec. 4.2.1.4)."""
    if not auth.cert_policy:
        return
    try:
        policies = cert.extensions.get_extension_for_class(x509.CertificatePolicies).value
        listed = {policy.policy_identifier.dotted_string for policy in policies}
    except x509.ExtensionNotFound:
        listed = set()
    missing = [oid for oid in auth.cert_policy if oid not in listed]
    if missing:
        raise AuthenticationError(
            f"the certificate of {remote} lacks certificate policy {', '.join(missing)} "
            f"(cert_policy; it lists {', '.join(sorted(listed)) or 'none'})",
            check="cert-policy",
        )


def _ocsp_reply(sa: TaskContext, auth: AuthConfig) -> list[Payload]:
    """RFC 4806 sec. 3.2: the OCSP response for our certificate in a CERT payload, when the
    peer asked with an OCSP CERTREQ and our ``ocsp`` is reply or both (and one is had)."""
    asked = any(int(p.encoding) == CertEncoding.OCSP_CONTENT for p in sa.peer.certreq)
    if not asked or sa.config.ocsp not in ("reply", "both") or auth.ocsp_staple is None:
        return []
    if not auth.certs:
        return []
    response = auth.ocsp_staple(auth.certs[0])
    if response is None:
        return []
    return [CertPayload(encoding=CertEncoding.OCSP_CONTENT, data=response)]


def key_ids(key: Any) -> set[bytes]:
    """The KEY_IDs a raw public key answers to, strongSwan's fingerprints (pubkey_cert.c
    has_subject): SHA-1 of the SubjectPublicKeyInfo and SHA-1 of the key's bit string
    (for RSA the PKCS#1 RSAPublicKey, for ECDSA the uncompressed point)."""
    info = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    ids = {hashlib.sha1(info).digest()}
    if isinstance(key, rsa.RSAPublicKey):
        ids.add(hashlib.sha1(key.public_bytes(Encoding.DER, PublicFormat.PKCS1)).digest())
    elif isinstance(key, ec.EllipticCurvePublicKey):
        point = key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        ids.add(hashlib.sha1(point).digest())
    elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        ids.add(hashlib.sha1(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).digest())
    return ids


def _verify_raw_key_auth(
    sa: TaskContext,
    auth: AuthConfig,
    remote: Identity,
    auth_payload: AuthPayload,
    octets: bytes,
) -> None:
    """The peer signed with a raw public key (strongSwan's ``pubkeys``; no certificate,
    so no chain and no revocation): one of the trusted keys for its identity must verify
    the AUTH signature."""
    by_key_id = remote.id_type is IdType.ID_KEY_ID
    configured = Identity.parse(auth.id)
    candidates = [
        key
        for key in auth.pubkeys
        if (remote.data in key_ids(key) if by_key_id else not configured.is_any)
    ] + [key for key in auth.trusted_pubkeys if by_key_id and remote.data in key_ids(key)]
    if not candidates:
        raise AuthenticationError(
            f"no trusted raw public key for {remote} (pubkeys, or pubkey/ with its KEY_ID)",
            check="no-credentials",
        )
    error: AuthenticationError | None = None
    for key in candidates:
        try:
            verify_signature(
                key,
                int(auth_payload.method),
                bytes(auth_payload.data),
                octets,
                policy=sa.ctx.policy,
                peer_id=str(remote),
            )
            return
        except AuthenticationError as failure:
            error = failure
    assert error is not None
    raise error
