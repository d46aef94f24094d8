"""Private keys that never leave a token: PKCS#11 modules and TPM 2.0.

Each backend gives an ``ikev2.crypto.auth.Signer``: the engine asks it for the public key
and for signatures, the key itself stays in the token (used by its handle, never read
out). ``pkcs11`` talks to a PKCS#11 module (SoftHSM2, smart cards, HSMs, the TPM's own
PKCS#11 module) through python-pkcs11; ``tpm`` talks to a TPM 2.0 through tpm2-pytss.

Opening a key is configuration-time I/O (the daemon does it at start and reload); a
failure there is a :class:`TokenError` with what went wrong and what to do. PINs are
never logged, never part of a message or a ``repr``.
"""

from __future__ import annotations

import hashlib

from ikev2.crypto.auth import PublicKey, SignatureScheme, SignerError
from ikev2.enums import HashAlgorithm

__all__ = ["TokenError", "TokenSigner", "describe_key", "digest"]

_DIGESTS = {
    HashAlgorithm.SHA1: hashlib.sha1,
    HashAlgorithm.SHA2_256: hashlib.sha256,
    HashAlgorithm.SHA2_384: hashlib.sha384,
    HashAlgorithm.SHA2_512: hashlib.sha512,
}


def describe_key(public: object) -> str:
    """``RSA-3072``, ``ECDSA P-256``: a key's type and size for listings and messages."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(public, rsa.RSAPublicKey):
        return f"RSA-{public.key_size}"
    if isinstance(public, ec.EllipticCurvePublicKey):
        names = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
        return f"ECDSA {names.get(public.curve.name, public.curve.name)}"
    return "unknown key type" if public is None else type(public).__name__


def digest(scheme: SignatureScheme, octets: bytes) -> bytes:
    """The hash of ``octets`` that ``scheme`` signs, for tokens that sign a digest."""
    return _DIGESTS[scheme.hash](octets).digest()


class TokenError(Exception):
    """A token key cannot be used: ``reason`` says why, ``hint`` what to do. Never holds
    a PIN."""

    def __init__(self, reason: str, hint: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.reason} ({self.hint})" if self.hint else self.reason


class TokenSigner:
    """What the token backends share: a signature that fails because the token went away
    drops the connection and raises ``SignerError`` (this AUTH fails, established SAs are
    not touched); the next signature opens the token again.

    Subclasses set ``description``, ``_errors`` (their library's exception types) and
    ``_public``, and implement ``_reopen``, ``_sign`` and ``close``."""

    description: str
    _errors: tuple[type[Exception], ...] = ()
    _public: PublicKey | None = None
    _connected = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.description!r})"  # never a PIN

    def public_key(self) -> PublicKey:
        assert self._public is not None
        return self._public

    def sign(self, octets: bytes, scheme: SignatureScheme) -> bytes:
        if not self._connected:
            try:
                self._reopen()
            except TokenError as error:
                raise SignerError(f"our key {self.description} is not available: {error}") from None
        try:
            return self._sign(octets, scheme)
        except self._errors as error:
            self.close()
            raise SignerError(
                f"our key {self.description} could not sign ({type(error).__name__}: {error}): "
                "token removed or unreachable? Established SAs are not affected; the next "
                "attempt opens the token again"
            ) from None

    def _reopen(self) -> None:
        raise NotImplementedError

    def _sign(self, octets: bytes, scheme: SignatureScheme) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError
