"""AUTH payload computation and verification (RFC 7296 sec. 2.15, RFC 7427, RFC 4754).

The signed octets (RFC 7296 sec. 2.15)::

    InitiatorSignedOctets = RealMessage1 | NonceRData | MACedIDForI
    MACedIDForI           = prf(SK_pi, RestOfInitIDPayload)
    RestOfInitIDPayload   = IDType | RESERVED (3 octets) | InitIDData

and symmetrically for the responder (RealMessage2 | NonceIData | prf(SK_pr, IDr')).

Shared key (method 2)::

    AUTH = prf( prf(Shared Secret, "Key Pad for IKEv2"), <SignedOctets> )

The ``prf`` argument is any callable ``prf(key, data) -> bytes`` (``ikev2.crypto.prf.Prf``
instances are). Verification failures raise :class:`AuthenticationError`, a
``ProtocolError`` carrying AUTHENTICATION_FAILED, whose reason never contains secrets.

Signatures, our side::

    method, scheme = choose_signature_scheme(signer, sa.peer_signature_hashes)
    AuthPayload(method=method, data=sign_auth(signer, octets, method, scheme))

``signer`` is a :class:`Signer`: an in-memory ``cryptography`` private key (wrapped by
:func:`as_signer` in :class:`InMemorySigner`), or a key that never leaves a token
(``aioipsec.tokens``: PKCS#11, TPM 2.0). The engine only asks it for its public key and
for one signature; how it signs is the signer's business. Signing is a synchronous call
inside the engine call (docs/keys-in-hardware.md says why); a signer that cannot sign
raises :class:`SignerError`, which fails this AUTH with a clear reason.

(``peer_signature_hashes``: the peer's SIGNATURE_HASH_ALGORITHMS, ``None``/empty when it
sent none: then RFC 4754 ECDSA methods, or RSA method 1 if the policy allows SHA-1.)
The peer's side: ``verify_signature_auth(cert.public_key(), auth.method, auth.data,
octets, peer_id=...)`` after ``ikev2.crypto.certs.validate_chain``. Every check failing
raises AuthenticationError (never a False return: iked CVE-2020-16088).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from ikev2.enums import AuthMethod, HashAlgorithm, NotifyType
from ikev2.errors import ProtocolError
from ikev2.policy import DEFAULT_POLICY, AlgorithmPolicy

__all__ = [
    "KEY_PAD",
    "MIN_RSA_BITS",
    "SUPPORTED_SIGNATURE_HASHES",
    "AuthenticationError",
    "InMemorySigner",
    "SignatureScheme",
    "Signer",
    "SignerError",
    "as_signer",
    "build_signature_hash_algorithms",
    "choose_signature_scheme",
    "ecdsa_der_to_raw",
    "ecdsa_raw_to_der",
    "parse_signature_hash_algorithms",
    "psk_auth",
    "pss_salt_length",
    "sign_auth",
    "signed_octets",
    "verify_psk_auth",
    "verify_signature_auth",
]

PrfFunction = Callable[[bytes, bytes], bytes]

# RFC 7296 sec. 2.15: the 17 ASCII octets, no terminating NUL.
KEY_PAD = b"Key Pad for IKEv2"


class AuthenticationError(ProtocolError):
    """The peer's AUTH payload (or its credentials) did not verify: AUTHENTICATION_FAILED.

    ``check`` names what failed, for ``events.AuthenticationFailed.check`` (``psk-mismatch``,
    ``no-credentials``, ``method-mismatch``, ``identity-mismatch``, ``unknown-ca``,
    ``expired``, ``bad-certificate``, ``bad-signature``)."""

    def __init__(self, reason: str, check: str = "bad-signature") -> None:
        super().__init__(reason, notify=NotifyType.AUTHENTICATION_FAILED)
        self.check = check


class SignerError(AuthenticationError):
    """Our own key could not sign (token removed, TPM unreachable, PIN no longer accepted).

    ``check`` is ``signer-unavailable``. The reason names the key and the failure, never a
    PIN. The IKE SA being authenticated fails; established SAs are not touched, and the
    next attempt asks the signer again (it reconnects to its token)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, check="signer-unavailable")


def signed_octets(
    message: bytes,
    peer_nonce: bytes,
    prf: PrfFunction,
    sk_p: bytes,
    id_payload_body: bytes,
) -> bytes:
    """The octets the AUTH payload covers (RFC 7296 sec. 2.15).

    ``message``: our IKE_SA_INIT message exactly as sent (initiator: the request;
    responder: the response). ``peer_nonce``: the other side's Nonce data.
    ``sk_p``: SK_pi for the initiator, SK_pr for the responder.
    ``id_payload_body``: the body of our IDi/IDr payload (ID Type, 3 RESERVED, data).
    """
    if len(id_payload_body) < 4:
        raise ValueError("an ID payload body has at least ID Type and 3 RESERVED octets")
    return b"".join((message, peer_nonce, prf(sk_p, id_payload_body)))


def psk_auth(prf: PrfFunction, shared_secret: bytes, octets: bytes) -> bytes:
    """AUTH data for method 2 (Shared Key Message Integrity Code)."""
    return prf(prf(shared_secret, KEY_PAD), octets)


def verify_psk_auth(
    prf: PrfFunction,
    shared_secret: bytes,
    octets: bytes,
    received: bytes,
    *,
    peer_id: str = "?",
) -> None:
    """Check a received PSK AUTH value in constant time; raise AuthenticationError if not."""
    expected = psk_auth(prf, shared_secret, octets)
    if not hmac.compare_digest(expected, bytes(received)):
        raise AuthenticationError(
            f"AUTH payload does not verify with the configured PSK for id {peer_id} (PSK mismatch?)"
        )


# ======================================================================================
# Signatures: RFC 7427 (method 14), RFC 4754 (methods 9-11), RFC 7296 method 1
# ======================================================================================
#
# RFC 7427 sec. 3: the AUTH data of method 14 is
#
#                        1                   2                   3
#    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
#   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#   | ASN.1 Length  | AlgorithmIdentifier ASN.1 object              |
#   +-+-+-+-+-+-+-+-+                                               +
#   ~        AlgorithmIdentifier ASN.1 object continuing            ~
#   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#   ~                         Signature Value                       ~
#   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+


# RFC 8247 sec. 3.1 / NIST SP 800-131A: RSA keys below 2048 bits are refused.
MIN_RSA_BITS = 2048

# What we announce in SIGNATURE_HASH_ALGORITHMS (RFC 7427 sec. 4; RFC 8420 for identity).
SUPPORTED_SIGNATURE_HASHES: tuple[HashAlgorithm, ...] = (
    HashAlgorithm.SHA2_256,
    HashAlgorithm.SHA2_384,
    HashAlgorithm.SHA2_512,
    HashAlgorithm.IDENTITY,
)

PublicKey = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)
PrivateKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)
KeyType = Literal["rsa", "ecdsa", "ed25519", "ed448"]


def build_signature_hash_algorithms(hashes_: Iterable[int] = SUPPORTED_SIGNATURE_HASHES) -> bytes:
    """Notification data of SIGNATURE_HASH_ALGORITHMS: a list of 16-bit hash IDs."""
    return b"".join(int(h).to_bytes(2, "big") for h in hashes_)


def parse_signature_hash_algorithms(data: bytes) -> list[int]:
    """The hash IDs of a SIGNATURE_HASH_ALGORITHMS notify (unknown values kept as ints)."""
    if len(data) % 2:
        raise ProtocolError(
            f"SIGNATURE_HASH_ALGORITHMS data has odd length {len(data)} (RFC 7427 sec. 4)"
        )
    values: list[int] = []
    for offset in range(0, len(data), 2):
        value = int.from_bytes(data[offset : offset + 2], "big")
        try:
            values.append(HashAlgorithm(value))
        except ValueError:
            values.append(value)
    return values


# ---- minimal DER (only what AlgorithmIdentifier needs) ---------------------------------


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(content)) + content


def _oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return _tlv(0x06, bytes(body))


_NULL = b"\x05\x00"


class _DerError(Exception):
    pass


def _read_tlv(data: bytes, offset: int) -> tuple[int, bytes, int]:
    """(tag, content, next offset); strict: definite, minimal lengths within bounds."""
    if offset + 2 > len(data):
        raise _DerError("truncated")
    tag = data[offset]
    first = data[offset + 1]
    pos = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 3 or pos + count > len(data):
            raise _DerError("bad length")
        length = int.from_bytes(data[pos : pos + count], "big")
        if length < 0x80 or data[pos] == 0:
            raise _DerError("non-minimal length")
        pos += count
    if pos + length > len(data):
        raise _DerError("length beyond data")
    return tag, data[pos : pos + length], pos + length


def _read_single(data: bytes, expected_tag: int) -> bytes:
    tag, content, end = _read_tlv(data, 0)
    if tag != expected_tag or end != len(data):
        raise _DerError("unexpected element")
    return content


# OIDs (RFC 3279, RFC 4055, RFC 5758, RFC 8410, NIST hash OIDs).
_OID_RSA_PKCS1 = {
    HashAlgorithm.SHA1: _oid("1.2.840.113549.1.1.5"),
    HashAlgorithm.SHA2_256: _oid("1.2.840.113549.1.1.11"),
    HashAlgorithm.SHA2_384: _oid("1.2.840.113549.1.1.12"),
    HashAlgorithm.SHA2_512: _oid("1.2.840.113549.1.1.13"),
}
_OID_RSA_PSS = _oid("1.2.840.113549.1.1.10")
_OID_MGF1 = _oid("1.2.840.113549.1.1.8")
_OID_ECDSA = {
    HashAlgorithm.SHA1: _oid("1.2.840.10045.4.1"),
    HashAlgorithm.SHA2_256: _oid("1.2.840.10045.4.3.2"),
    HashAlgorithm.SHA2_384: _oid("1.2.840.10045.4.3.3"),
    HashAlgorithm.SHA2_512: _oid("1.2.840.10045.4.3.4"),
}
_OID_ED25519 = _oid("1.3.101.112")
_OID_ED448 = _oid("1.3.101.113")
_OID_HASH = {
    HashAlgorithm.SHA1: _oid("1.3.14.3.2.26"),
    HashAlgorithm.SHA2_256: _oid("2.16.840.1.101.3.4.2.1"),
    HashAlgorithm.SHA2_384: _oid("2.16.840.1.101.3.4.2.2"),
    HashAlgorithm.SHA2_512: _oid("2.16.840.1.101.3.4.2.3"),
}
_HASH_BY_OID = {oid: h for h, oid in _OID_HASH.items()}

_HASH_OBJECTS: dict[int, type[hashes.HashAlgorithm]] = {
    HashAlgorithm.SHA1: hashes.SHA1,
    HashAlgorithm.SHA2_256: hashes.SHA256,
    HashAlgorithm.SHA2_384: hashes.SHA384,
    HashAlgorithm.SHA2_512: hashes.SHA512,
}
_HASH_LEN = {
    HashAlgorithm.SHA1: 20,
    HashAlgorithm.SHA2_256: 32,
    HashAlgorithm.SHA2_384: 48,
    HashAlgorithm.SHA2_512: 64,
}


@dataclass(frozen=True)
class SignatureScheme:
    """One way of signing: key type, padding (RSA), and hash (IDENTITY for EdDSA)."""

    key_type: KeyType
    hash: HashAlgorithm
    rsa_padding: Literal["pkcs1", "pss"] | None = None

    @property
    def name(self) -> str:
        if self.key_type == "rsa":
            pad = "RSA-PSS" if self.rsa_padding == "pss" else "RSA PKCS#1 v1.5"
            return f"{pad} with {self.hash.name}"
        if self.key_type == "ecdsa":
            return f"ECDSA with {self.hash.name}"
        return "Ed25519" if self.key_type == "ed25519" else "Ed448"

    def algorithm_identifier(self) -> bytes:
        """The DER AlgorithmIdentifier RFC 7427 puts in front of the signature."""
        if self.key_type == "rsa" and self.rsa_padding == "pss":
            hash_alg = _tlv(0x30, _OID_HASH[self.hash] + _NULL)
            params = b"".join(
                (
                    _tlv(0xA0, hash_alg),
                    _tlv(0xA1, _tlv(0x30, _OID_MGF1 + hash_alg)),
                    _tlv(0xA2, _tlv(0x02, bytes([_HASH_LEN[self.hash]]))),
                )
            )
            return _tlv(0x30, _OID_RSA_PSS + _tlv(0x30, params))
        if self.key_type == "rsa":
            return _tlv(0x30, _OID_RSA_PKCS1[self.hash] + _NULL)
        if self.key_type == "ecdsa":
            return _tlv(0x30, _OID_ECDSA[self.hash])
        return _tlv(0x30, _OID_ED25519 if self.key_type == "ed25519" else _OID_ED448)


def _key_type(key: object) -> KeyType:
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return "rsa"
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return "ecdsa"
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return "ed25519"
    if isinstance(key, ed448.Ed448PublicKey | ed448.Ed448PrivateKey):
        return "ed448"
    raise AuthenticationError(f"unsupported key type {type(key).__name__}")


# RFC 4754: methods 9/10/11 fix curve and hash together.
_CLASSIC_ECDSA = {
    AuthMethod.ECDSA_SHA256_P256: ("secp256r1", HashAlgorithm.SHA2_256, 32),
    AuthMethod.ECDSA_SHA384_P384: ("secp384r1", HashAlgorithm.SHA2_384, 48),
    AuthMethod.ECDSA_SHA512_P521: ("secp521r1", HashAlgorithm.SHA2_512, 66),
}
_CURVE_HASH = {
    "secp256r1": HashAlgorithm.SHA2_256,
    "secp384r1": HashAlgorithm.SHA2_384,
    "secp521r1": HashAlgorithm.SHA2_512,
}


def _check_rsa_size(key: rsa.RSAPublicKey | rsa.RSAPrivateKey, whose: str) -> None:
    if key.key_size < MIN_RSA_BITS:
        raise AuthenticationError(
            f"{whose} RSA key has {key.key_size} bits; keys below {MIN_RSA_BITS} bits are "
            "refused (RFC 8247 sec. 3.1)"
        )


# ---- signers -------------------------------------------------------------------------


@runtime_checkable
class Signer(Protocol):
    """A private key the engine may ask for signatures, wherever the key lives.

    ``public_key()``: the matching public key (``cryptography`` object), from which the
    engine picks the AUTH method. ``sign(octets, scheme)``: the signature of ``octets``
    (the signer hashes, or its token does) in X.509 conventions: RSA the octet string of
    RFC 8017, ECDSA the DER ``Ecdsa-Sig-Value`` (RFC 3279), EdDSA the raw signature.
    ``sign`` raises :class:`SignerError` when the key cannot be used just now.
    ``description``: names the key for logs (``pkcs11:softhsm/slot 0/id 01``), no secret."""

    description: str

    def public_key(self) -> PublicKey: ...

    def sign(self, octets: bytes, scheme: SignatureScheme) -> bytes: ...


class InMemorySigner:
    """A ``cryptography`` private key held in this process (the behaviour before tokens)."""

    __slots__ = ("_key", "description")

    def __init__(self, key: PrivateKey, description: str = "in-memory key") -> None:
        self._key = key
        self.description = description

    def __repr__(self) -> str:
        return f"InMemorySigner({self.description!r})"  # never the key

    def public_key(self) -> PublicKey:
        return self._key.public_key()

    def sign(self, octets: bytes, scheme: SignatureScheme) -> bytes:
        return _sign_raw(self._key, scheme, octets)


def as_signer(key: PrivateKey | Signer) -> Signer:
    """``key`` itself when it is a Signer, else an :class:`InMemorySigner` around it."""
    if isinstance(
        key,
        rsa.RSAPrivateKey
        | ec.EllipticCurvePrivateKey
        | ed25519.Ed25519PrivateKey
        | ed448.Ed448PrivateKey,
    ):
        return InMemorySigner(key)
    if isinstance(key, Signer):
        return key
    raise AuthenticationError(f"unsupported private key type {type(key).__name__}")


def ecdsa_raw_to_der(raw: bytes) -> bytes:
    """r || s (fixed length, as PKCS#11 CKM_ECDSA and RFC 4754 write it) -> DER."""
    if not raw or len(raw) % 2:
        raise ValueError(f"raw ECDSA signature of odd length {len(raw)}")
    half = len(raw) // 2
    return encode_dss_signature(
        int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
    )


def ecdsa_der_to_raw(der: bytes, size: int) -> bytes:
    """DER Ecdsa-Sig-Value -> r || s, each ``size`` octets (RFC 4754 sec. 7)."""
    r, s = decode_dss_signature(der)
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def choose_signature_scheme(
    private_key: PrivateKey | Signer,
    peer_hashes: Sequence[int] | None,
    *,
    policy: AlgorithmPolicy = DEFAULT_POLICY,
    rsa_pss: bool = False,
) -> tuple[AuthMethod, SignatureScheme]:
    """Pick the AUTH method and scheme for our key (in memory or a :class:`Signer`).

    With the peer's SIGNATURE_HASH_ALGORITHMS (RFC 7427 sec. 4) we use method 14 and the
    first hash of our preference the peer supports: ECDSA the hash matching the curve
    first, RSA SHA-256 then SHA-384/512, EdDSA the identity hash (RFC 8420). Without the
    notify we fall back to the classic methods (RFC 4754 for ECDSA; RSA method 1, which
    means SHA-1 and needs ``sha1_signatures``).
    """
    public = as_signer(private_key).public_key()
    key_type = _key_type(public)
    if isinstance(public, rsa.RSAPublicKey):
        _check_rsa_size(public, "our")
    if peer_hashes is not None:
        offered = set(peer_hashes)
        if key_type in ("ed25519", "ed448"):
            preference: list[HashAlgorithm] = [HashAlgorithm.IDENTITY]
        elif key_type == "ecdsa":
            assert isinstance(public, ec.EllipticCurvePublicKey)
            first = _CURVE_HASH.get(public.curve.name, HashAlgorithm.SHA2_256)
            preference = [first] + [
                h
                for h in (HashAlgorithm.SHA2_256, HashAlgorithm.SHA2_384, HashAlgorithm.SHA2_512)
                if h != first
            ]
        else:
            preference = [HashAlgorithm.SHA2_256, HashAlgorithm.SHA2_384, HashAlgorithm.SHA2_512]
        if "sha1_signatures" in policy.allow_weak and key_type in ("rsa", "ecdsa"):
            preference.append(HashAlgorithm.SHA1)
        for candidate in preference:
            if candidate in offered and policy.signature_hash_allowed(candidate):
                padding_kind: Literal["pkcs1", "pss"] | None = None
                if key_type == "rsa":
                    padding_kind = "pss" if rsa_pss else "pkcs1"
                return AuthMethod.DIGITAL_SIGNATURE, SignatureScheme(
                    key_type, candidate, padding_kind
                )
    # No usable RFC 7427 hash: classic methods.
    if key_type == "ecdsa":
        assert isinstance(public, ec.EllipticCurvePublicKey)
        for method, (curve, hash_id, _) in _CLASSIC_ECDSA.items():
            if public.curve.name == curve:
                return method, SignatureScheme("ecdsa", hash_id)
    if key_type == "rsa" and policy.auth_method_allowed(AuthMethod.RSA_DIGITAL_SIGNATURE):
        return AuthMethod.RSA_DIGITAL_SIGNATURE, SignatureScheme("rsa", HashAlgorithm.SHA1, "pkcs1")
    offered_names = ", ".join(_hash_name(h) for h in peer_hashes or []) or "none"
    raise AuthenticationError(
        f"no signature scheme for our {key_type} key that the peer accepts (peer's "
        f"SIGNATURE_HASH_ALGORITHMS: {offered_names})"
        + (
            "; " + policy.signature_refusal("RSA signature method 1 (SHA-1)")
            if key_type == "rsa"
            else ""
        )
    )


def _hash_name(value: int) -> str:
    try:
        return HashAlgorithm(value).name
    except ValueError:
        return str(value)


def pss_salt_length(scheme: SignatureScheme) -> int:
    """The RSA-PSS salt we sign with: the hash length (RFC 7427 sec. 3 examples, RFC 8017),
    the value written in our AlgorithmIdentifier; token backends pass it explicitly."""
    return _HASH_LEN[scheme.hash]


def _sign_raw(private_key: PrivateKey, scheme: SignatureScheme, octets: bytes) -> bytes:
    if isinstance(private_key, rsa.RSAPrivateKey):
        hash_obj = _HASH_OBJECTS[scheme.hash]()
        if scheme.rsa_padding == "pss":
            pad: padding.AsymmetricPadding = padding.PSS(
                mgf=padding.MGF1(_HASH_OBJECTS[scheme.hash]()),
                salt_length=pss_salt_length(scheme),
            )
        else:
            pad = padding.PKCS1v15()
        return private_key.sign(octets, pad, hash_obj)
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return private_key.sign(octets, ec.ECDSA(_HASH_OBJECTS[scheme.hash]()))
    return private_key.sign(octets)  # EdDSA signs the message itself (RFC 8420)


def sign_auth(
    private_key: PrivateKey | Signer, octets: bytes, method: AuthMethod, scheme: SignatureScheme
) -> bytes:
    """AUTH payload data for ``method`` (from :func:`choose_signature_scheme`).

    A :class:`Signer` that fails raises :class:`SignerError`; any other exception of a
    token library is turned into one here, so a token's trouble never escapes as a bug."""
    signer = as_signer(private_key)
    try:
        signature = signer.sign(octets, scheme)
    except SignerError:
        raise
    except Exception as error:  # a token library's own exception types
        raise SignerError(
            f"our key {signer.description} could not sign: {type(error).__name__}: {error}"
        ) from None
    if method == AuthMethod.DIGITAL_SIGNATURE:
        identifier = scheme.algorithm_identifier()
        return bytes([len(identifier)]) + identifier + signature
    if method in _CLASSIC_ECDSA:
        # RFC 4754 sec. 7: r and s as fixed-length big-endian integers, concatenated.
        return ecdsa_der_to_raw(signature, _CLASSIC_ECDSA[AuthMethod(method)][2])
    if method == AuthMethod.RSA_DIGITAL_SIGNATURE:
        return signature
    raise AuthenticationError(f"cannot sign with AUTH method {method}")


def _parse_algorithm_identifier(identifier: bytes) -> SignatureScheme:
    """Map the peer's AlgorithmIdentifier to a scheme; raises _DerError / AuthenticationError."""
    content = _read_single(identifier, 0x30)
    tag, oid_content, pos = _read_tlv(content, 0)
    if tag != 0x06:
        raise _DerError("no OID")
    oid = _tlv(0x06, oid_content)
    params = content[pos:]
    for hash_id, known in _OID_RSA_PKCS1.items():
        if oid == known:
            if params not in (b"", _NULL):
                raise _DerError("RSA PKCS#1 parameters must be NULL")
            return SignatureScheme("rsa", hash_id, "pkcs1")
    for hash_id, known in _OID_ECDSA.items():
        if oid == known:
            if params:
                raise _DerError("ECDSA parameters must be absent")
            return SignatureScheme("ecdsa", hash_id)
    if oid in (_OID_ED25519, _OID_ED448):
        if params:
            raise _DerError("EdDSA parameters must be absent")
        return SignatureScheme(
            "ed25519" if oid == _OID_ED25519 else "ed448", HashAlgorithm.IDENTITY
        )
    if oid == _OID_RSA_PSS:
        return _parse_pss_params(params)
    raise AuthenticationError(f"unsupported signature algorithm OID {oid_content.hex()}")


def _parse_hash_identifier(data: bytes) -> HashAlgorithm:
    content = _read_single(data, 0x30)
    tag, oid_content, pos = _read_tlv(content, 0)
    if tag != 0x06 or content[pos:] not in (b"", _NULL):
        raise _DerError("bad hash AlgorithmIdentifier")
    hash_id = _HASH_BY_OID.get(_tlv(0x06, oid_content))
    if hash_id is None:
        raise AuthenticationError(f"unsupported RSA-PSS hash OID {oid_content.hex()}")
    return hash_id


def _parse_pss_params(params: bytes) -> SignatureScheme:
    """RFC 4055 sec. 3.1 RSASSA-PSS-params. Every field must be explicit: the defaults
    are SHA-1, and missing MGF1 parameters crashed strongSwan (CVE-2018-6459)."""
    if not params:
        raise AuthenticationError(
            "RSA-PSS AlgorithmIdentifier without parameters (defaults mean SHA-1) refused"
        )
    content = _read_single(params, 0x30)
    fields: dict[int, bytes] = {}
    pos = 0
    while pos < len(content):
        tag, value, pos = _read_tlv(content, pos)
        if tag not in (0xA0, 0xA1, 0xA2, 0xA3) or tag in fields:
            raise _DerError("unexpected RSA-PSS parameter")
        fields[tag] = value
    if 0xA0 not in fields:
        raise AuthenticationError("RSA-PSS parameters without hashAlgorithm (SHA-1) refused")
    hash_id = _parse_hash_identifier(fields[0xA0])
    if 0xA1 not in fields:
        raise AuthenticationError("RSA-PSS parameters without maskGenAlgorithm refused")
    mgf = _read_single(fields[0xA1], 0x30)
    tag, mgf_oid, pos = _read_tlv(mgf, 0)
    if tag != 0x06 or _tlv(0x06, mgf_oid) != _OID_MGF1:
        raise AuthenticationError("RSA-PSS mask generation function is not MGF1")
    if pos == len(mgf):
        raise AuthenticationError("RSA-PSS MGF1 without hash parameters refused (CVE-2018-6459)")
    mgf_hash = _parse_hash_identifier(mgf[pos:])
    if mgf_hash != hash_id:
        raise AuthenticationError(
            f"RSA-PSS MGF1 hash {mgf_hash.name} differs from the signature hash {hash_id.name}"
        )
    if 0xA2 not in fields:
        raise AuthenticationError("RSA-PSS parameters without saltLength refused")
    salt_bytes = _read_single(fields[0xA2], 0x02)
    if not salt_bytes or salt_bytes[0] & 0x80 or len(salt_bytes) > 4:
        raise AuthenticationError("RSA-PSS saltLength is not a small non-negative INTEGER")
    salt = int.from_bytes(salt_bytes, "big")
    if salt > _HASH_LEN[hash_id]:
        raise AuthenticationError(
            f"RSA-PSS salt length {salt} is longer than the {hash_id.name} output "
            f"({_HASH_LEN[hash_id]} octets); refused (CVE-2021-41990)"
        )
    if 0xA3 in fields and _read_single(fields[0xA3], 0x02) != b"\x01":
        raise AuthenticationError("RSA-PSS trailerField must be 1 (0xBC)")
    return _PssScheme("rsa", hash_id, "pss", salt)


@dataclass(frozen=True)
class _PssScheme(SignatureScheme):
    salt_length: int = 0


def verify_signature_auth(
    public_key: PublicKey,
    method: int,
    auth_data: bytes,
    octets: bytes,
    *,
    policy: AlgorithmPolicy = DEFAULT_POLICY,
    peer_id: str = "?",
) -> SignatureScheme:
    """Verify the peer's signature AUTH payload against the key from its certificate.

    Every failure raises AuthenticationError naming the check (never returns False).
    Returns the scheme used (for the log).
    """
    auth_data = bytes(auth_data)
    key_type = _key_type(public_key)
    if isinstance(public_key, rsa.RSAPublicKey):
        _check_rsa_size(public_key, f"peer's ({peer_id})")

    if method == AuthMethod.DIGITAL_SIGNATURE:
        if not auth_data:
            raise AuthenticationError("empty RFC 7427 AUTH data")
        id_len = auth_data[0]
        identifier, signature = auth_data[1 : 1 + id_len], auth_data[1 + id_len :]
        if len(identifier) != id_len:
            raise AuthenticationError("RFC 7427 AUTH data shorter than its ASN.1 length")
        try:
            scheme = _parse_algorithm_identifier(identifier)
        except _DerError as error:
            raise AuthenticationError(
                f"malformed AlgorithmIdentifier in RFC 7427 AUTH data ({error})"
            ) from None
        if scheme.key_type != key_type:
            raise AuthenticationError(
                f"AUTH uses {scheme.name} but the peer's ({peer_id}) certificate has a "
                f"{key_type} key"
            )
        if not policy.signature_hash_allowed(scheme.hash):
            raise AuthenticationError(policy.signature_refusal(f"{scheme.name} from {peer_id}"))
    elif method in _CLASSIC_ECDSA:
        curve, hash_id, size = _CLASSIC_ECDSA[AuthMethod(method)]
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise AuthenticationError(
                f"AUTH method {AuthMethod(method).name} but the peer's ({peer_id}) "
                f"certificate has a {key_type} key"
            )
        if public_key.curve.name != curve:
            raise AuthenticationError(
                f"AUTH method {AuthMethod(method).name} needs a {curve} key; the peer's "
                f"({peer_id}) key is on {public_key.curve.name}"
            )
        if len(auth_data) != 2 * size:
            raise AuthenticationError(
                f"ECDSA signature of {len(auth_data)} octets, RFC 4754 needs {2 * size}"
            )
        r = int.from_bytes(auth_data[:size], "big")
        s = int.from_bytes(auth_data[size:], "big")
        scheme = SignatureScheme("ecdsa", hash_id)
        signature = encode_dss_signature(r, s)
    elif method == AuthMethod.RSA_DIGITAL_SIGNATURE:
        if key_type != "rsa":
            raise AuthenticationError(
                f"AUTH method RSA_DIGITAL_SIGNATURE but the peer's ({peer_id}) certificate "
                f"has a {key_type} key"
            )
        if not policy.auth_method_allowed(method):
            raise AuthenticationError(
                policy.signature_refusal(f"RSA signature method 1 (SHA-1) from {peer_id}")
            )
        scheme = SignatureScheme("rsa", HashAlgorithm.SHA1, "pkcs1")
        signature = auth_data
    else:
        raise AuthenticationError(f"AUTH method {method} is not a signature method we support")

    _verify_raw(public_key, scheme, signature, octets, peer_id)
    return scheme


def _verify_raw(
    public_key: PublicKey,
    scheme: SignatureScheme,
    signature: bytes,
    octets: bytes,
    peer_id: str,
) -> None:
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            modulus = public_key.public_numbers().n
            k = (modulus.bit_length() + 7) // 8
            if len(signature) != k:
                raise AuthenticationError(
                    f"RSA signature is {len(signature)} octets, the key needs {k}"
                )
            # RFC 8017 sec. 5.2.2 RSAVP1 step 1; strongSwan CVE-2017-11185.
            if int.from_bytes(signature, "big") >= modulus:
                raise AuthenticationError("RSA signature representative is not below modulus n")
            hash_obj = _HASH_OBJECTS[scheme.hash]()
            if scheme.rsa_padding == "pss":
                salt = scheme.salt_length if isinstance(scheme, _PssScheme) else 0
                pad: padding.AsymmetricPadding = padding.PSS(
                    mgf=padding.MGF1(_HASH_OBJECTS[scheme.hash]()), salt_length=salt
                )
            else:
                pad = padding.PKCS1v15()
            public_key.verify(signature, octets, pad, hash_obj)
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, octets, ec.ECDSA(_HASH_OBJECTS[scheme.hash]()))
        else:
            public_key.verify(signature, octets)
    except InvalidSignature:
        raise AuthenticationError(
            f"{scheme.name} signature in AUTH does not verify with the public key of {peer_id}"
        ) from None
    except ValueError as error:  # e.g. DER signature that is not an Ecdsa-Sig-Value
        raise AuthenticationError(f"{scheme.name} signature is malformed ({error})") from None
