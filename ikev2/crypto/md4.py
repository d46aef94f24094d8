"""MD4 (RFC 1320), for MS-CHAPv2's NtPasswordHash only (RFC 2759 sec. 8.3).

Why it is here: OpenSSL 3 moved MD4 to its legacy provider, so ``hashlib.new("md4")`` fails
on this Python, and ``cryptography`` offers no MD4 either. MD4 is broken as a hash; MS-CHAPv2
needs it as a fixed function of the password, and nothing else in aioipsec may use it.
Checked against the RFC 1320 appendix A.5 test suite (tests/test_eap_crypto.py).
"""

from __future__ import annotations

import struct

_MASK = 0xFFFFFFFF


def _rotl(value: int, shift: int) -> int:
    value &= _MASK
    return ((value << shift) | (value >> (32 - shift))) & _MASK


def _f(x: int, y: int, z: int) -> int:  # RFC 1320 sec. 3.4: F(X,Y,Z) = XY v not(X) Z
    return (x & y) | (~x & z)


def _g(x: int, y: int, z: int) -> int:  # G(X,Y,Z) = XY v XZ v YZ
    return (x & y) | (x & z) | (y & z)


def _h(x: int, y: int, z: int) -> int:  # H(X,Y,Z) = X xor Y xor Z
    return x ^ y ^ z


# Round 2 and 3 constants (RFC 1320 sec. 3.4): sqrt(2) and sqrt(3), as 32-bit fractions.
_ROUND2 = 0x5A827999
_ROUND3 = 0x6ED9EBA1
# Word order and shifts of each round's 16 operations.
_ORDER1 = range(16)
_ORDER2 = (0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15)
_ORDER3 = (0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15)
_SHIFTS1 = (3, 7, 11, 19)
_SHIFTS2 = (3, 5, 9, 13)
_SHIFTS3 = (3, 9, 11, 15)


def _compress(state: list[int], block: bytes) -> None:
    x = struct.unpack("<16I", block)
    a, b, c, d = state
    for i, k in enumerate(_ORDER1):
        a = _rotl(a + _f(b, c, d) + x[k], _SHIFTS1[i % 4])
        a, b, c, d = d, a, b, c
    for i, k in enumerate(_ORDER2):
        a = _rotl(a + _g(b, c, d) + x[k] + _ROUND2, _SHIFTS2[i % 4])
        a, b, c, d = d, a, b, c
    for i, k in enumerate(_ORDER3):
        a = _rotl(a + _h(b, c, d) + x[k] + _ROUND3, _SHIFTS3[i % 4])
        a, b, c, d = d, a, b, c
    state[0] = (state[0] + a) & _MASK
    state[1] = (state[1] + b) & _MASK
    state[2] = (state[2] + c) & _MASK
    state[3] = (state[3] + d) & _MASK


def md4(data: bytes) -> bytes:
    """The 16-octet MD4 digest of ``data`` (RFC 1320 sec. 3.1-3.5)."""
    # Padding (sec. 3.1, 3.2): a 1 bit, zeros to 448 mod 512 bits, the bit length (LE, 64).
    length = len(data)
    padded = data + b"\x80" + bytes((55 - length) % 64) + struct.pack("<Q", (8 * length) % 2**64)
    state = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476]  # sec. 3.3
    for offset in range(0, len(padded), 64):
        _compress(state, padded[offset : offset + 64])
    return struct.pack("<4I", *state)
