"""Keys in a PKCS#11 token (SoftHSM2, smart cards, HSMs) as IKE AUTH signers.

The key is found by its CKA_ID (swanctl's ``handle``) in the slot with the given slot ID
(``slot``; strongSwan's numbering: the CK_SLOT_ID the module reports) and used by its
object handle: ``C_Sign`` runs inside the token, the private key is never read. The
public key comes from the token's public key object with the same CKA_ID, or from its
certificate object, or from the certificate file configured for the connection.

Mechanisms are always given explicitly (python-pkcs11's defaults are not ours):

=========================  =====================================================
RSA PKCS#1 v1.5            CKM_SHA256/384/512_RSA_PKCS (CKM_SHA1_RSA_PKCS for
                           method 1): the token hashes and builds the DigestInfo
RSA-PSS                    CKM_SHA256/384/512_RSA_PKCS_PSS with hashAlg, MGF1
                           of the same hash, salt = hash length (RFC 7427 sec. 3)
ECDSA P-256/P-384/P-521    CKM_ECDSA over the digest we compute (PKCS#11 sec.
                           2.3.6; every token has it, the hashing variants are
                           optional); r || s from the token becomes DER here
=========================  =====================================================

The PIN: a wrong PIN (CKR_PIN_INCORRECT) is remembered for this module, slot and PIN,
and never tried again in this process: tokens lock after a few wrong PINs, and a daemon
that retried at every IKE_AUTH would lock its own token. A changed PIN in the
configuration (reload) is tried once.

A token that goes away while running (CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT, a
closed session) makes that signature fail with ``SignerError``; the next signature
re-initialises the module, finds the slot again and logs in again.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from aioipsec.tokens import TokenError, TokenSigner, describe_key, digest
from ikev2.crypto.auth import (
    PublicKey,
    SignatureScheme,
    SignerError,
    ecdsa_raw_to_der,
    pss_salt_length,
)
from ikev2.enums import HashAlgorithm

__all__ = [
    "Pkcs11KeySpec",
    "Pkcs11Signer",
    "TokenListing",
    "list_module",
    "load_module",
    "reset_modules",
]

_HAVE_PKCS11 = True
try:  # python-pkcs11 is an optional dependency (extra "tokens")
    import pkcs11
    from pkcs11 import Attribute, Mechanism, ObjectClass, TokenFlag
    from pkcs11 import exceptions as p11e
    from pkcs11.constants import CertificateType
    from pkcs11.mechanisms import MGF, KeyType
except ImportError:  # pragma: no cover - reported by load_module
    _HAVE_PKCS11 = False


# Modules stay loaded (dlopen once, C_Initialize once per process and path).
_MODULES: dict[str, Any] = {}
_LOCK = threading.Lock()
# (module path, slot, sha256(pin)): PINs the token refused. Never tried again.
_REFUSED_PINS: set[tuple[str, int | None, bytes]] = set()


def load_module(path: str) -> Any:
    """The loaded, initialised PKCS#11 module at ``path`` (cached)."""
    if not _HAVE_PKCS11:
        raise TokenError(
            "python-pkcs11 is not installed",
            "install aioipsec with the tokens extra: pip install 'aioipsec[tokens]'",
        )
    with _LOCK:
        module = _MODULES.get(path)
        if module is None:
            if not Path(path).exists():
                raise TokenError(
                    f"PKCS#11 module {path} does not exist",
                    "install it (Debian: softhsm2, opensc-pkcs11, libtpm2-pkcs11-1) or fix "
                    "[pkcs11.modules.NAME] path",
                )
            try:
                module = pkcs11.lib(path)
            except p11e.PKCS11Error as error:
                raise TokenError(
                    f"PKCS#11 module {path} does not load: {error}",
                    "check that it is a PKCS#11 module for this architecture",
                ) from None
            _MODULES[path] = module
        return module


def reset_modules() -> None:
    """Finalize every loaded module (C_Finalize): the next use initialises it again and
    re-reads its configuration (SoftHSM: SOFTHSM2_CONF). Tests use it between tokens."""
    with _LOCK:
        for module in _MODULES.values():
            try:
                module.finalize()
            except p11e.PKCS11Error:
                pass
        _MODULES.clear()


@dataclass(frozen=True)
class Pkcs11KeySpec:
    """Where a key is: module (name and path), slot ID (None: the only slot with a
    token), CKA_ID; and the PIN (never printed)."""

    module_name: str
    module_path: str
    key_id: bytes
    slot: int | None = None
    pin: str | None = field(default=None, repr=False)

    @property
    def description(self) -> str:
        slot = "any slot" if self.slot is None else f"slot {self.slot}"
        return f"pkcs11:{self.module_name}/{slot}/id {self.key_id.hex()}"

    def _pin_key(self) -> tuple[str, int | None, bytes]:
        return (self.module_path, self.slot, hashlib.sha256((self.pin or "").encode()).digest())


def _initialised_slots(module: Any) -> list[Any]:
    """Slots holding an initialised token (SoftHSM always offers one more, empty one)."""
    slots = []
    for slot in module.get_slots(token_present=True):
        if slot.get_token().flags & TokenFlag.TOKEN_INITIALIZED:
            slots.append(slot)
    return slots


def _find_slot(module: Any, spec: Pkcs11KeySpec) -> Any:
    slots = _initialised_slots(module)
    if spec.slot is None:
        if len(slots) != 1:
            present = ", ".join(str(s.slot_id) for s in slots) or "none"
            raise TokenError(
                f"{spec.description}: {len(slots)} slots have a token (slot IDs: {present})",
                "name one with slot = ID (aioipsec token list --module NAME shows them)",
            )
        return slots[0]
    for slot in slots:
        if slot.slot_id == spec.slot:
            return slot
    present = ", ".join(str(s.slot_id) for s in slots) or "none"
    raise TokenError(
        f"{spec.description}: no token in slot {spec.slot} (slots with a token: {present})",
        "insert the token, or fix slot = (aioipsec token list --module NAME)",
    )


def _login(slot: Any, spec: Pkcs11KeySpec) -> Any:
    if spec._pin_key() in _REFUSED_PINS:
        raise TokenError(
            f"{spec.description}: the token refused this PIN before; not tried again "
            "(each wrong PIN brings the token closer to locking)",
            "fix the pin of the token secret and reload",
        )
    token = slot.get_token()
    try:
        return token.open(user_pin=spec.pin) if spec.pin else token.open()
    except p11e.UserAlreadyLoggedIn:
        # PKCS#11 login state belongs to the application, not the session (sec. 5.6):
        # another key of ours on this token logged in already; this session shares it.
        return token.open()
    except p11e.PinIncorrect:
        _REFUSED_PINS.add(spec._pin_key())
        raise TokenError(
            f"{spec.description}: the token refused the PIN (CKR_PIN_INCORRECT); it will "
            "not be tried again, tokens lock after a few wrong PINs",
            "fix the pin of the token secret (secrets.token-NAME.pin), then reload",
        ) from None
    except p11e.PinLocked:
        raise TokenError(
            f"{spec.description}: the token's user PIN is locked (CKR_PIN_LOCKED)",
            "unlock it with the SO PIN (softhsm2-util / the token's tool)",
        ) from None
    except (p11e.PinLenRange, p11e.PinInvalid) as error:
        raise TokenError(
            f"{spec.description}: the PIN is not acceptable to the token ({type(error).__name__})",
            "fix the pin of the token secret",
        ) from None


def _public_from_object(obj: Any) -> PublicKey | None:
    """A cryptography public key from a PKCS#11 public key or RSA private key object."""
    key_type = obj[Attribute.KEY_TYPE]
    if key_type == KeyType.RSA:
        modulus = int.from_bytes(obj[Attribute.MODULUS], "big")
        exponent = int.from_bytes(obj[Attribute.PUBLIC_EXPONENT], "big")
        return rsa.RSAPublicNumbers(exponent, modulus).public_key()
    if key_type == KeyType.EC:
        params = obj[Attribute.EC_PARAMS]
        point = obj[Attribute.EC_POINT]
        # CKA_EC_POINT is the DER OCTET STRING around the X9.62 point (PKCS#11 2.40).
        if point and point[0] == 0x04 and len(point) > 2:
            length = point[1]
            offset = 2
            if length & 0x80:
                offset = 2 + (length & 0x7F)
            if offset + (int.from_bytes(point[2:offset], "big") if length & 0x80 else length) == (
                len(point)
            ):
                point = point[offset:]
        curve = _CURVES_BY_PARAMS.get(bytes(params))
        if curve is None:
            return None
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, bytes(point))
    return None


# DER of the namedCurve OIDs in CKA_EC_PARAMS.
_CURVES_BY_PARAMS: dict[bytes, ec.EllipticCurve] = {
    bytes.fromhex("06082a8648ce3d030107"): ec.SECP256R1(),
    bytes.fromhex("06052b81040022"): ec.SECP384R1(),
    bytes.fromhex("06052b81040023"): ec.SECP521R1(),
}


def _objects(session: Any, object_class: Any, key_id: bytes | None = None) -> Iterator[Any]:
    attrs: dict[Any, Any] = {Attribute.CLASS: object_class}
    if key_id is not None:
        attrs[Attribute.ID] = key_id
    return iter(session.get_objects(attrs))


class Pkcs11Signer(TokenSigner):
    """An IKE AUTH signer whose key stays in a PKCS#11 token (``ikev2.crypto.auth.Signer``).

    Opening logs in (a wrong PIN raises :class:`TokenError` now, at start); the session
    stays open for the signatures."""

    def __init__(self, spec: Pkcs11KeySpec) -> None:
        self.spec = spec
        self.description = spec.description
        self._errors = (p11e.PKCS11Error,)
        self._session: Any = None
        self._key: Any = None
        self._certificate: x509.Certificate | None = None
        self._open()

    # ---- session -------------------------------------------------------------------

    def _open(self) -> None:
        module = load_module(self.spec.module_path)
        slot = _find_slot(module, self.spec)
        session = _login(slot, self.spec)
        try:
            keys = list(_objects(session, ObjectClass.PRIVATE_KEY, self.spec.key_id))
            if len(keys) != 1:
                raise TokenError(
                    f"{self.description}: {len(keys)} private keys with this CKA_ID"
                    + (" (is the PIN right? private objects need a login)" if not keys else ""),
                    "aioipsec token list --module NAME shows the keys and their IDs",
                )
            key = keys[0]
            public = None
            for candidate in _objects(session, ObjectClass.PUBLIC_KEY, self.spec.key_id):
                public = _public_from_object(candidate)
                break
            if public is None and key[Attribute.KEY_TYPE] == KeyType.RSA:
                public = _public_from_object(key)
            certificate = self._read_certificate(session)
            if public is None and certificate is not None:
                cert_key = certificate.public_key()
                if isinstance(cert_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
                    public = cert_key
            if public is None:
                raise TokenError(
                    f"{self.description}: no public key or certificate with this CKA_ID "
                    "next to the private key",
                    "store the public key or the certificate on the token with the same ID",
                )
        except BaseException:
            session.close()
            raise
        if self._public is not None and _spki(self._public) != _spki(public):
            session.close()
            raise TokenError(f"{self.description}: the token now holds a different key")
        self._session, self._key, self._public = session, key, public
        self._connected = True
        self._certificate = certificate

    def _read_certificate(self, session: Any) -> x509.Certificate | None:
        for obj in _objects(session, ObjectClass.CERTIFICATE, self.spec.key_id):
            if obj[Attribute.CERTIFICATE_TYPE] != CertificateType.X_509:
                continue
            try:
                return x509.load_der_x509_certificate(bytes(obj[Attribute.VALUE]))
            except ValueError:
                continue
        return None

    def close(self) -> None:
        session, self._session, self._key = self._session, None, None
        self._connected = False
        if session is not None:
            try:
                session.close()
            except p11e.PKCS11Error:
                pass

    # ---- Signer --------------------------------------------------------------------

    @property
    def key_description(self) -> str:
        """``RSA-3072``, ``ECDSA P-256``: for messages naming both key and certificate."""
        return describe_key(self._public)

    def certificate(self) -> x509.Certificate | None:
        """The X.509 certificate stored on the token under the key's CKA_ID, if any."""
        return self._certificate

    def _reopen(self) -> None:
        try:
            # C_Finalize/C_Initialize: modules cache their slot list at initialisation.
            load_module(self.spec.module_path).reinitialize()
            self._open()
        except p11e.PKCS11Error as error:
            raise TokenError(
                f"{type(error).__name__}: token removed or module unreachable?"
            ) from None

    def _sign(self, octets: bytes, scheme: SignatureScheme) -> bytes:
        key = self._key
        if scheme.key_type == "ecdsa":
            digest_ = digest(scheme, octets)
            raw = key.sign(digest_, mechanism=Mechanism.ECDSA)
            return ecdsa_raw_to_der(bytes(raw))
        if scheme.key_type != "rsa":
            raise SignerError(f"{self.description}: cannot sign {scheme.name}")
        if scheme.rsa_padding == "pss":
            mechanism, digest_mech, mgf = _PSS[scheme.hash]
            return bytes(
                key.sign(
                    octets,
                    mechanism=mechanism,
                    mechanism_param=(digest_mech, mgf, pss_salt_length(scheme)),
                )
            )
        return bytes(key.sign(octets, mechanism=_PKCS1[scheme.hash]))


def _spki(public: PublicKey) -> bytes:
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


if _HAVE_PKCS11:
    _PKCS1 = {
        HashAlgorithm.SHA1: Mechanism.SHA1_RSA_PKCS,
        HashAlgorithm.SHA2_256: Mechanism.SHA256_RSA_PKCS,
        HashAlgorithm.SHA2_384: Mechanism.SHA384_RSA_PKCS,
        HashAlgorithm.SHA2_512: Mechanism.SHA512_RSA_PKCS,
    }
    _PSS = {
        HashAlgorithm.SHA2_256: (Mechanism.SHA256_RSA_PKCS_PSS, Mechanism.SHA256, MGF.SHA256),
        HashAlgorithm.SHA2_384: (Mechanism.SHA384_RSA_PKCS_PSS, Mechanism.SHA384, MGF.SHA384),
        HashAlgorithm.SHA2_512: (Mechanism.SHA512_RSA_PKCS_PSS, Mechanism.SHA512, MGF.SHA512),
    }


# ---- listing (aioipsec token list) ---------------------------------------------------


def _key_entry(obj: Any, kind: str, public: PublicKey | None) -> dict[str, str]:
    if public is None and kind == "private" and obj[Attribute.KEY_TYPE] == KeyType.RSA:
        public = _public_from_object(obj)
    return {
        "id": bytes(obj[Attribute.ID] or b"").hex(),
        "label": str(obj[Attribute.LABEL] or ""),
        "class": kind,
        "type": describe_key(public),
    }


@dataclass
class TokenListing:
    """One slot with a token: what ``aioipsec token list`` prints (no secrets)."""

    slot_id: int
    label: str
    manufacturer: str
    model: str
    logged_in: bool
    keys: list[dict[str, str]] = field(default_factory=list)
    certificates: list[dict[str, str]] = field(default_factory=list)


def list_module(path: str, pin: str | None = None) -> list[TokenListing]:
    """Slots, keys (type, size, CKA_ID) and certificates of a module. Without a PIN only
    public objects show (private keys need a login on most tokens)."""
    module = load_module(path)
    result: list[TokenListing] = []
    for slot in _initialised_slots(module):
        token = slot.get_token()
        entry = TokenListing(
            slot_id=int(slot.slot_id),
            label=token.label,
            manufacturer=token.manufacturer_id,
            model=token.model,
            logged_in=bool(pin),
        )
        spec = Pkcs11KeySpec("listing", path, b"", int(slot.slot_id), pin)
        session = _login(slot, spec) if pin else token.open()
        with session:
            publics: dict[bytes, PublicKey | None] = {}
            for obj in _objects(session, ObjectClass.PUBLIC_KEY):
                publics[bytes(obj[Attribute.ID] or b"")] = _public_from_object(obj)
            private_ids: set[bytes] = set()
            for obj in _objects(session, ObjectClass.PRIVATE_KEY):
                key_id = bytes(obj[Attribute.ID] or b"")
                private_ids.add(key_id)
                entry.keys.append(_key_entry(obj, "private", publics.get(key_id)))
            for obj in _objects(session, ObjectClass.PUBLIC_KEY):
                key_id = bytes(obj[Attribute.ID] or b"")
                if key_id not in private_ids:
                    entry.keys.append(_key_entry(obj, "public", publics.get(key_id)))
            for obj in _objects(session, ObjectClass.CERTIFICATE):
                subject = ""
                try:
                    cert = x509.load_der_x509_certificate(bytes(obj[Attribute.VALUE]))
                    subject = cert.subject.rfc4514_string()
                except ValueError:
                    subject = "(not an X.509 certificate)"
                entry.certificates.append(
                    {"id": bytes(obj[Attribute.ID] or b"").hex(), "subject": subject}
                )
        result.append(entry)
    return result
