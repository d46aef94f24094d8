"""ESP cryptographic transforms: one object per SA, built once, keys kept inside.

A transform knows the wire layout that follows SPI and Sequence Number (RFC 4303 sec. 2):
``IV || ciphertext || ICV``. ``seal`` writes that layout into the caller's buffer right after
an 8-byte SPI||Seq header already in place; ``open`` verifies and decrypts into the caller's
buffer. The AEAD objects of ``cryptography`` are created once here (about 1.3 us each) and
``encrypt_into``/``decrypt_into`` write straight into the packet buffers.

IVs: for the counter-based modes (GCM, CCM, GMAC, ChaCha20-Poly1305, CTR) the IV is the
64-bit sequence number (RFC 4106 sec. 3.1, RFC 4309 sec. 3.1, RFC 4543 sec. 3.1,
RFC 7634 sec. 2, RFC 3686 sec. 3): an SA never sends one sequence number twice, so a nonce
never repeats under one key and no random source is needed. CBC needs unpredictable IVs
(RFC 3602 sec. 2.3): they come from ``os.urandom``.

Key material comes as the IKE side derives it (RFC 7296 sec. 2.17): for GCM, GMAC,
ChaCha20-Poly1305 and CTR the last 4 octets are the salt/nonce, for CCM the last 3.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305

from esp.errors import InvalidKey, UnsupportedAlgorithm
from ikev2.enums import EncrId, IntegId

_pack_q = struct.Struct("!Q").pack_into
_pack_ii = struct.Struct("!II").pack_into
_SEQ_HIGH = struct.Struct("!I")


@dataclass(frozen=True)
class EncrInfo:
    """Static facts about an encryption transform (RFC 4303 and the per-algorithm RFCs)."""

    name: str  # the Linux xfrm name, as ``ip xfrm state`` prints it
    key_sizes: tuple[int, ...]  # cipher key octets, without salt
    salt_size: int
    iv_size: int
    icv_size: int  # 0 for non-AEAD (the integrity transform supplies the ICV)
    block_size: int  # payload alignment, at least 4 (RFC 4303 sec. 2.4)
    aead: bool


@dataclass(frozen=True)
class IntegInfo:
    name: str
    key_size: int
    icv_size: int
    digest: str


ENCR_INFO: dict[EncrId, EncrInfo] = {
    EncrId.ENCR_AES_GCM_8: EncrInfo("rfc4106(gcm(aes))", (16, 24, 32), 4, 8, 8, 4, True),
    EncrId.ENCR_AES_GCM_12: EncrInfo("rfc4106(gcm(aes))", (16, 24, 32), 4, 8, 12, 4, True),
    EncrId.ENCR_AES_GCM_16: EncrInfo("rfc4106(gcm(aes))", (16, 24, 32), 4, 8, 16, 4, True),
    EncrId.ENCR_AES_CCM_8: EncrInfo("rfc4309(ccm(aes))", (16, 24, 32), 3, 8, 8, 4, True),
    EncrId.ENCR_AES_CCM_12: EncrInfo("rfc4309(ccm(aes))", (16, 24, 32), 3, 8, 12, 4, True),
    EncrId.ENCR_AES_CCM_16: EncrInfo("rfc4309(ccm(aes))", (16, 24, 32), 3, 8, 16, 4, True),
    EncrId.ENCR_NULL_AUTH_AES_GMAC: EncrInfo("rfc4543(gcm(aes))", (16, 24, 32), 4, 8, 16, 4, True),
    EncrId.ENCR_CHACHA20_POLY1305: EncrInfo(
        "rfc7539esp(chacha20,poly1305)", (32,), 4, 8, 16, 4, True
    ),
    EncrId.ENCR_AES_CBC: EncrInfo("cbc(aes)", (16, 24, 32), 0, 16, 0, 16, False),
    EncrId.ENCR_AES_CTR: EncrInfo("rfc3686(ctr(aes))", (16, 24, 32), 4, 8, 0, 4, False),
    EncrId.ENCR_NULL: EncrInfo("ecb(cipher_null)", (0,), 0, 0, 0, 4, False),
}

INTEG_INFO: dict[IntegId, IntegInfo] = {
    IntegId.AUTH_HMAC_SHA1_96: IntegInfo("hmac(sha1)", 20, 12, "sha1"),
    IntegId.AUTH_HMAC_SHA2_256_128: IntegInfo("hmac(sha256)", 32, 16, "sha256"),
    IntegId.AUTH_HMAC_SHA2_384_192: IntegInfo("hmac(sha384)", 48, 24, "sha384"),
    IntegId.AUTH_HMAC_SHA2_512_256: IntegInfo("hmac(sha512)", 64, 32, "sha512"),
}

# RFC 8221 sec. 5/6: MUST NOT (DES, 3DES is SHOULD NOT, Blowfish/CAST/IDEA unlisted
# legacy) and HMAC-MD5 MUST NOT. This data plane does not implement them at all.
REFUSED_ENCR = frozenset(
    {
        EncrId.ENCR_DES_IV64,
        EncrId.ENCR_DES,
        EncrId.ENCR_3DES,
        EncrId.ENCR_RC5,
        EncrId.ENCR_IDEA,
        EncrId.ENCR_CAST,
        EncrId.ENCR_BLOWFISH,
        EncrId.ENCR_3IDEA,
        EncrId.ENCR_DES_IV32,
    }
)
REFUSED_INTEG = frozenset({IntegId.AUTH_HMAC_MD5_96, IntegId.AUTH_HMAC_MD5_128})


def encr_info(encr: EncrId | int) -> EncrInfo:
    if encr in REFUSED_ENCR:
        raise UnsupportedAlgorithm(f"{EncrId(encr).name} is refused (RFC 8221)")
    try:
        return ENCR_INFO[EncrId(encr)]
    except (KeyError, ValueError):
        raise UnsupportedAlgorithm(f"ESP encryption transform {encr!r} is not supported") from None


def integ_info(integ: IntegId | int) -> IntegInfo | None:
    if integ == IntegId.NONE:
        return None
    if integ in REFUSED_INTEG:
        raise UnsupportedAlgorithm(f"{IntegId(integ).name} is refused (RFC 8221)")
    try:
        return INTEG_INFO[IntegId(integ)]
    except (KeyError, ValueError):
        raise UnsupportedAlgorithm(f"ESP integrity transform {integ!r} is not supported") from None


Buffer = bytes | bytearray | memoryview


class AeadCipher(Protocol):
    """What ``cryptography``'s AEAD classes (``AESGCM``, ``AESCCM``, ``ChaCha20Poly1305``)
    offer; named here so that the transforms and ``esp.processing`` are typed."""

    def encrypt(self, nonce: Buffer, data: Buffer, associated_data: Buffer | None) -> bytes: ...

    def decrypt(self, nonce: Buffer, data: Buffer, associated_data: Buffer | None) -> bytes: ...

    def encrypt_into(
        self, nonce: Buffer, data: Buffer, associated_data: Buffer | None, buf: Buffer
    ) -> int: ...

    def decrypt_into(
        self, nonce: Buffer, data: Buffer, associated_data: Buffer | None, buf: Buffer
    ) -> int: ...


@dataclass(frozen=True, slots=True)
class DirectAead:
    """What the per-packet path of ``esp.processing`` needs to call a counter-mode AEAD
    itself (AES-GCM-16, AES-CCM, ChaCha20-Poly1305): the bound ``encrypt``/``decrypt`` of
    the cipher object and the salt (nonce = salt || 8-octet IV). ``Transform.direct`` is
    one of these for those transforms, None for the others (which go through ``seal``/
    ``open``): saving the generic layer is worth about a third of the per-packet cost."""

    encrypt: Callable[[Buffer, Buffer, Buffer | None], bytes]
    decrypt: Callable[[Buffer, Buffer, Buffer | None], bytes]
    salt: bytes


class Transform:
    """Base: the layout sizes the SA needs. Subclasses implement ``seal`` and ``open``."""

    iv_size: int
    icv_size: int
    block_size: int
    direct: DirectAead | None = None

    def seal(
        self, out: memoryview, off: int, plaintext: memoryview, seq: int, esn: bool,
        iv: bytes | None = None,
    ) -> None:  # fmt: skip
        """Write IV || ciphertext || ICV at ``out[off + 8:]``; ``out[off:off + 8]`` holds
        SPI || low 32 bits of ``seq`` already. ``iv`` overrides the IV (known-answer tests)."""
        raise NotImplementedError

    def open(self, packet: memoryview, seq: int, esn: bool, out: memoryview) -> int:
        """Verify and decrypt ``packet`` (SPI .. ICV) into ``out``; return the plaintext
        length, or -1 if the ICV does not verify. ``out`` must hold ``plaintext_size``."""
        raise NotImplementedError

    def plaintext_size(self, packet_len: int) -> int:
        return packet_len - 8 - self.iv_size - self.icv_size


def _split_salt(key_material: bytes, info: EncrInfo, what: str) -> tuple[bytes, bytes]:
    key_len = len(key_material) - info.salt_size
    if key_len not in info.key_sizes:
        sizes = "/".join(str(8 * (k + info.salt_size)) for k in info.key_sizes)
        raise InvalidKey(f"{what} key material must be {sizes} bits (key || salt)")
    return bytes(key_material[:key_len]), bytes(key_material[key_len:])


class _Aead(Transform):
    """RFC 4106 (GCM), RFC 4309 (CCM), RFC 7634 (ChaCha20-Poly1305).

    Nonce = salt || IV; AAD = SPI || Seq (32-bit) or SPI || Seq high || Seq low (ESN,
    RFC 4106 sec. 5); the ICV is the AEAD tag appended to the ciphertext.
    """

    def __init__(self, info: EncrInfo, salt: bytes, aead: AeadCipher) -> None:
        self.iv_size = 8
        self.icv_size = info.icv_size
        self.block_size = info.block_size
        self._aead = aead
        self._encrypt_into = aead.encrypt_into
        self._decrypt_into = aead.decrypt_into
        self._nonce = bytearray(salt + bytes(8))
        self._salt_len = len(salt)
        self._aad_esn = bytearray(12)
        self.direct = DirectAead(aead.encrypt, aead.decrypt, bytes(salt))

    def seal(
        self, out: memoryview, off: int, plaintext: memoryview, seq: int, esn: bool,
        iv: bytes | None = None,
    ) -> None:  # fmt: skip
        nonce = self._nonce
        if iv is None:
            _pack_q(out, off + 8, seq)
            _pack_q(nonce, self._salt_len, seq)
        else:
            out[off + 8 : off + 16] = iv
            nonce[self._salt_len :] = iv
        aad: bytearray | memoryview
        if esn:
            aad = self._aad_esn
            aad[0:4] = out[off : off + 4]
            _pack_ii(aad, 4, seq >> 32, seq & 0xFFFFFFFF)
        else:
            aad = out[off : off + 8]
        start = off + 16
        self._encrypt_into(nonce, plaintext, aad, out[start : start + len(plaintext) + 16])

    def open(self, packet: memoryview, seq: int, esn: bool, out: memoryview) -> int:
        nonce = self._nonce
        nonce[self._salt_len :] = packet[8:16]
        aad: bytearray | memoryview
        if esn:
            aad = self._aad_esn
            aad[0:4] = packet[0:4]
            _pack_ii(aad, 4, seq >> 32, seq & 0xFFFFFFFF)
        else:
            aad = packet[0:8]
        try:
            return self._decrypt_into(nonce, packet[16:], aad, out)
        except InvalidTag:
            return -1


class _AesGcmShortTag(_Aead):
    """GCM with an 8- or 12-octet ICV: the tag truncated to its first octets (RFC 4106
    sec. 6). ``AESGCM`` only checks full tags, so the check uses the GCM mode object."""

    def __init__(self, info: EncrInfo, key: bytes, salt: bytes) -> None:
        super().__init__(info, salt, AESGCM(key))
        self._key = algorithms.AES(key)
        # AESGCM checks full 16-octet tags only: no direct calls (seal/open below).
        self.direct = None

    def seal(
        self, out: memoryview, off: int, plaintext: memoryview, seq: int, esn: bool,
        iv: bytes | None = None,
    ) -> None:  # fmt: skip
        nonce = self._nonce
        if iv is None:
            _pack_q(out, off + 8, seq)
            _pack_q(nonce, self._salt_len, seq)
        else:
            out[off + 8 : off + 16] = iv
            nonce[self._salt_len :] = iv
        if esn:
            aad = bytes(out[off : off + 4]) + struct.pack("!II", seq >> 32, seq & 0xFFFFFFFF)
        else:
            aad = bytes(out[off : off + 8])
        sealed = self._aead.encrypt(bytes(nonce), bytes(plaintext), aad)
        n = len(plaintext) + self.icv_size
        out[off + 16 : off + 16 + n] = sealed[:n]

    def open(self, packet: memoryview, seq: int, esn: bool, out: memoryview) -> int:
        nonce = bytes(self._nonce[: self._salt_len]) + bytes(packet[8:16])
        if esn:
            aad = bytes(packet[0:4]) + struct.pack("!II", seq >> 32, seq & 0xFFFFFFFF)
        else:
            aad = bytes(packet[0:8])
        tag = bytes(packet[len(packet) - self.icv_size :])
        decryptor = Cipher(self._key, modes.GCM(nonce, tag, min_tag_length=len(tag))).decryptor()
        decryptor.authenticate_additional_data(aad)
        plaintext = decryptor.update(packet[16 : len(packet) - self.icv_size])
        try:
            decryptor.finalize()
        except InvalidTag:
            return -1
        out[: len(plaintext)] = plaintext
        return len(plaintext)


class _AesGmac(Transform):
    """ENCR_NULL_AUTH_AES_GMAC (RFC 4543 sec. 3): the payload travels in clear and the
    whole packet (SPI, Seq, IV, payload) is the AAD of a GCM with empty plaintext."""

    def __init__(self, key: bytes, salt: bytes) -> None:
        self.iv_size = 8
        self.icv_size = 16
        self.block_size = 4
        self._aead = AESGCM(key)
        self._nonce = bytearray(salt + bytes(8))

    def _aad(
        self, buf: memoryview, start: int, end: int, seq: int, esn: bool
    ) -> bytes | memoryview:
        if esn:  # RFC 4543 sec. 3.3: SPI || Seq high || Seq low || IV || payload
            return b"".join(
                (buf[start : start + 4], struct.pack("!II", seq >> 32, seq & 0xFFFFFFFF),
                 buf[start + 8 : end])
            )  # fmt: skip
        return buf[start:end]

    def seal(
        self, out: memoryview, off: int, plaintext: memoryview, seq: int, esn: bool,
        iv: bytes | None = None,
    ) -> None:  # fmt: skip
        if iv is None:
            _pack_q(out, off + 8, seq)
        else:
            out[off + 8 : off + 16] = iv
        self._nonce[4:] = out[off + 8 : off + 16]
        end = off + 16 + len(plaintext)
        out[off + 16 : end] = plaintext
        tag = self._aead.encrypt(self._nonce, b"", self._aad(out, off, end, seq, esn))
        out[end : end + 16] = tag

    def open(self, packet: memoryview, seq: int, esn: bool, out: memoryview) -> int:
        end = len(packet) - 16
        self._nonce[4:] = packet[8:16]
        try:
            self._aead.decrypt(self._nonce, packet[end:], self._aad(packet, 0, end, seq, esn))
        except InvalidTag:
            return -1
        out[: end - 16] = packet[16:end]
        return end - 16


class _CipherThenMac(Transform):
    """AES-CBC (RFC 3602), AES-CTR (RFC 3686) or ENCR_NULL (RFC 2410) with an HMAC
    (RFC 2404, RFC 4868). The ICV covers SPI || Seq || IV || ciphertext and, with ESN,
    the high 32 bits of the sequence number appended (RFC 4303 sec. 2.2.1), and is checked
    before anything is decrypted (RFC 4303 sec. 3.4.4.1)."""

    def __init__(
        self, encr: EncrId, info: EncrInfo, key: bytes, salt: bytes,
        integ: IntegInfo | None, integ_key: bytes,
    ) -> None:  # fmt: skip
        self._encr = encr
        self.iv_size = info.iv_size
        self.block_size = info.block_size
        self._key = algorithms.AES(key) if key else None
        self._ctr_nonce = salt
        self.icv_size = integ.icv_size if integ else 0
        self._hmac = (
            hmac.new(integ_key, digestmod=getattr(hashlib, integ.digest)) if integ else None
        )

    def _cipher(self, iv: bytes | memoryview, encrypt: bool) -> CipherContext:
        assert self._key is not None  # ENCR_NULL never gets here (no IV, no cipher)
        mode: modes.CBC | modes.CTR
        if self._encr == EncrId.ENCR_AES_CBC:
            mode = modes.CBC(bytes(iv))
        else:  # RFC 3686 sec. 4: counter block = nonce || IV || 00000001
            mode = modes.CTR(self._ctr_nonce + bytes(iv) + b"\x00\x00\x00\x01")
        cipher = Cipher(self._key, mode)
        return cipher.encryptor() if encrypt else cipher.decryptor()

    def _icv(self, data: memoryview, seq: int, esn: bool) -> bytes:
        assert self._hmac is not None  # only called when the SA has integrity
        mac = self._hmac.copy()
        mac.update(data)
        if esn:
            mac.update(_SEQ_HIGH.pack(seq >> 32))
        return mac.digest()[: self.icv_size]

    def seal(
        self, out: memoryview, off: int, plaintext: memoryview, seq: int, esn: bool,
        iv: bytes | None = None,
    ) -> None:  # fmt: skip
        iv_size = self.iv_size
        start = off + 8 + iv_size
        end = start + len(plaintext)
        if self._key is None:
            out[start:end] = plaintext
        else:
            if iv is None:
                iv = os.urandom(16) if self._encr == EncrId.ENCR_AES_CBC else _pack_seq(seq)
            out[off + 8 : start] = iv
            out[start:end] = self._cipher(iv, True).update(plaintext)
        if self._hmac is not None:
            out[end : end + self.icv_size] = self._icv(out[off:end], seq, esn)

    def open(self, packet: memoryview, seq: int, esn: bool, out: memoryview) -> int:
        end = len(packet) - self.icv_size
        if self._hmac is not None and not hmac.compare_digest(
            self._icv(packet[:end], seq, esn), packet[end:]
        ):
            return -1
        start = 8 + self.iv_size
        if self._key is None:
            out[: end - start] = packet[start:end]
        else:
            out[: end - start] = self._cipher(packet[8:start], False).update(packet[start:end])
        return end - start


def _pack_seq(seq: int) -> bytes:
    return seq.to_bytes(8, "big")


def _checked(
    encr: EncrId | int, encr_key: bytes, integ: IntegId | int, integ_key: bytes,
    allow_null: bool, allow_no_integrity: bool,
) -> tuple[EncrInfo, IntegInfo | None, bytes, bytes]:  # fmt: skip
    """Every check of ``make_transform``; returns the infos, the key and the salt."""
    info = encr_info(encr)
    integ_i = integ_info(integ)
    if info.aead:
        if integ_i is not None:
            raise UnsupportedAlgorithm("an AEAD transform takes no separate integrity")
        key, salt = _split_salt(encr_key, info, EncrId(encr).name)
        return info, None, key, salt
    if encr == EncrId.ENCR_NULL:
        if not allow_null:
            raise UnsupportedAlgorithm("ENCR_NULL refused unless explicitly allowed")
        if integ_i is None:
            raise UnsupportedAlgorithm("ENCR_NULL needs an integrity transform")
        if encr_key:
            raise InvalidKey("ENCR_NULL takes no key")
    elif integ_i is None and not allow_no_integrity:
        raise UnsupportedAlgorithm(f"{EncrId(encr).name} without integrity is refused")
    key, salt = (b"", b"") if encr == EncrId.ENCR_NULL else _split_salt(encr_key, info, "encr")
    if integ_i is not None and len(integ_key) != integ_i.key_size:
        raise InvalidKey(f"{IntegId(integ).name} key must be {integ_i.key_size * 8} bits")
    return info, integ_i, key, salt


def transform_layout(
    encr: EncrId | int, encr_key: bytes, integ: IntegId | int = IntegId.NONE,
    integ_key: bytes = b"", *, allow_null: bool = False, allow_no_integrity: bool = False,
) -> tuple[int, int, int]:  # fmt: skip
    """``(iv_size, icv_size, block_size)`` of the transform ``make_transform`` would build,
    after the same checks (it raises the same errors), without creating a cipher object.

    ``EspSa`` calls this when installed and ``make_transform`` on its first packet: the
    OpenSSL context of an AEAD object is about 2.7 KiB, which an idle tunnel then never
    holds (issue 17, memory per tunnel)."""
    info, integ_i, _, _ = _checked(
        encr, encr_key, integ, integ_key, allow_null, allow_no_integrity
    )  # fmt: skip
    if info.aead:
        return info.iv_size, info.icv_size, info.block_size
    return info.iv_size, integ_i.icv_size if integ_i else 0, info.block_size


def make_transform(
    encr: EncrId | int, encr_key: bytes, integ: IntegId | int = IntegId.NONE,
    integ_key: bytes = b"", *, allow_null: bool = False, allow_no_integrity: bool = False,
) -> Transform:  # fmt: skip
    """Build the transform for one SA direction, checking the combination and key sizes.

    Refused unless asked: ENCR_NULL (needs ``allow_null``; RFC 8221 sec. 5 lists it as
    MAY, and it gives no confidentiality) and encryption without integrity (needs
    ``allow_no_integrity``; RFC 8221 sec. 5 forbids it, only the RFC 3602 examples use it).
    An AEAD with a separate integrity transform is refused (RFC 4303 sec. 3.2).
    """
    info, integ_i, key, salt = _checked(
        encr, encr_key, integ, integ_key, allow_null, allow_no_integrity
    )  # fmt: skip
    if info.aead:
        if encr == EncrId.ENCR_AES_GCM_16:
            return _Aead(info, salt, AESGCM(key))
        if encr in (EncrId.ENCR_AES_GCM_8, EncrId.ENCR_AES_GCM_12):
            return _AesGcmShortTag(info, key, salt)
        if encr == EncrId.ENCR_CHACHA20_POLY1305:
            return _Aead(info, salt, ChaCha20Poly1305(key))
        if encr == EncrId.ENCR_NULL_AUTH_AES_GMAC:
            return _AesGmac(key, salt)
        return _Aead(info, salt, AESCCM(key, tag_length=info.icv_size))
    return _CipherThenMac(EncrId(encr), info, key, salt, integ_i, bytes(integ_key))
