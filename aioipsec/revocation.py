"""Certificate revocation for the peer's chain: CRLs (RFC 5280 sec. 5) and OCSP (RFC 6960),
with strongSwan's ``revocation = strict | ifuri | relaxed`` policies.

The engine (``ikev2``) is sans-I/O: it calls ``AuthConfig.revocation.check(chain,
wall_time)`` once the peer's chain validated and its AUTH signature verified, and this
module answers. Like a token's ``sign`` (docs/keys-in-hardware.md), the call blocks inside
the engine call when an answer must be fetched; docs/revocation.md says why, and what
bounds it (a timeout per URI, answers cached until their nextUpdate, failures remembered
for a while, and only a peer holding the private key of a valid certificate gets this far).

Sources, for each certificate of the chain below the trust anchor (strongSwan's order):

1. OCSP: the authority's ``ocsp_uris`` and the certificate's authorityInfoAccess OCSP
   URIs. The request carries a nonce; the response must be signed by the CA, by a
   responder certificate the CA issued with id-kp-OCSPSigning (RFC 6960 sec. 4.2.2.2), or
   by a certificate in swanctl's x509ocsp/.
2. CRLs: the files of x509crl/, the authority's ``crl_uris`` and the certificate's CRL
   distribution points (http/https), fetched with httpx and kept until their nextUpdate.
   A CRL counts only if its issuer is the certificate's issuer and its signature verifies
   with the issuer's key.

The result of a certificate is GOOD, REVOKED, STALE (only an expired CRL), FAILED (URIs
given, no usable answer) or SKIPPED (nowhere to ask). REVOKED always refuses the peer;
``strict`` refuses anything but GOOD, ``ifuri`` refuses FAILED and STALE, ``relaxed`` only
REVOKED (strongSwan's swanctl.conf documentation of ``revocation``).
"""

from __future__ import annotations

import asyncio
import datetime
import enum
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from aioipsec.log import get_logger
from ikev2.crypto.certs import CertificateError
from ikev2.identity import dn_to_string

__all__ = [
    "POLICIES",
    "Authority",
    "RevocationChecker",
    "RevocationStore",
    "Status",
    "StatusResult",
    "keep_fresh",
    "stores_of",
]

POLICIES = ("strict", "ifuri", "relaxed")

# One URI gets this long to answer (connect + read); the engine call waits for it.
FETCH_TIMEOUT = 5.0
# A CRL or OCSP response larger than this is refused (a CRL of ~100 000 entries fits).
MAX_RESPONSE = 8 * 1024 * 1024
# A URI that did not answer is not asked again for this long (seconds).
RETRY_AFTER = 30.0
# A CRL or OCSP answer without nextUpdate is kept this long (seconds).
DEFAULT_LIFETIME = 3600.0
# The daemon fetches a CRL again this long before its nextUpdate, and sleeps between
# refreshes at least MIN_SLEEP and at most MAX_SLEEP (seconds).
REFRESH_AHEAD = 300.0
MIN_SLEEP = 30.0
MAX_SLEEP = 3600.0
# Clock difference allowed with the CA's thisUpdate/nextUpdate.
CLOCK_SKEW = datetime.timedelta(minutes=5)
# Hash and URL certificates kept (each is named by its SHA-1, so kept as long as we like).
MAX_CACHED_CERTIFICATES = 1024

_log = get_logger("aioipsec.revocation")


class Status(enum.Enum):
    GOOD = "good"
    REVOKED = "revoked"
    STALE = "stale"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass
class StatusResult:
    """What one certificate's revocation check found, and where."""

    status: Status
    source: str = ""  # the CRL (file or URI) or the OCSP responder that answered
    detail: str = ""  # why no answer, or the revocation reason and time


@dataclass
class Authority:
    """A CA and where its revocation information is (swanctl's ``authorities``)."""

    name: str
    cacert: x509.Certificate
    crl_uris: list[str] = field(default_factory=list)
    ocsp_uris: list[str] = field(default_factory=list)


@dataclass
class _CachedCrl:
    crl: x509.CertificateRevocationList
    source: str
    expires: float  # wall time after which a fetched CRL is fetched again


@dataclass
class _CachedOcsp:
    result: StatusResult
    expires: float


def _utc(wall_time: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(wall_time, datetime.UTC)


def _serial(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


def _describe(cert: x509.Certificate) -> str:
    return f'"{dn_to_string(cert.subject)}" (serial {_serial(cert)})'


def _same_key(a: x509.Certificate, b: x509.Certificate) -> bool:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return a.public_key().public_bytes(der, spki) == b.public_key().public_bytes(der, spki)


def _key_hash(cert: x509.Certificate) -> bytes:
    """SHA-1 of the subjectPublicKey BIT STRING: OCSP's responder KeyHash (RFC 6960 4.2.1)."""
    return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


def _http_uris(names: Iterable[x509.GeneralName]) -> list[str]:
    return [
        n.value
        for n in names
        if isinstance(n, x509.UniformResourceIdentifier)
        and n.value.lower().startswith(("http://", "https://"))
    ]


def crl_uris_of(cert: x509.Certificate) -> list[str]:
    """The certificate's CRL distribution points we can fetch (http/https full names),
    then its delta CRL distribution points (FreshestCRL, RFC 5280 sec. 4.2.1.15)."""
    uris = []
    for kind in (x509.CRLDistributionPoints, x509.FreshestCRL):
        try:
            value = cert.extensions.get_extension_for_class(kind).value
        except x509.ExtensionNotFound:
            continue
        points: Iterable[x509.DistributionPoint] = value  # type: ignore[assignment]  # both are sequences of DistributionPoint
        uris += [uri for point in points for uri in _http_uris(point.full_name or [])]
    return uris


def ocsp_uris_of(cert: x509.Certificate) -> list[str]:
    """The OCSP responders named in the certificate's authorityInfoAccess."""
    try:
        access = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return []
    return _http_uris(
        d.access_location for d in access if d.access_method == AuthorityInformationAccessOID.OCSP
    )


def _fetch(uri: str, body: bytes | None = None, content_type: str = "") -> bytes:
    """GET (or POST ``body``) over http/https with httpx; raises OSError-like ValueError."""
    import httpx  # imported here: the CLI's other tools never need it

    if not uri.lower().startswith(("http://", "https://")):
        raise ValueError("only http:// and https:// URIs are fetched")
    headers = {"Content-Type": content_type} if content_type else {}
    try:
        with httpx.Client(timeout=FETCH_TIMEOUT, follow_redirects=True, max_redirects=3) as http:
            method = "POST" if body is not None else "GET"
            with http.stream(method, uri, content=body, headers=headers) as response:
                if response.status_code != 200:
                    raise ValueError(f"HTTP status {response.status_code}")
                data = bytearray()
                for chunk in response.iter_bytes():
                    data += chunk
                    if len(data) > MAX_RESPONSE:
                        raise ValueError(f"answer larger than {MAX_RESPONSE} octets")
                return bytes(data)
    except httpx.HTTPError as error:
        raise ValueError(f"{type(error).__name__}: {error}") from None


def _parse_crl(data: bytes) -> x509.CertificateRevocationList:
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_crl(data)
    return x509.load_der_x509_crl(data)


def _verify_signature(
    public_key: Any, signature: bytes, data: bytes, hash_algorithm: Any, what: str
) -> None:
    """A signature over ``data`` (PKCS#1 v1.5, ECDSA, EdDSA): OCSP responses carry one."""
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            if hash_algorithm is None:
                raise ValueError("RSA signature without a hash algorithm (RSASSA-PSS?)")
            public_key.verify(signature, data, padding.PKCS1v15(), hash_algorithm)
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(hash_algorithm))
        elif isinstance(public_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            public_key.verify(signature, data)
        else:
            raise ValueError(f"unsupported key type {type(public_key).__name__}")
    except InvalidSignature:
        raise ValueError(f"the signature of {what} does not verify") from None


class RevocationStore:
    """CRLs and OCSP answers, shared by every connection of one loaded configuration.

    Thread-safe: the daemon may refresh it from a worker thread while the engine asks."""

    def __init__(
        self,
        *,
        authorities: Sequence[Authority] = (),
        crls: Sequence[tuple[x509.CertificateRevocationList, str]] = (),
        ocsp_signers: Sequence[x509.Certificate] = (),
        fetch: Callable[..., bytes] = _fetch,
    ) -> None:
        self.authorities = list(authorities)
        self.ocsp_signers = list(ocsp_signers)
        self._files = [_CachedCrl(crl, source, float("inf")) for crl, source in crls]
        self._fetched: dict[str, _CachedCrl] = {}
        self._ocsp: dict[tuple[bytes, int], _CachedOcsp] = {}
        # Peers' certificates fetched from Hash and URL payloads, by URL (bounded).
        self._certificates: dict[str, bytes] = {}
        # Our own certificates' OCSP responses (DER, expiry) for RFC 4806 replies.
        self._own: dict[tuple[bytes, int], tuple[bytes, float]] = {}
        self._failed: dict[str, tuple[float, str]] = {}  # uri -> (retry at, why)
        self._fetch = fetch
        self._lock = threading.RLock()

    # ---- the sources of one certificate ------------------------------------------

    def _authority(self, issuer: x509.Certificate) -> Authority | None:
        for authority in self.authorities:
            if authority.cacert.subject == issuer.subject and _same_key(authority.cacert, issuer):
                return authority
        return None

    def uris(self, cert: x509.Certificate, issuer: x509.Certificate) -> tuple[list[str], list[str]]:
        """(OCSP URIs, CRL URIs) for ``cert``: the authority's first, then the certificate's."""
        authority = self._authority(issuer)
        ocsp_uris = [*(authority.ocsp_uris if authority else []), *ocsp_uris_of(cert)]
        crl_uris = [*(authority.crl_uris if authority else []), *crl_uris_of(cert)]
        return list(dict.fromkeys(ocsp_uris)), list(dict.fromkeys(crl_uris))

    def status(
        self, cert: x509.Certificate, issuer: x509.Certificate, wall_time: float
    ) -> StatusResult:
        """OCSP first, then CRLs (strongSwan's revocation plugin does the same)."""
        ocsp_uris, crl_uris = self.uris(cert, issuer)
        ocsp_result = self._ocsp_status(cert, issuer, ocsp_uris, wall_time)
        if ocsp_result.status in (Status.GOOD, Status.REVOKED):
            return ocsp_result
        crl_result = self._crl_status(cert, issuer, crl_uris, wall_time)
        if crl_result.status in (Status.GOOD, Status.REVOKED, Status.STALE):
            return crl_result
        if Status.FAILED in (ocsp_result.status, crl_result.status):
            details = "; ".join(r.detail for r in (ocsp_result, crl_result) if r.detail)
            return StatusResult(Status.FAILED, detail=details)
        return StatusResult(Status.SKIPPED, detail="no CRL and no OCSP responder for it")

    # ---- OCSP (RFC 6960) ----------------------------------------------------------

    def _ocsp_status(
        self, cert: x509.Certificate, issuer: x509.Certificate, uris: list[str], wall_time: float
    ) -> StatusResult:
        if not uris:
            return StatusResult(Status.SKIPPED)
        key = (_key_hash(issuer), cert.serial_number)
        cached = self._ocsp.get(key)
        if cached is not None and wall_time < cached.expires:
            return cached.result
        problems = []
        for uri in uris:
            recent = self._recently_failed(uri, wall_time)
            if recent is not None:
                problems.append(f"OCSP responder {uri}: {recent} (not asked again yet)")
                continue
            try:
                result, expires = self._ask_ocsp(uri, cert, issuer, wall_time)
            except ValueError as error:
                problems.append(self._failure(f"OCSP responder {uri}", uri, error, wall_time))
                continue
            with self._lock:
                self._failed.pop(uri, None)
                if result.status in (Status.GOOD, Status.REVOKED):
                    self._ocsp[key] = _CachedOcsp(result, expires)
            if result.status in (Status.GOOD, Status.REVOKED):
                return result
            problems.append(result.detail)
        return StatusResult(Status.FAILED, detail="; ".join(problems))

    def _ask_ocsp(
        self, uri: str, cert: x509.Certificate, issuer: x509.Certificate, wall_time: float
    ) -> tuple[StatusResult, float]:
        nonce = os.urandom(16)
        # CertID with SHA-1: what every responder (openssl ocsp, strongSwan's) matches on.
        request = (
            ocsp.OCSPRequestBuilder()
            .add_certificate(cert, issuer, hashes.SHA1())
            .add_extension(x509.OCSPNonce(nonce), critical=False)
            .build()
        )
        der = self._fetch(
            uri, request.public_bytes(serialization.Encoding.DER), "application/ocsp-request"
        )
        return self.evaluate_ocsp(der, cert, issuer, wall_time, f"OCSP responder {uri}", nonce)

    def evaluate_ocsp(
        self,
        der: bytes,
        cert: x509.Certificate,
        issuer: x509.Certificate,
        wall_time: float,
        source: str,
        nonce: bytes | None = None,
    ) -> tuple[StatusResult, float]:
        """What the DER OCSP response says about ``cert`` (ValueError: no usable answer):
        signed by an acceptable responder, fresh, for this certificate, with our nonce
        when we sent one (a response the peer sent in IKE, RFC 4806, has none of ours)."""
        try:
            response = ocsp.load_der_ocsp_response(der)
        except ValueError as error:
            raise ValueError(f"not an OCSP response ({error})") from None
        if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
            raise ValueError(f"responder answered {response.response_status.name}")
        self._check_ocsp_signer(response, issuer, wall_time)
        try:
            answered = response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        except x509.ExtensionNotFound:
            answered = None  # RFC 6960 sec. 4.4.1 lets a responder leave it out
        if nonce is not None and answered is not None and answered != nonce:
            raise ValueError("the response's nonce is not the one we sent (replayed answer?)")
        now = _utc(wall_time)
        for single in response.responses:
            if single.serial_number != cert.serial_number or single.issuer_key_hash != _key_hash(
                issuer
            ):
                continue
            if single.this_update_utc > now + CLOCK_SKEW:
                raise ValueError("the response's thisUpdate is in the future")
            next_update = single.next_update_utc
            if next_update is not None and next_update < now - CLOCK_SKEW:
                raise ValueError(f"the response expired at {next_update:%Y-%m-%d %H:%M:%S} UTC")
            expires = next_update.timestamp() if next_update else wall_time + DEFAULT_LIFETIME
            if single.certificate_status == ocsp.OCSPCertStatus.GOOD:
                return StatusResult(Status.GOOD, source), expires
            if single.certificate_status == ocsp.OCSPCertStatus.REVOKED:
                reason = single.revocation_reason.value if single.revocation_reason else "no reason"
                when = single.revocation_time_utc
                detail = f"{reason}, revoked {when:%Y-%m-%d %H:%M:%S} UTC" if when else reason
                return StatusResult(Status.REVOKED, source, detail), expires
            return StatusResult(Status.FAILED, source, f"{source}: status unknown"), expires
        raise ValueError("the response does not answer for this certificate")

    def _check_ocsp_signer(
        self, response: ocsp.OCSPResponse, issuer: x509.Certificate, wall_time: float
    ) -> None:
        """RFC 6960 sec. 4.2.2.2: the CA itself, a responder certificate it issued for
        OCSP signing, or one trusted locally (x509ocsp/)."""

        def is_responder(cert: x509.Certificate) -> bool:
            if response.responder_key_hash is not None:
                return _key_hash(cert) == response.responder_key_hash
            return cert.subject == response.responder_name

        now = _utc(wall_time)
        for candidate in (issuer, *self.ocsp_signers, *response.certificates):
            if not is_responder(candidate):
                continue
            if candidate is not issuer and not any(candidate == s for s in self.ocsp_signers):
                try:
                    candidate.verify_directly_issued_by(issuer)
                except (ValueError, TypeError, InvalidSignature):
                    continue
                try:
                    usage = candidate.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
                except x509.ExtensionNotFound:
                    raise ValueError(
                        f"responder certificate {_describe(candidate)} lacks id-kp-OCSPSigning"
                    ) from None
                if ExtendedKeyUsageOID.OCSP_SIGNING not in usage.value:
                    raise ValueError(
                        f"responder certificate {_describe(candidate)} lacks id-kp-OCSPSigning"
                    )
                if not (
                    candidate.not_valid_before_utc - CLOCK_SKEW
                    <= now
                    <= candidate.not_valid_after_utc + CLOCK_SKEW
                ):
                    raise ValueError(f"responder certificate {_describe(candidate)} expired")
            _verify_signature(
                candidate.public_key(),
                response.signature,
                response.tbs_response_bytes,
                response.signature_hash_algorithm,
                "the OCSP response",
            )
            return
        raise ValueError(
            f'the response is signed by neither the CA "{dn_to_string(issuer.subject)}" nor a '
            "responder certificate it issued for OCSP signing (nor one in x509ocsp/)"
        )

    # ---- RFC 7296 sec. 3.6: Hash and URL certificates ------------------------------

    def certificate(self, url: str) -> bytes:
        """The DER certificate at ``url`` (a peer's Hash and URL CERT payload), fetched with
        httpx once and kept (the peer's SHA-1 names it, so it never changes). ValueError
        when it cannot be fetched or is no DER certificate."""
        with self._lock:
            cached = self._certificates.get(url)
        if cached is not None:
            return cached
        if not url.lower().startswith(("http://", "https://")):
            raise ValueError("only http and https URLs are fetched")
        der = self._fetch(url)
        try:
            x509.load_der_x509_certificate(der)
        except ValueError as error:
            raise ValueError(f"not a DER certificate ({error})") from None
        with self._lock:
            if len(self._certificates) >= MAX_CACHED_CERTIFICATES:
                self._certificates.pop(next(iter(self._certificates)))
            self._certificates[url] = der
        return der

    # ---- RFC 4806: OCSP responses carried in IKE ---------------------------------

    def stapled_status(
        self,
        cert: x509.Certificate,
        issuer: x509.Certificate,
        stapled: Sequence[bytes],
        wall_time: float,
    ) -> StatusResult | None:
        """The status one of the peer's OCSP responses gives ``cert`` (None: none of them
        is a usable answer for it, and the usual sources are asked)."""
        source = "the OCSP response the peer sent (RFC 4806)"
        for der in stapled:
            try:
                result, _ = self.evaluate_ocsp(der, cert, issuer, wall_time, source)
            except ValueError as error:
                _log.info("peer's OCSP response not used", error=str(error))
                continue
            if result.status in (Status.GOOD, Status.REVOKED):
                return result
        return None

    def own_response(
        self, cert: x509.Certificate, issuer: x509.Certificate, wall_time: float
    ) -> bytes | None:
        """A good OCSP response (DER) for our own ``cert``, for a peer that asked for it in
        IKE (RFC 4806 ``ocsp = reply``): from its OCSP URIs (the authority's, then the
        certificate's), kept until its nextUpdate; None when no responder gave one."""
        key = (_key_hash(issuer), cert.serial_number)
        with self._lock:
            cached = self._own.get(key)
        if cached is not None and wall_time < cached[1]:
            return cached[0]
        ocsp_uris, _ = self.uris(cert, issuer)
        for uri in ocsp_uris:
            if self._recently_failed(uri, wall_time) is not None:
                continue
            request = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1()).build()
            try:
                der = self._fetch(
                    uri,
                    request.public_bytes(serialization.Encoding.DER),
                    "application/ocsp-request",
                )
                result, expires = self.evaluate_ocsp(
                    der, cert, issuer, wall_time, f"OCSP responder {uri}"
                )
            except ValueError as error:
                self._failure(f"OCSP responder {uri}", uri, error, wall_time)
                continue
            if result.status is Status.GOOD:
                with self._lock:
                    self._own[key] = (der, expires)
                return der
        return None

    # ---- fetching, failures, refreshing -------------------------------------------

    def _recently_failed(self, uri: str, wall_time: float) -> str | None:
        """Why URI failed, when it did less than RETRY_AFTER ago (it is not asked again)."""
        retry = self._failed.get(uri)
        return retry[1] if retry is not None and wall_time < retry[0] else None

    def _failure(self, what: str, uri: str, error: Exception, wall_time: float) -> str:
        with self._lock:
            self._failed[uri] = (wall_time + RETRY_AFTER, str(error))
        _log.warning("revocation source failed", source=what, error=str(error))
        return f"{what}: {error}"

    def fetch_crl(self, uri: str, wall_time: float) -> str | None:
        """Fetch the CRL at URI into the cache (kept until its nextUpdate); returns the
        problem, or None. The fetch runs without the lock: the engine's check and the
        daemon's refresher may fetch at once, and then one CRL replaces the other."""
        try:
            crl = _parse_crl(self._fetch(uri))
        except ValueError as error:
            return self._failure(f"CRL {uri}", uri, error, wall_time)
        next_update = crl.next_update_utc
        expires = next_update.timestamp() if next_update else wall_time + DEFAULT_LIFETIME
        with self._lock:
            self._failed.pop(uri, None)
            self._fetched[uri] = _CachedCrl(crl, f"CRL {uri}", expires)
        _log.info("CRL fetched", uri=uri, entries=len(crl), next_update=str(next_update))
        return None

    def refresh(self, wall_time: float) -> float:
        """Fetch the CRLs of the authorities' ``crl_uris`` and every cached CRL due within
        REFRESH_AHEAD of its nextUpdate, so that a peer's check rarely waits for a fetch.
        Returns the seconds until the next one is due (the daemon sleeps that long)."""
        with self._lock:
            uris = list(
                dict.fromkeys([*(u for a in self.authorities for u in a.crl_uris), *self._fetched])
            )
        for uri in uris:
            cached = self._fetched.get(uri)
            due = cached is None or cached.expires - REFRESH_AHEAD <= wall_time
            if due and self._recently_failed(uri, wall_time) is None:
                self.fetch_crl(uri, wall_time)
        with self._lock:
            times = [c.expires - REFRESH_AHEAD for c in self._fetched.values()]
            times += [retry for retry, _ in self._failed.values()]
        return min(max(min(times, default=wall_time + MAX_SLEEP) - wall_time, MIN_SLEEP), MAX_SLEEP)

    # ---- CRLs (RFC 5280 sec. 5) --------------------------------------------------

    def _usable_crls(
        self, issuer: x509.Certificate, extra: Iterable[_CachedCrl]
    ) -> list[_CachedCrl]:
        usable = []
        for cached in (*self._files, *extra):
            if cached.crl.issuer != issuer.subject:
                continue
            try:
                valid = cached.crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]  # X25519/X448 keys cannot sign; TypeError caught
            except (TypeError, ValueError):
                valid = False
            if not valid:
                _log.warning(
                    "CRL signature does not verify with its CA; ignored",
                    crl=cached.source,
                    ca=dn_to_string(issuer.subject),
                )
                continue
            usable.append(cached)
        return usable

    def _crl_status(
        self, cert: x509.Certificate, issuer: x509.Certificate, uris: list[str], wall_time: float
    ) -> StatusResult:
        now = _utc(wall_time)

        def fresh(cached: _CachedCrl) -> bool:
            next_update = cached.crl.next_update_utc
            return (next_update is None or next_update + CLOCK_SKEW >= now) and (
                wall_time < cached.expires
            )

        problems = []
        usable = self._usable_crls(issuer, (self._fetched[u] for u in uris if u in self._fetched))
        # RFC 5280 sec. 5.2.6: the delta CRLs (FreshestCRL) of the complete CRLs we hold.
        uris = list(dict.fromkeys([*uris, *(u for c in usable for u in _freshest_uris(c.crl))]))
        fetched: set[str] = set()
        while not _current(usable, fresh) and not set(uris) <= fetched:
            # Twice at most: the CRLs, then the delta CRLs those name.
            for uri in uris:
                cached = self._fetched.get(uri)
                if uri in fetched or (cached is not None and fresh(cached)):
                    continue
                fetched.add(uri)
                recent = self._recently_failed(uri, wall_time)
                if recent is not None:
                    problems.append(f"CRL {uri}: {recent} (not fetched again yet)")
                    continue
                problem = self.fetch_crl(uri, wall_time)
                if problem is not None:
                    problems.append(problem)
            usable = self._usable_crls(
                issuer, (self._fetched[u] for u in uris if u in self._fetched)
            )
            more = [u for c in usable for u in _freshest_uris(c.crl)]
            uris = list(dict.fromkeys([*uris, *more]))
            fetched |= {u for u in uris if u in self._fetched and fresh(self._fetched[u])}
        revoked = _revoked_in(usable, cert.serial_number)
        if revoked is not None:
            return revoked
        current = _current(usable, fresh)
        if current:
            return StatusResult(Status.GOOD, " with ".join(c.source for c in current))
        if usable:
            return StatusResult(
                Status.STALE,
                usable[0].source,
                f"{usable[0].source} expired (nextUpdate {usable[0].crl.next_update_utc})",
            )
        if uris:
            return StatusResult(Status.FAILED, detail="; ".join(problems) or "no usable CRL")
        return StatusResult(Status.SKIPPED)


def _crl_number(crl: x509.CertificateRevocationList) -> int | None:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return None


def _delta_base(crl: x509.CertificateRevocationList) -> int | None:
    """The BaseCRLNumber of a delta CRL (RFC 5280 sec. 5.2.4), None for a complete CRL."""
    try:
        return crl.extensions.get_extension_for_class(x509.DeltaCRLIndicator).value.crl_number
    except x509.ExtensionNotFound:
        return None


def _freshest_uris(crl: x509.CertificateRevocationList) -> list[str]:
    """Where a complete CRL says its delta CRLs are (FreshestCRL, RFC 5280 sec. 5.2.6)."""
    try:
        points = crl.extensions.get_extension_for_class(x509.FreshestCRL).value
    except x509.ExtensionNotFound:
        return []
    return [uri for point in points for uri in _http_uris(point.full_name or [])]


def _applies(delta: _CachedCrl, complete: _CachedCrl) -> bool:
    """A delta CRL updates a complete CRL whose number is at least its BaseCRLNumber and
    below its own number (RFC 5280 sec. 5.2.4)."""
    base, number = _delta_base(delta.crl), _crl_number(complete.crl)
    own = _crl_number(delta.crl)
    return (
        base is not None and number is not None and base <= number and (own is None or own > number)
    )


def _current(usable: list[_CachedCrl], fresh: Callable[[_CachedCrl], bool]) -> list[_CachedCrl]:
    """The CRLs that give a current status: a fresh complete CRL, or a complete CRL with a
    fresh delta CRL that applies to it (whose nextUpdate then governs); a delta CRL alone
    lists only changes and never makes a certificate good."""
    complete = [c for c in usable if _delta_base(c.crl) is None]
    deltas = [c for c in usable if _delta_base(c.crl) is not None]
    for base in complete:
        if fresh(base):
            return [base, *(d for d in deltas if _applies(d, base) and fresh(d))]
    for base in complete:
        for delta in deltas:
            if _applies(delta, base) and fresh(delta):
                return [base, delta]
    return []


def _revoked_in(usable: list[_CachedCrl], serial: int) -> StatusResult | None:
    """REVOKED when a CRL lists the serial: a complete CRL's entry stands unless a delta that
    applies to it lists the serial with removeFromCRL (a certificateHold released)."""
    for cached in usable:
        entry = cached.crl.get_revoked_certificate_by_serial_number(serial)
        if entry is None:
            continue
        try:
            why = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        except x509.ExtensionNotFound:
            why = None
        if why is x509.ReasonFlags.remove_from_crl:
            continue
        if _delta_base(cached.crl) is None and any(
            _applies(delta, cached) and _removed(delta, serial) for delta in usable
        ):
            continue
        text = why.value if why is not None else "no reason"
        kind = "delta CRL" if _delta_base(cached.crl) is not None else "CRL"
        detail = f"{text}, revoked {entry.revocation_date_utc:%Y-%m-%d %H:%M:%S} UTC"
        return StatusResult(Status.REVOKED, f"{cached.source} ({kind})", detail)
    return None


def _removed(delta: _CachedCrl, serial: int) -> bool:
    entry = delta.crl.get_revoked_certificate_by_serial_number(serial)
    if entry is None:
        return False
    try:
        reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return False
    return reason is x509.ReasonFlags.remove_from_crl


@dataclass
class RevocationChecker:
    """``AuthConfig.revocation`` of one connection's remote: its policy over a store."""

    store: RevocationStore
    policy: str = "relaxed"

    def check(
        self, chain: Sequence[x509.Certificate], wall_time: float, stapled: Sequence[bytes] = ()
    ) -> None:
        """Raise CertificateError (AUTHENTICATION_FAILED) for a revoked certificate, or for
        one whose status the policy needs and nobody could tell. ``stapled``: OCSP
        responses the peer sent (RFC 4806), used first for the certificate they answer."""
        for cert, issuer in itertools.pairwise(chain):
            if cert.subject == issuer.subject and _same_key(cert, issuer):
                continue  # a self-signed anchor has nobody to revoke it
            result = self.store.stapled_status(cert, issuer, stapled, wall_time)
            if result is None:
                result = self.store.status(cert, issuer, wall_time)
            if result.status is Status.REVOKED:
                raise CertificateError(
                    f"certificate {_describe(cert)} is revoked ({result.detail}) according "
                    f"to {result.source}",
                    check="revoked",
                )
            if self.policy == "strict" and result.status is not Status.GOOD:
                raise CertificateError(
                    f"revocation = strict needs a good status for {_describe(cert)}, got "
                    f"{result.status.value}: {result.detail or result.source}",
                    check="revocation-unknown",
                )
            if self.policy == "ifuri" and result.status in (Status.FAILED, Status.STALE):
                raise CertificateError(
                    f"revocation = ifuri: {_describe(cert)} names revocation sources and "
                    f"none answered: {result.detail}",
                    check="revocation-unknown",
                )
            _log.info(
                "revocation checked",
                certificate=_describe(cert),
                status=result.status.value,
                source=result.source,
            )


def stores_of(engine_configs: Iterable[Any]) -> list[RevocationStore]:
    """The revocation stores the remote rounds of these ``ikev2.config.IkeConfig`` use."""
    stores = {
        id(config.remote.revocation.store): config.remote.revocation.store
        for config in engine_configs
        if isinstance(config.remote.revocation, RevocationChecker)
    }
    return list(stores.values())


async def keep_fresh(stores: Callable[[], Iterable[RevocationStore]]) -> None:
    """The daemon's task: refresh every store ``stores()`` returns (the current
    configuration's, also after a reload) in a worker thread, until cancelled."""
    while True:
        delays = [await asyncio.to_thread(store.refresh, time.time()) for store in stores()]
        await asyncio.sleep(min(delays, default=MAX_SLEEP))
