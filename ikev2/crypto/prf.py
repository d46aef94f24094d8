"""IKEv2 pseudorandom functions and prf+ (RFC 7296 sec. 2.13).

One :class:`Prf` per negotiated Transform Type 2 ID:

* PRF_HMAC_SHA2_256/384/512 (RFC 4868 sec. 2.1): HMAC with the full hash output.
* PRF_HMAC_SHA1 (RFC 2104, RFC 7296): kept for interoperability.
* PRF_HMAC_MD5: a weak algorithm, implemented so that old peers can be described and the
  policy (``ikev2.policy``) can refuse it by name; nothing here enables it by default.
* PRF_AES128_XCBC (RFC 4434) and PRF_AES128_CMAC (RFC 4615): 128-bit block-cipher PRFs whose
  keys of any length are first brought to 16 octets as those RFCs say.

Whether an algorithm is *allowed* is decided by the algorithm policy, never here.
"""

from __future__ import annotations

import hmac

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

from ikev2.enums import PrfId
from ikev2.errors import ProtocolError

# RFC 7296 sec. 2.13: the counter octet of prf+ runs from 0x01 to 0xff, so prf+ can produce
# at most 255 PRF outputs; asking for more is a protocol error, never a silent wrap.
PRF_PLUS_MAX_ITERATIONS = 255

_HMAC_DIGESTS: dict[PrfId, tuple[str, int]] = {
    PrfId.PRF_HMAC_MD5: ("md5", 16),
    PrfId.PRF_HMAC_SHA1: ("sha1", 20),
    PrfId.PRF_HMAC_SHA2_256: ("sha256", 32),
    PrfId.PRF_HMAC_SHA2_384: ("sha384", 48),
    PrfId.PRF_HMAC_SHA2_512: ("sha512", 64),
}

_AES_BLOCK = 16
_ZERO_BLOCK = bytes(_AES_BLOCK)

SUPPORTED_PRFS: frozenset[PrfId] = frozenset(
    [*_HMAC_DIGESTS, PrfId.PRF_AES128_XCBC, PrfId.PRF_AES128_CMAC]
)


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def _aes_ecb_encryptor(key: bytes) -> CipherContext:
    return Cipher(algorithms.AES(key), modes.ECB()).encryptor()


def aes_xcbc_mac(key: bytes, data: bytes) -> bytes:
    """AES-XCBC-MAC (RFC 3566 sec. 4) with a 16-octet key; full 128-bit output.

    K1/K2/K3 are AES-K of the constant blocks 0x01.., 0x02.., 0x03..; the last block is
    XORed with K2 when complete, or padded with 0x80 00.. and XORed with K3 otherwise.
    """
    if len(key) != _AES_BLOCK:
        raise ValueError("AES-XCBC-MAC needs a 16-octet key")
    derive = _aes_ecb_encryptor(key)
    k1 = derive.update(b"\x01" * _AES_BLOCK)
    k2 = derive.update(b"\x02" * _AES_BLOCK)
    k3 = derive.update(b"\x03" * _AES_BLOCK)
    if data and len(data) % _AES_BLOCK == 0:
        head, last, last_key = data[:-_AES_BLOCK], data[-_AES_BLOCK:], k2
    else:
        cut = len(data) - len(data) % _AES_BLOCK
        tail = data[cut:] + b"\x80"
        head, last, last_key = data[:cut], tail + bytes(_AES_BLOCK - len(tail)), k3
    # CBC-MAC over the full blocks is the last block of a CBC encryption with a zero IV.
    state = _ZERO_BLOCK
    if head:
        cbc = Cipher(algorithms.AES(k1), modes.CBC(_ZERO_BLOCK)).encryptor()
        state = (cbc.update(head) + cbc.finalize())[-_AES_BLOCK:]
    return _aes_ecb_encryptor(k1).update(_xor(_xor(state, last), last_key))


def aes_cmac(key: bytes, data: bytes) -> bytes:
    """AES-CMAC (RFC 4493, NIST SP 800-38B), full 128-bit output."""
    mac = CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()


class Prf:
    """A negotiated IKEv2 PRF: ``Prf(PrfId.PRF_HMAC_SHA2_256)(key, data)``.

    ``output_size``: octets per PRF output. ``key_size``: the preferred key length in octets,
    i.e. the length of SK_d, SK_pi and SK_pr (RFC 7296 sec. 2.13: "the key length of the PRF").
    """

    __slots__ = ("_digest", "key_size", "output_size", "prf_id")

    def __init__(self, prf_id: PrfId | int) -> None:
        try:
            self.prf_id = PrfId(prf_id)
        except ValueError:
            raise ValueError(f"unknown PRF transform ID {prf_id}") from None
        if self.prf_id in _HMAC_DIGESTS:
            self._digest, self.output_size = _HMAC_DIGESTS[self.prf_id]
            # RFC 4868 sec. 2.1.2 / RFC 2104: the HMAC PRF key length is the hash output size.
            self.key_size = self.output_size
        elif self.prf_id in (PrfId.PRF_AES128_XCBC, PrfId.PRF_AES128_CMAC):
            self._digest = ""
            self.output_size = self.key_size = _AES_BLOCK
        else:
            raise ValueError(f"PRF {self.prf_id.name} is not implemented")

    @property
    def has_fixed_key_size(self) -> bool:
        """True for the AES PRFs, which RFC 7296 sec. 2.14 treats specially for SKEYSEED."""
        return not self._digest

    def __repr__(self) -> str:
        return f"Prf({self.prf_id.name})"

    def __call__(self, key: bytes, data: bytes) -> bytes:
        if self._digest:
            return hmac.digest(key, data, self._digest)
        if self.prf_id == PrfId.PRF_AES128_XCBC:
            # RFC 4434 sec. 2: a short key is zero-padded to 128 bits, a long one is first
            # reduced with AES-XCBC-PRF-128 under the all-zero key.
            if len(key) < _AES_BLOCK:
                key = key + bytes(_AES_BLOCK - len(key))
            elif len(key) > _AES_BLOCK:
                key = aes_xcbc_mac(_ZERO_BLOCK, key)
            return aes_xcbc_mac(key, data)
        # RFC 4615 sec. 3: any key that is not 128 bits long is replaced by
        # AES-CMAC(0^128, key), short keys included.
        if len(key) != _AES_BLOCK:
            key = aes_cmac(_ZERO_BLOCK, key)
        return aes_cmac(key, data)

    def plus(self, key: bytes, seed: bytes, length: int) -> bytes:
        """prf+ (RFC 7296 sec. 2.13): T1 | T2 | ... truncated to ``length`` octets.

        T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n). More than 255 outputs would need
        a counter past 0xff, which the RFC forbids: ProtocolError.
        """
        if length < 0:
            raise ValueError("prf+ length must not be negative")
        iterations = -(-length // self.output_size)
        if iterations > PRF_PLUS_MAX_ITERATIONS:
            raise ProtocolError(
                f"prf+ cannot produce {length} octets with {self.prf_id.name} "
                f"(at most {PRF_PLUS_MAX_ITERATIONS} iterations, RFC 7296 sec. 2.13)"
            )
        if self._digest:
            # Fast path: the hmac module's one-shot C implementation.
            digest_name = self._digest
            blocks: list[bytes] = []
            previous = b""
            for counter in range(1, iterations + 1):
                previous = hmac.digest(key, previous + seed + bytes((counter,)), digest_name)
                blocks.append(previous)
        else:
            blocks = []
            previous = b""
            for counter in range(1, iterations + 1):
                previous = self(key, previous + seed + bytes((counter,)))
                blocks.append(previous)
        return b"".join(blocks)[:length]


def prf_plus(prf: Prf, key: bytes, seed: bytes, length: int) -> bytes:
    """Function form of :meth:`Prf.plus`."""
    return prf.plus(key, seed, length)
