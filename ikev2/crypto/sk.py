"""SK payload protection: RFC 7296 sec. 3.14 (encrypt-then-MAC), RFC 5282 (AES-GCM and
AES-CCM in IKEv2), RFC 7634 (ChaCha20-Poly1305 in IKEv2).

One :class:`SkCipher` per direction, built once per IKE SA with :func:`make_sk_cipher`::

    cipher_i = make_sk_cipher(EncrId.ENCR_AES_GCM_16, 256, None, keys.sk_ei, None)
    body = cipher_i.seal(aad, inner_payloads)      # IV || ciphertext || ICV
    inner = cipher_i.open(aad, body)                # checks ICV, strips padding

``aad`` is the IKE message from its first octet through the SK (or SKF) payload header,
with final length fields. AEAD: that is the associated data (RFC 5282 sec. 5.1); the
8-octet explicit IV goes on the wire and the nonce is salt || IV. Encrypt-then-MAC: the
ICV is the truncated HMAC over ``aad || IV || ciphertext`` (sec. 3.14).

Key material: ``sk_e`` includes the salt at its end for AEAD (RFC 5282 sec. 7.1: 4 octets
for GCM, 3 for CCM; RFC 7634 sec. 2: 4 octets for ChaCha20-Poly1305).
:func:`sk_key_lengths` says how long SK_e and SK_a are (sec. 2.14 key derivation input).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable
from functools import partial

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305

from ikev2.enums import EncrId, IntegId, NotifyType
from ikev2.errors import IntegrityError, ProtocolError

AEAD_IV_SIZE = 8  # RFC 5282 sec. 3, RFC 7634 sec. 2: explicit 8-octet IV on the wire

# AEAD ciphers: (ICV octets, salt octets); the key length comes from the Key Length attribute
_AEAD = {
    EncrId.ENCR_AES_GCM_8: (8, 4),
    EncrId.ENCR_AES_GCM_12: (12, 4),
    EncrId.ENCR_AES_GCM_16: (16, 4),
    EncrId.ENCR_AES_CCM_8: (8, 3),
    EncrId.ENCR_AES_CCM_12: (12, 3),
    EncrId.ENCR_AES_CCM_16: (16, 3),
    EncrId.ENCR_CHACHA20_POLY1305: (16, 4),
}
_GCM = {EncrId.ENCR_AES_GCM_8, EncrId.ENCR_AES_GCM_12, EncrId.ENCR_AES_GCM_16}
_CCM = {EncrId.ENCR_AES_CCM_8, EncrId.ENCR_AES_CCM_12, EncrId.ENCR_AES_CCM_16}

# Integrity algorithms: (hash, key octets, ICV octets) -- RFC 2404 (SHA-1-96), RFC 4868.
_INTEG = {
    IntegId.AUTH_HMAC_SHA1_96: (hashlib.sha1, 20, 12),
    IntegId.AUTH_HMAC_SHA2_256_128: (hashlib.sha256, 32, 16),
    IntegId.AUTH_HMAC_SHA2_384_192: (hashlib.sha384, 48, 24),
    IntegId.AUTH_HMAC_SHA2_512_256: (hashlib.sha512, 64, 32),
}

_AES_KEY_BITS = (128, 192, 256)


def _unsupported(reason: str) -> ProtocolError:
    # Reaching this means a proposal was accepted that we cannot run: a policy bug or a
    # configuration error; NO_PROPOSAL_CHOSEN is the notify a peer would understand.
    return ProtocolError(reason, NotifyType.NO_PROPOSAL_CHOSEN)


class SkCipher:
    """Seals / opens the content of one direction's SK payloads.

    ``iv_size``: octets of IV on the wire; ``icv_size``: octets of ICV; ``block_size``:
    the padding granularity (1 for AEAD: RFC 5282 needs no padding, we send none).
    """

    # Two per IKE SA (10,000s in a gateway): no instance dictionaries in the subclasses.
    __slots__ = ()

    iv_size: int
    icv_size: int
    block_size: int

    def sealed_length(self, plaintext_len: int) -> int:
        """``len(IV || ciphertext || ICV)`` for ``plaintext_len`` octets of inner payloads
        (ciphertext includes padding and the Pad Length octet)."""
        padded = plaintext_len + 1
        padded += (-padded) % self.block_size
        return self.iv_size + padded + self.icv_size

    def seal(self, aad: bytes, plaintext: bytes, iv: bytes | None = None) -> bytes:
        """Pad, encrypt and protect ``plaintext``: returns IV || ciphertext || ICV."""
        raise NotImplementedError

    def open(self, aad: bytes, body: bytes) -> bytes:
        """Verify and decrypt IV || ciphertext || ICV; returns the plaintext without padding.

        ``IntegrityError`` when the body is too short to hold IV, ICV and Pad Length or the
        ICV does not verify (sec. 3.14: drop silently). ``ProtocolError(INVALID_SYNTAX)``
        when a verified plaintext has a Pad Length larger than itself, or (CBC) a
        ciphertext that is not a multiple of the block size.
        """
        raise NotImplementedError

    def _pad(self, plaintext: bytes) -> bytes:
        pad_length = (-(len(plaintext) + 1)) % self.block_size
        # sec. 3.14: padding "MAY contain any value"; zeros, like strongSwan's AEAD path.
        return plaintext + bytes(pad_length) + bytes((pad_length,))

    @staticmethod
    def _unpad(padded: bytes) -> bytes:
        if not padded:
            raise ProtocolError("SK plaintext without Pad Length", NotifyType.INVALID_SYNTAX)
        pad_length = padded[-1]
        if pad_length + 1 > len(padded):
            raise ProtocolError(
                f"SK Pad Length {pad_length} larger than the plaintext ({len(padded)} octets)",
                NotifyType.INVALID_SYNTAX,
            )
        return padded[: len(padded) - 1 - pad_length]


class AeadSkCipher(SkCipher):
    """AES-GCM / AES-CCM (RFC 5282) and ChaCha20-Poly1305 (RFC 7634).

    Nonce = salt || 8-octet IV. Without an explicit ``iv``, ``seal`` uses a 64-bit counter
    starting at 1: unique for the lifetime of this object, i.e. of the key (RFC 5282 sec.
    3: "the IV MUST NOT repeat for a given key"). An explicit ``iv`` bypasses the counter:
    the caller then owns uniqueness.
    """

    __slots__ = ("_counter", "_key", "_make", "_salt", "encr", "icv_size")
    block_size = 1
    iv_size = AEAD_IV_SIZE

    def __init__(self, encr: EncrId, key: bytes, salt: bytes, icv_size: int) -> None:
        self.encr = encr
        self.icv_size = icv_size
        self._salt = salt
        self._counter = 0
        self._key = key
        # The AEAD context is built for each message and not kept: a cryptography AEAD
        # object holds about 2.7 KiB of OpenSSL contexts, two per IKE SA (5.4 KiB at 10,000
        # idle IKE SAs: 53 MiB), for a key used a few times an hour (DPD, rekey) against
        # about 2 us to build it again. ``None``: GCM-8/12, by the streaming interface.
        self._make: Callable[[bytes], AESGCM | AESCCM | ChaCha20Poly1305] | None
        if encr in _GCM:
            # AESGCM only emits 16-octet tags; a GCM tag truncates by prefix (NIST SP
            # 800-38D sec. 5.2.1.2), so GCM-8/12 use the streaming interface.
            self._make = AESGCM if icv_size == 16 else None
        elif encr in _CCM:
            self._make = partial(AESCCM, tag_length=icv_size)
        else:
            self._make = ChaCha20Poly1305
        if self._make is not None:
            self._make(key)  # a bad key length fails here, as it did when the object was kept

    def _next_iv(self) -> bytes:
        self._counter += 1
        if self._counter >= 1 << 64:
            raise ProtocolError("AEAD IV space exhausted: rekey the IKE SA", None)
        return struct.pack("!Q", self._counter)

    def seal(self, aad: bytes, plaintext: bytes, iv: bytes | None = None) -> bytes:
        if iv is None:
            iv = self._next_iv()
        elif len(iv) != AEAD_IV_SIZE:
            raise ValueError("AEAD IV must be 8 octets")
        return iv + self.encrypt(iv, self._pad(plaintext), aad)

    def open(self, aad: bytes, body: bytes) -> bytes:
        if len(body) < self.iv_size + 1 + self.icv_size:
            raise IntegrityError(f"SK payload of {len(body)} octets is truncated")
        iv = bytes(body[: self.iv_size])
        return self._unpad(self.decrypt(iv, bytes(body[self.iv_size :]), aad))

    def encrypt(self, iv: bytes, data: bytes, aad: bytes) -> bytes:
        """The bare AEAD: ciphertext || ICV of ``data`` under nonce salt || ``iv`` (no
        padding; known-answer tests use it directly)."""
        nonce = self._salt + iv
        if self._make is not None:
            return self._make(self._key).encrypt(nonce, data, aad)
        encryptor = Cipher(algorithms.AES(self._key), modes.GCM(nonce)).encryptor()
        encryptor.authenticate_additional_data(aad)
        ciphertext = encryptor.update(data) + encryptor.finalize()
        return ciphertext + encryptor.tag[: self.icv_size]

    def decrypt(self, iv: bytes, ciphertext_and_icv: bytes, aad: bytes) -> bytes:
        """Inverse of :meth:`encrypt`; ``IntegrityError`` when the ICV does not verify."""
        if len(ciphertext_and_icv) < self.icv_size:
            raise IntegrityError("AEAD input shorter than its ICV")
        nonce = self._salt + iv
        try:
            if self._make is not None:
                return self._make(self._key).decrypt(nonce, ciphertext_and_icv, aad)
            tag = ciphertext_and_icv[len(ciphertext_and_icv) - self.icv_size :]
            decryptor = Cipher(
                algorithms.AES(self._key),
                modes.GCM(nonce, tag, min_tag_length=self.icv_size),
            ).decryptor()
            decryptor.authenticate_additional_data(aad)
            data = decryptor.update(ciphertext_and_icv[: len(ciphertext_and_icv) - self.icv_size])
            return data + decryptor.finalize()
        except InvalidTag:
            raise IntegrityError("SK ICV does not verify") from None


class CbcHmacSkCipher(SkCipher):
    """ENCR_AES_CBC (RFC 3602 as used by RFC 7296 sec. 3.14) + HMAC integrity.

    Encrypt-then-MAC: the ICV covers ``aad || IV || ciphertext`` and is checked (in
    constant time, ``hmac.compare_digest``) before anything is decrypted. The IV is random
    (sec. 3.14: "MUST be chosen at random and MUST be unpredictable"), from ``rng`` (the
    engine's injected one, so that a seeded run reproduces it).
    """

    __slots__ = ("_algorithm", "_digest", "_integ_key", "_rng", "encr", "icv_size", "integ")
    iv_size = 16
    block_size = 16

    def __init__(
        self,
        key: bytes,
        integ: IntegId,
        integ_key: bytes,
        rng: Callable[[int], bytes] = os.urandom,
    ) -> None:
        digest, _, icv_size = _INTEG[integ]
        self._rng = rng
        self.encr = EncrId.ENCR_AES_CBC
        self.integ = integ
        self.icv_size = icv_size
        self._algorithm = algorithms.AES(key)
        self._digest = digest
        self._integ_key = integ_key

    def compute_icv(self, aad: bytes, protected: bytes) -> bytes:
        """Truncated HMAC over ``aad || protected`` (protected = IV || ciphertext)."""
        mac = hmac.new(self._integ_key, aad, self._digest)
        mac.update(protected)
        return mac.digest()[: self.icv_size]

    def seal(self, aad: bytes, plaintext: bytes, iv: bytes | None = None) -> bytes:
        if iv is None:
            iv = self._rng(self.iv_size)
        elif len(iv) != self.iv_size:
            raise ValueError("CBC IV must be one block")
        encryptor = Cipher(self._algorithm, modes.CBC(iv)).encryptor()
        protected = iv + encryptor.update(self._pad(plaintext)) + encryptor.finalize()
        return protected + self.compute_icv(aad, protected)

    def open(self, aad: bytes, body: bytes) -> bytes:
        if len(body) < self.iv_size + self.block_size + self.icv_size:
            raise IntegrityError(f"SK payload of {len(body)} octets is truncated")
        protected = bytes(body[: len(body) - self.icv_size])
        icv = bytes(body[len(body) - self.icv_size :])
        if not hmac.compare_digest(icv, self.compute_icv(aad, protected)):
            raise IntegrityError("SK ICV does not verify")
        ciphertext = protected[self.iv_size :]
        if len(ciphertext) % self.block_size:
            raise ProtocolError(
                f"SK ciphertext of {len(ciphertext)} octets is not whole blocks",
                NotifyType.INVALID_SYNTAX,
            )
        decryptor = Cipher(self._algorithm, modes.CBC(protected[: self.iv_size])).decryptor()
        return self._unpad(decryptor.update(ciphertext) + decryptor.finalize())


def is_aead(encr: EncrId | int) -> bool:
    """True for the combined-mode ciphers (no separate integrity transform, RFC 5282)."""
    return encr in _AEAD


def sk_key_lengths(
    encr: EncrId | int, encr_key_bits: int | None, integ: IntegId | int | None
) -> tuple[int, int]:
    """``(len(SK_e) including salt, len(SK_a))`` in octets for a negotiated SA (sec. 2.14).

    ``encr_key_bits`` is the Key Length attribute (None for ChaCha20-Poly1305, which has a
    fixed 256-bit key). AEAD ciphers take no integrity key: ``integ`` must be None or NONE
    (RFC 5282 sec. 8: an AEAD proposal carries no integrity transform).
    """
    if encr in _AEAD:
        if integ not in (None, IntegId.NONE):
            raise _unsupported("an AEAD cipher is combined with an integrity algorithm")
        _, salt_size = _AEAD[EncrId(encr)]
        if encr == EncrId.ENCR_CHACHA20_POLY1305:
            if encr_key_bits not in (None, 256):
                raise _unsupported(f"ChaCha20-Poly1305 with a {encr_key_bits}-bit key")
            return 32 + salt_size, 0
        if encr_key_bits not in _AES_KEY_BITS:
            raise _unsupported(f"AES key length {encr_key_bits}")
        return encr_key_bits // 8 + salt_size, 0
    if encr == EncrId.ENCR_AES_CBC:
        if encr_key_bits not in _AES_KEY_BITS:
            raise _unsupported(f"AES key length {encr_key_bits}")
        if integ not in _INTEG:
            raise _unsupported(f"integrity algorithm {integ} with AES-CBC")
        return encr_key_bits // 8, _INTEG[IntegId(integ)][1]
    raise _unsupported(f"encryption algorithm {encr} for SK payloads")


def make_sk_cipher(
    encr: EncrId | int,
    encr_key_bits: int | None,
    integ: IntegId | int | None,
    sk_e: bytes,
    sk_a: bytes | None,
    *,
    rng: Callable[[int], bytes] = os.urandom,
) -> SkCipher:
    """Build the SK cipher of one direction from its SK_e (incl. salt) and SK_a.

    ``rng(n)`` supplies AES-CBC IVs (AEAD IVs are a counter, RFC 5282 sec. 3)."""
    encr_len, integ_len = sk_key_lengths(encr, encr_key_bits, integ)
    if len(sk_e) != encr_len:
        raise ValueError(f"SK_e is {len(sk_e)} octets, {encr_len} expected")
    if encr in _AEAD:
        icv_size, salt_size = _AEAD[EncrId(encr)]
        return AeadSkCipher(
            EncrId(encr), sk_e[: encr_len - salt_size], sk_e[encr_len - salt_size :], icv_size
        )
    if integ is None or sk_a is None or len(sk_a) != integ_len:
        raise ValueError(f"SK_a must be {integ_len} octets")
    return CbcHmacSkCipher(sk_e, IntegId(integ), sk_a, rng)
