"""X.509 certificates and private keys for IKEv2 signature authentication.

* Loading certificates (PEM or DER, also PEM bundles) and private keys (PEM or DER;
  PKCS#1, SEC1, PKCS#8; RSA, ECDSA P-256/384/521, Ed25519, Ed448). Key files that group or
  others can read are refused unless allowed: a leaked IKE key lets anyone impersonate us.
* Chain validation with ``cryptography.x509.verification`` against the configured CAs, at
  a wall-clock time passed in by the caller (this package never reads the clock), with a
  clock-skew allowance. The end-entity extension policy is permissive (IKE certificates
  rarely carry the TLS EKUs WebPKI requires; RFC 4945 sec. 5.1.3.12 says EKU need not be
  checked); CA certificates get WebPKI's CA checks.
* Identity matching (RFC 4945 sec. 3.1 / 5.1.2): the peer's IKE ID must be one of the
  certificate's subjectAltNames (dNSName, rfc822Name, iPAddress) or its subject DN.
* CERTREQ (RFC 7296 sec. 3.7): SHA-1 of each trusted CA's SubjectPublicKeyInfo.

Every failure of a peer's certificate raises :class:`CertificateError`, an
``AuthenticationError`` (AUTHENTICATION_FAILED) whose reason says which check failed.
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509 import verification

from ikev2.crypto.auth import MIN_RSA_BITS, AuthenticationError, PrivateKey, PublicKey
from ikev2.enums import IdType
from ikev2.errors import ProtocolError
from ikev2.identity import Identity, dn_to_string

__all__ = [
    "DEFAULT_CLOCK_SKEW",
    "CertificateError",
    "KeyFileError",
    "RevocationCheck",
    "build_certreq_data",
    "ca_key_hashes",
    "certificate_identities",
    "certreq_hash",
    "check_identity",
    "load_certificate",
    "load_certificate_file",
    "load_certificates",
    "load_private_key",
    "load_private_key_file",
    "parse_certreq_data",
    "trusted_cas_for_certreq",
    "validate_chain",
]

# Accept certificates up to 5 minutes before/after their validity window (peers' clocks).
DEFAULT_CLOCK_SKEW = 300.0

_SHA1_LEN = 20
_SUPPORTED_CURVES = ("secp256r1", "secp384r1", "secp521r1")


class CertificateError(AuthenticationError):
    """The peer's certificate is not acceptable (unknown CA, expired, wrong identity,
    revoked...); ``check`` is ``unknown-ca``, ``expired``, ``identity-mismatch``,
    ``bad-certificate``, ``revoked`` or ``revocation-unknown``."""

    def __init__(self, reason: str, check: str = "bad-certificate") -> None:
        super().__init__(reason, check)


class RevocationCheck(Protocol):
    """Asks whether the peer's certificates are revoked (CRL, OCSP): supplied by the
    daemon in ``AuthConfig.revocation`` (aioipsec.revocation), as this package does no
    I/O. ``check`` raises :class:`CertificateError` (check ``revoked`` or
    ``revocation-unknown``) for a chain the configured policy refuses.

    It is called inside the engine call and may block while it fetches an answer, as a
    token's ``Signer.sign`` does (docs/revocation.md says why and what bounds it)."""

    def check(
        self, chain: Sequence[x509.Certificate], wall_time: float, stapled: Sequence[bytes] = ()
    ) -> None:
        """``chain``: leaf first, trust anchor last; ``wall_time``: POSIX seconds;
        ``stapled``: DER OCSP responses the peer sent in CERT payloads (RFC 4806), to be
        used when they answer for a certificate of the chain and verify."""


class KeyFileError(ValueError):
    """A configured private key cannot be used (unreadable, wrong format, exposed file)."""


# ---- loading -------------------------------------------------------------------------


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """All certificates in PEM data (one or more blocks) or one DER certificate."""
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError as error:
        raise ValueError(f"not a PEM or DER X.509 certificate: {error}") from None


def load_certificate(data: bytes) -> x509.Certificate:
    """Exactly one certificate from PEM or DER data."""
    certs = load_certificates(data)
    if len(certs) != 1:
        raise ValueError(f"expected one certificate, found {len(certs)}")
    return certs[0]


def load_certificate_file(path: str | os.PathLike[str]) -> list[x509.Certificate]:
    """Certificates from a file (configuration time I/O, not used by the protocol core)."""
    return load_certificates(Path(path).read_bytes())


def _check_key_supported(key: object) -> PrivateKey:
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise KeyFileError(
                f"RSA key of {key.key_size} bits is refused (minimum {MIN_RSA_BITS}, "
                "RFC 8247 sec. 3.1)"
            )
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name not in _SUPPORTED_CURVES:
            raise KeyFileError(f"ECDSA curve {key.curve.name} is not supported")
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return key
    raise KeyFileError(f"unsupported private key type {type(key).__name__}")


def load_private_key(data: bytes, password: bytes | None = None) -> PrivateKey:
    """A private key from PEM (PKCS#1/SEC1/PKCS#8) or DER (PKCS#8, PKCS#1, SEC1)."""
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password=password)
        else:
            key = serialization.load_der_private_key(data, password=password)
    except (ValueError, TypeError) as error:
        # The message of cryptography never contains key material.
        raise KeyFileError(f"cannot load private key: {error}") from None
    return _check_key_supported(key)


def load_private_key_file(
    path: str | os.PathLike[str],
    *,
    password: bytes | None = None,
    allow_group_readable: bool = False,
) -> PrivateKey:
    """Load a key file, refusing files that group or others may read or write."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except OSError as error:
        raise KeyFileError(f"cannot read private key {path}: {error.strerror}") from None
    exposed = mode & (stat.S_IRWXG | stat.S_IRWXO)
    if exposed and not allow_group_readable:
        raise KeyFileError(
            f"private key {path} is accessible by group/others (mode {stat.S_IMODE(mode):04o});"
            f" run chmod 600 {path}, or allow it explicitly"
        )
    return load_private_key(path.read_bytes(), password)


# ---- CERTREQ -------------------------------------------------------------------------


def certreq_hash(ca: x509.Certificate) -> bytes:
    """RFC 7296 sec. 3.7: SHA-1 of the CA's SubjectPublicKeyInfo (DER)."""
    spki = ca.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha1(spki).digest()


def ca_key_hashes(cas: Iterable[x509.Certificate]) -> list[bytes]:
    """:func:`certreq_hash` of each CA, in order."""
    return [certreq_hash(ca) for ca in cas]


def build_certreq_data(cas: Iterable[x509.Certificate]) -> bytes:
    """Certification Authority field of a CERTREQ (X.509 Signature encoding)."""
    return b"".join(certreq_hash(ca) for ca in cas)


def parse_certreq_data(data: bytes) -> list[bytes]:
    """The 20-octet hashes of a CERTREQ (wire input: ProtocolError if malformed)."""
    if len(data) % _SHA1_LEN:
        raise ProtocolError(
            f"CERTREQ Certification Authority field of {len(data)} octets is not a "
            "multiple of 20 (RFC 7296 sec. 3.7)"
        )
    return [bytes(data[i : i + _SHA1_LEN]) for i in range(0, len(data), _SHA1_LEN)]


def trusted_cas_for_certreq(
    hashes: Iterable[bytes], cas: Iterable[x509.Certificate]
) -> list[x509.Certificate]:
    """The CAs (of ours) that a received CERTREQ asks for."""
    wanted = set(hashes)
    return [ca for ca in cas if certreq_hash(ca) in wanted]


# ---- identities ----------------------------------------------------------------------


def _subject_public_key_bits(public: object) -> bytes:
    """The content of the subjectPublicKey BIT STRING (RFC 5280 sec. 4.1.2.7)."""
    if isinstance(public, rsa.RSAPublicKey):
        return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    if isinstance(public, ec.EllipticCurvePublicKey):
        return public.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    if isinstance(public, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return b""


def _key_ids(cert: x509.Certificate) -> list[bytes]:
    """KEY_ID values a certificate answers to, as strongSwan computes them (``pki --keyid``):
    SHA-1 of the subjectPublicKey, SHA-1 of the SubjectPublicKeyInfo, and the SKI."""
    public = cert.public_key()
    spki = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ids = [hashlib.sha1(spki).digest()]
    bits = _subject_public_key_bits(public)
    if bits:
        ids.append(hashlib.sha1(bits).digest())
    try:
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        ids.append(ski.value.digest)
    except x509.ExtensionNotFound:
        pass
    return ids


def certificate_identities(cert: x509.Certificate) -> list[Identity]:
    """The IKE identities a certificate vouches for: subject DN and SAN entries."""
    identities = [Identity(IdType.ID_DER_ASN1_DN, cert.subject.public_bytes())]
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return identities
    for name in san:
        if isinstance(name, x509.DNSName):
            identities.append(Identity(IdType.ID_FQDN, name.value.encode("ascii", "replace")))
        elif isinstance(name, x509.RFC822Name):
            identities.append(
                Identity(IdType.ID_RFC822_ADDR, name.value.encode("ascii", "replace"))
            )
        elif isinstance(name, x509.IPAddress):
            address = name.value
            if hasattr(address, "packed"):
                kind = IdType.ID_IPV4_ADDR if address.version == 4 else IdType.ID_IPV6_ADDR
                identities.append(Identity(kind, address.packed))
    return identities


def _same_dn(a: bytes, b: bytes) -> bool:
    """Equal DNs, attribute by attribute (string types such as PrintableString vs.
    UTF8String do not matter, RFC 5280 sec. 7.1); no wildcards from the peer."""
    try:
        first, second = x509.Name.from_bytes(a), x509.Name.from_bytes(b)
    except Exception:
        return False
    return [(x.oid, x.value) for x in first] == [(y.oid, y.value) for y in second] and [
        len(r) for r in first.rdns
    ] == [len(r) for r in second.rdns]


def check_identity(cert: x509.Certificate, identity: Identity) -> None:
    """Raise CertificateError unless ``identity`` (the peer's IDi/IDr) is in ``cert``."""
    if identity.is_any:
        raise CertificateError("the peer's identity cannot be %any")
    if identity.id_type is IdType.ID_KEY_ID:
        if identity.data in _key_ids(cert):
            return
    else:
        for candidate in certificate_identities(cert):
            if candidate.id_type != identity.id_type:
                continue
            if identity.id_type is IdType.ID_DER_ASN1_DN:
                if _same_dn(candidate.data, identity.data):
                    return
            elif identity.id_type is IdType.ID_FQDN or identity.id_type is IdType.ID_RFC822_ADDR:
                if candidate.data.lower() == identity.data.lower():
                    return
            elif candidate.data == identity.data:
                return
    names = ", ".join(str(i) for i in certificate_identities(cert))
    raise CertificateError(
        f"identity mismatch: the peer's ID {identity} is neither the subject nor a "
        f"subjectAltName of its certificate (which has: {names})",
        check="identity-mismatch",
    )


# ---- chain validation ----------------------------------------------------------------


def _utc(value: datetime.datetime | float) -> datetime.datetime:
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            raise ValueError("wall-clock time must be timezone-aware (UTC)")
        return value.astimezone(datetime.UTC)
    return datetime.datetime.fromtimestamp(value, datetime.UTC)


def _describe(cert: x509.Certificate) -> str:
    return f'"{dn_to_string(cert.subject)}"'


def _check_validity(
    cert: x509.Certificate, now: datetime.datetime, skew: datetime.timedelta, role: str
) -> None:
    not_before = cert.not_valid_before_utc
    not_after = cert.not_valid_after_utc
    if now + skew < not_before:
        raise CertificateError(
            f"{role} certificate {_describe(cert)} is not yet valid: valid from "
            f"{not_before:%Y-%m-%d %H:%M:%S} UTC, now is {now:%Y-%m-%d %H:%M:%S} UTC",
            check="expired",
        )
    if now - skew > not_after:
        raise CertificateError(
            f"{role} certificate {_describe(cert)} expired at "
            f"{not_after:%Y-%m-%d %H:%M:%S} UTC (now {now:%Y-%m-%d %H:%M:%S} UTC)",
            check="expired",
        )


def _check_end_entity(cert: x509.Certificate) -> PublicKey:
    """The end-entity checks; returns its public key, of a type that can sign AUTH."""
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and not (usage.digital_signature or usage.content_commitment):
        raise CertificateError(
            f"certificate {_describe(cert)} has a keyUsage without digitalSignature or "
            "nonRepudiation: it may not sign IKE AUTH payloads (RFC 4945 sec. 5.1.3.2)"
        )
    public = cert.public_key()
    if isinstance(public, rsa.RSAPublicKey) and public.key_size < MIN_RSA_BITS:
        raise CertificateError(
            f"certificate {_describe(cert)} has a {public.key_size}-bit RSA key; below "
            f"{MIN_RSA_BITS} bits is refused (RFC 8247 sec. 3.1)"
        )
    if not isinstance(
        public,
        rsa.RSAPublicKey
        | ec.EllipticCurvePublicKey
        | ed25519.Ed25519PublicKey
        | ed448.Ed448PublicKey,
    ):
        raise CertificateError(
            f"certificate {_describe(cert)} has an unsupported key type {type(public).__name__}"
        )
    return public


_EDWARDS_KEYS = (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)


def _path_by_names(
    leaf: x509.Certificate, known: dict[bytes, x509.Certificate], anchors: set[bytes]
) -> list[x509.Certificate]:
    """leaf -> ... -> trust anchor along issuer names (validate_chain found that it exists)."""
    chain = [leaf]
    while chain[-1].issuer.public_bytes() not in anchors:
        chain.append(known[chain[-1].issuer.public_bytes()])
    chain.append(known[chain[-1].issuer.public_bytes()])
    return chain


def _verify_path_directly(chain: Sequence[x509.Certificate]) -> None:
    """Signatures and CA constraints along CHAIN (leaf first, trust anchor last), for keys
    the WebPKI verifier refuses. Validity windows were checked by the caller."""
    for depth, (cert, issuer) in enumerate(itertools.pairwise(chain)):
        try:
            constraints = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.ca:
            raise CertificateError(
                f"{_describe(issuer)} issued {_describe(cert)} but is not a CA "
                "(basicConstraints cA is not set; RFC 5280 sec. 4.2.1.9)"
            )
        if constraints.path_length is not None and depth > constraints.path_length:
            raise CertificateError(
                f"the path through {_describe(issuer)} exceeds its pathLenConstraint "
                f"{constraints.path_length} (RFC 5280 sec. 4.2.1.9)"
            )
        try:
            usage = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            usage = None
        if usage is not None and not usage.key_cert_sign:
            raise CertificateError(
                f"{_describe(issuer)} has a keyUsage without keyCertSign: it may not sign "
                "certificates (RFC 5280 sec. 4.2.1.3)"
            )
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature) as error:
            raise CertificateError(
                f"the signature of {_describe(cert)} does not verify with the key of "
                f"{_describe(issuer)}: {error or type(error).__name__}"
            ) from None


def validate_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    trust_anchors: Sequence[x509.Certificate],
    wall_time: datetime.datetime | float,
    *,
    clock_skew: float = DEFAULT_CLOCK_SKEW,
    identity: Identity | None = None,
) -> tuple[PublicKey, list[x509.Certificate]]:
    """Validate the peer's certificate and return (its public key, the chain leaf->anchor).

    ``wall_time``: UTC datetime or POSIX seconds (the caller's clock, never read here).
    ``identity``: the peer's IDi/IDr, checked against the certificate when given.
    """
    if not trust_anchors:
        raise CertificateError(
            "no CA certificates configured to validate the peer against", check="unknown-ca"
        )
    now = _utc(wall_time)
    skew = datetime.timedelta(seconds=clock_skew)
    leaf_key = _check_end_entity(leaf)
    _check_validity(leaf, now, skew, "the peer's")

    # Find a path by issuer names first, for a clear "unknown CA" message.
    known = {cert.subject.public_bytes(): cert for cert in (*intermediates, *trust_anchors)}
    anchors = {cert.subject.public_bytes() for cert in trust_anchors}
    issuer = leaf.issuer.public_bytes()
    seen: set[bytes] = set()
    while issuer not in anchors:
        parent = known.get(issuer)
        if parent is None or issuer in seen:
            configured = "; ".join(_describe(ca) for ca in trust_anchors)
            raise CertificateError(
                f"unknown CA: the peer's certificate {_describe(leaf)} chains up to "
                f'"{dn_to_string(x509.Name.from_bytes(issuer))}", which is not a configured '
                f"CA (configured: {configured})",
                check="unknown-ca",
            )
        seen.add(issuer)
        _check_validity(parent, now, skew, "intermediate CA")
        issuer = parent.issuer.public_bytes()
    _check_validity(
        next(ca for ca in trust_anchors if ca.subject.public_bytes() == issuer),
        now,
        skew,
        "CA",
    )

    chain = _path_by_names(leaf, known, anchors)
    if any(isinstance(c.public_key(), _EDWARDS_KEYS) for c in chain):
        # cryptography's verifier (WebPKI policy) refuses Ed25519/Ed448 keys outright
        # ("Forbidden public key algorithm"), though RFC 8410 defines them for X.509 and
        # strongSwan's pki issues them; such chains get the same checks done here.
        _verify_path_directly(chain)
        if identity is not None:
            check_identity(leaf, identity)
        return leaf_key, chain

    # The skew was applied above; the verifier checks validity at one instant, which we
    # move into the leaf's window when we are within the allowance.
    at = min(max(now, leaf.not_valid_before_utc), leaf.not_valid_after_utc)
    builder = (
        verification.PolicyBuilder()
        .store(verification.Store(list(trust_anchors)))
        .time(at.replace(tzinfo=None))
        .extension_policies(
            ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
            ee_policy=verification.ExtensionPolicy.permit_all(),
        )
    )
    try:
        verified = builder.build_client_verifier().verify(leaf, list(intermediates))
    except verification.VerificationError as error:
        raise CertificateError(
            f"the peer's certificate {_describe(leaf)} does not validate against the "
            f"configured CAs: {error}"
        ) from None
    if identity is not None:
        check_identity(leaf, identity)
    return leaf_key, list(verified.chain)
