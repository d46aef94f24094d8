"""ML-KEM (FIPS 203, August 2024) in pure Python, written from the standard's pseudocode.

Why it exists next to ``cryptography``'s ML-KEM: OpenSSL (as exposed by cryptography 50)
offers ML-KEM-768 and ML-KEM-1024 only, and never a deterministic encapsulation. IKEv2
defines ML-KEM-512 as well (IANA 35), and the teaching tool and the known-answer tests need
``Encaps_internal(ek, m)`` with a chosen ``m``. Algorithm numbers below are FIPS 203's.

Not constant-time (Python integers and early-exit comparisons). ``ikev2.crypto.mlkem_ke``
therefore prefers OpenSSL whenever it can and uses this module for ML-KEM-512 and for
deterministic runs; the tests cross-check both implementations against each other and
against the liboqs known-answer vectors.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

Q = 3329
N = 256


@dataclass(frozen=True)
class ParameterSet:
    """FIPS 203 sec. 8, table 2."""

    name: str
    k: int
    eta1: int
    eta2: int
    du: int
    dv: int

    @property
    def ek_length(self) -> int:
        return 384 * self.k + 32

    @property
    def dk_length(self) -> int:
        return 768 * self.k + 96

    @property
    def ciphertext_length(self) -> int:
        return 32 * (self.du * self.k + self.dv)


ML_KEM_512 = ParameterSet("ML-KEM-512", k=2, eta1=3, eta2=2, du=10, dv=4)
ML_KEM_768 = ParameterSet("ML-KEM-768", k=3, eta1=2, eta2=2, du=10, dv=4)
ML_KEM_1024 = ParameterSet("ML-KEM-1024", k=4, eta1=2, eta2=2, du=11, dv=5)


def random_bytes(length: int) -> bytes:
    """Fresh randomness from the OS (FIPS 203 sec. 3.3 asks for an approved RBG)."""
    return secrets.token_bytes(length)


def _bitrev7(value: int) -> int:
    return int(f"{value:07b}"[::-1], 2)


# zeta = 17 is the primitive 256th root of unity mod q (FIPS 203 sec. 4.3).
_ZETAS = [pow(17, _bitrev7(i), Q) for i in range(128)]
_GAMMAS = [pow(17, 2 * _bitrev7(i) + 1, Q) for i in range(128)]
_N_INVERSE = 3303  # 128^-1 mod q


# -- hash functions, FIPS 203 sec. 4.1 --------------------------------------------------------
def _h(data: bytes) -> bytes:
    return hashlib.sha3_256(data).digest()


def _j(data: bytes) -> bytes:
    return hashlib.shake_256(data).digest(32)


def _g(data: bytes) -> tuple[bytes, bytes]:
    digest = hashlib.sha3_512(data).digest()
    return digest[:32], digest[32:]


def _prf(eta: int, seed: bytes, counter: int) -> bytes:
    return hashlib.shake_256(seed + bytes((counter,))).digest(64 * eta)


# -- encoding, FIPS 203 sec. 4.2.1 ------------------------------------------------------------
def _byte_encode(coefficients: list[int], d: int) -> bytes:
    """Algorithm 5: d bits per coefficient, least significant bit first."""
    packed = 0
    for index, value in enumerate(coefficients):
        packed |= value << (index * d)
    return packed.to_bytes(32 * d, "little")


def _byte_decode(data: bytes, d: int) -> list[int]:
    """Algorithm 6; for d = 12 the values are reduced mod q."""
    packed = int.from_bytes(data, "little")
    mask = (1 << d) - 1
    values = [(packed >> (index * d)) & mask for index in range(N)]
    if d == 12:
        return [value % Q for value in values]
    return values


def _compress(values: list[int], d: int) -> list[int]:
    # round(2^d / q * x) mod 2^d with round-half-up, in integers: floor((2^(d+1) x + q) / 2q).
    modulus = 1 << d
    return [(((value << (d + 1)) + Q) // (2 * Q)) % modulus for value in values]


def _decompress(values: list[int], d: int) -> list[int]:
    # round(q / 2^d * y)
    return [(Q * value + (1 << (d - 1))) >> d for value in values]


# -- sampling, FIPS 203 sec. 4.2.2 ------------------------------------------------------------
def _sample_ntt(seed: bytes) -> list[int]:
    """Algorithm 7: rejection sampling of a polynomial in NTT form from SHAKE128(seed)."""
    length = 840
    while True:
        stream = hashlib.shake_128(seed).digest(length)
        coefficients: list[int] = []
        for offset in range(0, length - 2, 3):
            c0, c1, c2 = stream[offset], stream[offset + 1], stream[offset + 2]
            d1 = c0 + 256 * (c1 % 16)
            d2 = (c1 >> 4) + 16 * c2
            if d1 < Q:
                coefficients.append(d1)
                if len(coefficients) == N:
                    return coefficients
            if d2 < Q:
                coefficients.append(d2)
                if len(coefficients) == N:
                    return coefficients
        length *= 2  # the XOF stream is a prefix-stable sequence: just read further


def _sample_poly_cbd(data: bytes, eta: int) -> list[int]:
    """Algorithm 8: centred binomial distribution from 64*eta octets."""
    bits = int.from_bytes(data, "little")
    result = []
    for index in range(N):
        base = 2 * index * eta
        x = ((bits >> base) & ((1 << eta) - 1)).bit_count()
        y = ((bits >> (base + eta)) & ((1 << eta) - 1)).bit_count()
        result.append((x - y) % Q)
    return result


# -- NTT, FIPS 203 sec. 4.3 -------------------------------------------------------------------
def _ntt(polynomial: list[int]) -> list[int]:
    """Algorithm 9."""
    f = list(polynomial)
    index = 1
    length = 128
    while length >= 2:
        for start in range(0, N, 2 * length):
            zeta = _ZETAS[index]
            index += 1
            for j in range(start, start + length):
                t = zeta * f[j + length] % Q
                f[j + length] = (f[j] - t) % Q
                f[j] = (f[j] + t) % Q
        length //= 2
    return f


def _ntt_inverse(polynomial: list[int]) -> list[int]:
    """Algorithm 10."""
    f = list(polynomial)
    index = 127
    length = 2
    while length <= 128:
        for start in range(0, N, 2 * length):
            zeta = _ZETAS[index]
            index -= 1
            for j in range(start, start + length):
                t = f[j]
                f[j] = (t + f[j + length]) % Q
                f[j + length] = zeta * (f[j + length] - t) % Q
        length *= 2
    return [value * _N_INVERSE % Q for value in f]


def _multiply_ntts(f: list[int], g: list[int]) -> list[int]:
    """Algorithms 11 and 12: products of degree-one polynomials mod X^2 - gamma."""
    h = [0] * N
    for i in range(128):
        a0, a1, b0, b1 = f[2 * i], f[2 * i + 1], g[2 * i], g[2 * i + 1]
        h[2 * i] = (a0 * b0 + a1 * b1 * _GAMMAS[i]) % Q
        h[2 * i + 1] = (a0 * b1 + a1 * b0) % Q
    return h


def _add(f: list[int], g: list[int]) -> list[int]:
    return [(a + b) % Q for a, b in zip(f, g)]


def _sub(f: list[int], g: list[int]) -> list[int]:
    return [(a - b) % Q for a, b in zip(f, g)]


def _matrix(params: ParameterSet, rho: bytes) -> list[list[list[int]]]:
    # A_hat[i][j] = SampleNTT(rho || j || i) (Algorithm 13 line 5, Algorithm 14 line 6).
    return [[_sample_ntt(rho + bytes((j, i))) for j in range(params.k)] for i in range(params.k)]


# -- K-PKE, FIPS 203 sec. 5 -------------------------------------------------------------------
def _kpke_keygen(params: ParameterSet, d: bytes) -> tuple[bytes, bytes]:
    """Algorithm 13."""
    rho, sigma = _g(d + bytes((params.k,)))
    a_hat = _matrix(params, rho)
    counter = 0
    s = []
    for _ in range(params.k):
        s.append(_sample_poly_cbd(_prf(params.eta1, sigma, counter), params.eta1))
        counter += 1
    e = []
    for _ in range(params.k):
        e.append(_sample_poly_cbd(_prf(params.eta1, sigma, counter), params.eta1))
        counter += 1
    s_hat = [_ntt(poly) for poly in s]
    e_hat = [_ntt(poly) for poly in e]
    t_hat = []
    for i in range(params.k):
        acc = e_hat[i]
        for j in range(params.k):
            acc = _add(acc, _multiply_ntts(a_hat[i][j], s_hat[j]))
        t_hat.append(acc)
    ek = b"".join(_byte_encode(poly, 12) for poly in t_hat) + rho
    dk = b"".join(_byte_encode(poly, 12) for poly in s_hat)
    return ek, dk


def _kpke_encrypt(params: ParameterSet, ek: bytes, message: bytes, randomness: bytes) -> bytes:
    """Algorithm 14."""
    k = params.k
    t_hat = [_byte_decode(ek[384 * i : 384 * (i + 1)], 12) for i in range(k)]
    rho = ek[384 * k : 384 * k + 32]
    a_hat = _matrix(params, rho)
    counter = 0
    y = []
    for _ in range(k):
        y.append(_sample_poly_cbd(_prf(params.eta1, randomness, counter), params.eta1))
        counter += 1
    e1 = []
    for _ in range(k):
        e1.append(_sample_poly_cbd(_prf(params.eta2, randomness, counter), params.eta2))
        counter += 1
    e2 = _sample_poly_cbd(_prf(params.eta2, randomness, counter), params.eta2)
    y_hat = [_ntt(poly) for poly in y]
    u = []
    for i in range(k):
        acc = [0] * N
        for j in range(k):
            acc = _add(acc, _multiply_ntts(a_hat[j][i], y_hat[j]))
        u.append(_add(_ntt_inverse(acc), e1[i]))
    mu = _decompress(_byte_decode(message, 1), 1)
    acc = [0] * N
    for j in range(k):
        acc = _add(acc, _multiply_ntts(t_hat[j], y_hat[j]))
    v = _add(_add(_ntt_inverse(acc), e2), mu)
    c1 = b"".join(_byte_encode(_compress(poly, params.du), params.du) for poly in u)
    c2 = _byte_encode(_compress(v, params.dv), params.dv)
    return c1 + c2


def _kpke_decrypt(params: ParameterSet, dk_pke: bytes, ciphertext: bytes) -> bytes:
    """Algorithm 15."""
    k, du, dv = params.k, params.du, params.dv
    c1_length = 32 * du * k
    u = [
        _decompress(_byte_decode(ciphertext[32 * du * i : 32 * du * (i + 1)], du), du)
        for i in range(k)
    ]
    v = _decompress(_byte_decode(ciphertext[c1_length:], dv), dv)
    s_hat = [_byte_decode(dk_pke[384 * i : 384 * (i + 1)], 12) for i in range(k)]
    acc = [0] * N
    for i in range(k):
        acc = _add(acc, _multiply_ntts(s_hat[i], _ntt(u[i])))
    w = _sub(v, _ntt_inverse(acc))
    return _byte_encode(_compress(w, 1), 1)


# -- ML-KEM, FIPS 203 sec. 6 and 7 ------------------------------------------------------------
def keygen_internal(params: ParameterSet, d: bytes, z: bytes) -> tuple[bytes, bytes]:
    """Algorithm 16: (ek, dk) from the 32-octet seeds d and z."""
    if len(d) != 32 or len(z) != 32:
        raise ValueError("ML-KEM key generation seeds d and z are 32 octets each")
    ek, dk_pke = _kpke_keygen(params, d)
    return ek, dk_pke + ek + _h(ek) + z


def encaps_internal(params: ParameterSet, ek: bytes, message: bytes) -> tuple[bytes, bytes]:
    """Algorithm 17: (shared key K, ciphertext c) for the 32-octet randomness m."""
    if len(message) != 32:
        raise ValueError("ML-KEM encapsulation randomness m is 32 octets")
    shared, randomness = _g(message + _h(ek))
    return shared, _kpke_encrypt(params, ek, message, randomness)


def decaps_internal(params: ParameterSet, dk: bytes, ciphertext: bytes) -> bytes:
    """Algorithm 18, with implicit rejection (a bad ciphertext yields J(z || c))."""
    k = params.k
    dk_pke = dk[: 384 * k]
    ek_pke = dk[384 * k : 768 * k + 32]
    h = dk[768 * k + 32 : 768 * k + 64]
    z = dk[768 * k + 64 : 768 * k + 96]
    message = _kpke_decrypt(params, dk_pke, ciphertext)
    shared, randomness = _g(message + h)
    rejection_key = _j(z + ciphertext)
    expected = _kpke_encrypt(params, ek_pke, message, randomness)
    if not hmac.compare_digest(ciphertext, expected):
        return rejection_key
    return shared


def encapsulation_key_is_valid(params: ParameterSet, ek: bytes) -> bool:
    """FIPS 203 sec. 7.2 input checks: length and ByteEncode12(ByteDecode12(ek)) == ek."""
    if len(ek) != params.ek_length:
        return False
    packed = int.from_bytes(ek[: 384 * params.k], "little")
    return all(((packed >> (12 * index)) & 0xFFF) < Q for index in range(N * params.k))


def decaps(params: ParameterSet, dk: bytes, ciphertext: bytes) -> bytes:
    """Algorithm 21 with the sec. 7.3 input checks (lengths and the hash check of dk)."""
    if len(ciphertext) != params.ciphertext_length or len(dk) != params.dk_length:
        raise ValueError(f"{params.name}: wrong ciphertext or decapsulation key length")
    k = params.k
    if _h(dk[384 * k : 768 * k + 32]) != dk[768 * k + 32 : 768 * k + 64]:
        raise ValueError(f"{params.name}: decapsulation key hash check failed")
    return decaps_internal(params, dk, ciphertext)
