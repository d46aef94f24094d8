"""Key exchange methods of IKEv2 (Transform Type 4): MODP DH, ECP, Curve25519/448, ML-KEM.

The contract (docs/architecture.md)::

    ke = new_key_exchange(KeId.CURVE25519)       # or private=... / rng=... (deterministic)
    ke.our_payload()    # the Key Exchange Data we put in our KE payload (RFC 7296 sec. 3.4)
    ke.compute(peer)    # the shared secret; validates the peer's value first

Encodings, per method:

* MODP (RFC 7296 sec. 3.4, RFC 3526): g^x mod p, big-endian, left-padded to len(p);
  the shared secret g^xy is padded the same way.
* ECP groups 19/20/21 (RFC 5903 sec. 7), 25/26 (RFC 5114 / RFC 5903 format) and Brainpool
  27-30 (RFC 6954): x || y, each coordinate padded to the field size; the shared secret is
  the x coordinate of the product only.
* Curve25519 / Curve448 (RFC 8031 sec. 2): the 32/56-octet u-coordinate; an all-zero
  shared secret MUST be rejected (sec. 2.3).
* ML-KEM-512/768/1024 (IANA 35/36/37, FIPS 203, draft-ietf-ipsecme-ikev2-mlkem): a KEM, so
  the order matters: the initiator sends the encapsulation key (``our_payload`` first, then
  ``compute(ciphertext)`` decapsulates); the responder's ``compute(ek)`` encapsulates and
  its ``our_payload`` is then the ciphertext.

Any malformed peer value raises ``ProtocolError(INVALID_SYNTAX)``: a wrong length for the
method, a MODP value outside 1 < y < p-1, a point not on the curve (the identity included),
a Curve25519/448 value giving the all-zero secret, an ML-KEM key failing the FIPS 203
modulus check. The caller decides whether that ends the exchange.

Timing: MODP uses Python's ``pow()``, which is not constant-time; the exponent is a fresh
random value per exchange (never reused), so this leaks no more than the key exchange's own
lifetime. ECDH, X25519/X448 and ML-KEM-768/1024 use OpenSSL through ``cryptography``.
"""

from __future__ import annotations

import secrets

from cryptography.hazmat.primitives.asymmetric import ec, x448, x25519

# KeyExchange and Rng are defined in ke_base (mlkem_ke builds on them too) and re-exported.
from ikev2.crypto.ke_base import KeyExchange as KeyExchange
from ikev2.crypto.ke_base import Rng as Rng
from ikev2.crypto.ke_base import invalid_key_exchange_data
from ikev2.crypto.mlkem_ke import ML_KEM_SIZES, MlKemKeyExchange
from ikev2.crypto.modp import MODP_GENERATOR, MODP_PRIMES
from ikev2.enums import KeId

# Private exponent sizes for MODP, in bits: at least twice the estimated strength of each
# group (RFC 3526 sec. 8 table, NIST SP 800-57), rounded up, so that the exponent is never
# the weak point. The weak groups 1/2/5 get 256 bits as well.
_MODP_EXPONENT_BITS: dict[KeId, int] = {
    KeId.MODP_768: 256,
    KeId.MODP_1024: 256,
    KeId.MODP_1536: 256,
    KeId.MODP_2048: 256,
    KeId.MODP_3072: 320,
    KeId.MODP_4096: 384,
    KeId.MODP_6144: 448,
    KeId.MODP_8192: 512,
}

_EC_CURVES: dict[KeId, type[ec.EllipticCurve]] = {
    KeId.ECP_256: ec.SECP256R1,
    KeId.ECP_384: ec.SECP384R1,
    KeId.ECP_521: ec.SECP521R1,
    KeId.ECP_192: ec.SECP192R1,
    KeId.ECP_224: ec.SECP224R1,
    KeId.BRAINPOOL_P256: ec.BrainpoolP256R1,
    KeId.BRAINPOOL_P384: ec.BrainpoolP384R1,
    KeId.BRAINPOOL_P512: ec.BrainpoolP512R1,
}
# BRAINPOOL_P224 (27) has no curve in OpenSSL's default provider as used by cryptography.

_ML_KEM_METHODS = (KeId.ML_KEM_512, KeId.ML_KEM_768, KeId.ML_KEM_1024)


class ModpKeyExchange(KeyExchange):
    """Finite-field Diffie-Hellman over an IKE MODP group (generator 2)."""

    def __init__(self, method: KeId, private: bytes | None = None, rng: Rng | None = None) -> None:
        self.method = method
        self._prime = MODP_PRIMES[method]
        self.payload_length = self.peer_payload_length = (self._prime.bit_length() + 7) // 8
        if private is None:
            bits = _MODP_EXPONENT_BITS[method]
            exponent = 0
            while exponent < 2:
                exponent = (
                    secrets.randbits(bits) if rng is None else int.from_bytes(rng(bits // 8), "big")
                )
        else:
            exponent = int.from_bytes(private, "big")
            if not 1 < exponent < self._prime - 1:
                raise ValueError("MODP private exponent must be in 1 < x < p-1")
        self._exponent = exponent
        self._public = pow(MODP_GENERATOR, exponent, self._prime).to_bytes(
            self.payload_length, "big"
        )

    def our_payload(self) -> bytes:
        return self._public

    def compute(self, peer_payload: bytes) -> bytes:
        self._check_length(peer_payload)
        peer_value = int.from_bytes(peer_payload, "big")
        # RFC 7296 sec. 3.4 / NIST SP 800-56A 5.6.2.3.1: 1 and p-1 (and 0, p and above) give a
        # secret an attacker knows.
        if not 1 < peer_value < self._prime - 1:
            raise invalid_key_exchange_data(self.method, "public value outside 1 < y < p-1")
        shared = pow(peer_value, self._exponent, self._prime)
        return shared.to_bytes(self.payload_length, "big")


class EcpKeyExchange(KeyExchange):
    """ECDH over a prime curve; KE data x || y, shared secret x (RFC 5903 sec. 7)."""

    def __init__(self, method: KeId, private: bytes | None = None, rng: Rng | None = None) -> None:
        self.method = method
        self._curve = _EC_CURVES[method]()
        self._coordinate_length = (self._curve.key_size + 7) // 8
        self.payload_length = self.peer_payload_length = 2 * self._coordinate_length
        if private is not None:
            try:
                self._private_key = ec.derive_private_key(
                    int.from_bytes(private, "big"), self._curve
                )
            except ValueError as exc:
                raise ValueError(f"invalid {method.name} private value: {exc}") from None
        elif rng is not None:
            self._private_key = self._scalar_from(rng)
        else:
            self._private_key = ec.generate_private_key(self._curve)
        numbers = self._private_key.public_key().public_numbers()
        self._public = numbers.x.to_bytes(self._coordinate_length, "big") + numbers.y.to_bytes(
            self._coordinate_length, "big"
        )

    def _scalar_from(self, rng: Rng) -> ec.EllipticCurvePrivateKey:
        """A private scalar 1 <= d < n drawn from ``rng`` by rejection sampling (FIPS 186-5
        A.4.2): key_size random bits, drawn again while OpenSSL refuses them as >= n or 0."""
        bits = self._curve.key_size
        while True:
            candidate = int.from_bytes(rng(self._coordinate_length), "big") >> (
                8 * self._coordinate_length - bits
            )
            try:
                return ec.derive_private_key(candidate, self._curve)
            except ValueError:
                continue

    def our_payload(self) -> bytes:
        return self._public

    def compute(self, peer_payload: bytes) -> bytes:
        self._check_length(peer_payload)
        # The uncompressed SEC1 encoding is 0x04 || x || y; OpenSSL checks that the
        # coordinates are below the field prime and the point is on the curve. The point at
        # infinity has no x || y encoding, so it cannot get through here.
        try:
            peer_key = ec.EllipticCurvePublicKey.from_encoded_point(
                self._curve, b"\x04" + peer_payload
            )
            shared = self._private_key.exchange(ec.ECDH(), peer_key)
        except ValueError:
            raise invalid_key_exchange_data(self.method, "not a point on the curve") from None
        return shared.rjust(self._coordinate_length, b"\x00")


class MontgomeryKeyExchange(KeyExchange):
    """X25519 / X448 (RFC 7748) as IKEv2 groups 31 / 32 (RFC 8031)."""

    def __init__(self, method: KeId, private: bytes | None = None, rng: Rng | None = None) -> None:
        self.method = method
        self._private_type: type[x25519.X25519PrivateKey] | type[x448.X448PrivateKey]
        if method == KeId.CURVE25519:
            self._private_type = x25519.X25519PrivateKey
            self.payload_length = self.peer_payload_length = 32
        else:
            self._private_type = x448.X448PrivateKey
            self.payload_length = self.peer_payload_length = 56
        if private is None and rng is not None:
            private = rng(self.payload_length)  # RFC 7748 sec. 5: any 32/56 octets
        if private is None:
            self._private_key = self._private_type.generate()
        else:
            if len(private) != self.payload_length:
                raise ValueError(
                    f"{method.name} private value must be {self.payload_length} octets"
                )
            self._private_key = self._private_type.from_private_bytes(private)
        self._public = self._private_key.public_key().public_bytes_raw()

    def our_payload(self) -> bytes:
        return self._public

    def compute(self, peer_payload: bytes) -> bytes:
        self._check_length(peer_payload)
        try:
            # One branch per curve: each private key takes only its own curve's public key.
            if isinstance(self._private_key, x25519.X25519PrivateKey):
                shared = self._private_key.exchange(
                    x25519.X25519PublicKey.from_public_bytes(peer_payload)
                )
            else:
                shared = self._private_key.exchange(
                    x448.X448PublicKey.from_public_bytes(peer_payload)
                )
        except ValueError:
            # cryptography refuses the all-zero result itself (small-order input).
            raise invalid_key_exchange_data(
                self.method, "gives the all-zero shared secret"
            ) from None
        # RFC 8031 sec. 2.3: the recipient MUST check for the all-zero value; checked here too
        # so that the rule does not rest on a library detail.
        if not any(shared):
            raise invalid_key_exchange_data(self.method, "gives the all-zero shared secret")
        return shared


SUPPORTED_KE_METHODS: frozenset[KeId] = frozenset(
    [*MODP_PRIMES, *_EC_CURVES, KeId.CURVE25519, KeId.CURVE448, *_ML_KEM_METHODS]
)


def new_key_exchange(
    method: KeId | int, private: bytes | None = None, *, rng: Rng | None = None
) -> KeyExchange:
    """A fresh key exchange for ``method``.

    ``private`` makes it deterministic (known-answer tests): for MODP the exponent
    (big-endian), for ECP the scalar (big-endian), for Curve25519/448 the raw 32/56-octet
    private key, for ML-KEM see :mod:`ikev2.crypto.mlkem_ke`. Never use a fixed ``private``
    in production. Without ``private``, ``rng`` (if given) supplies every random value of
    the exchange, so a seeded rng reproduces it (the engine's injected rng, ``aioipsec
    explain --seed``); without either, OpenSSL / the OS do.
    """
    try:
        method = KeId(method)
    except ValueError:
        raise ValueError(f"unknown key exchange method {method}") from None
    if method in MODP_PRIMES:
        return ModpKeyExchange(method, private, rng)
    if method in _EC_CURVES:
        return EcpKeyExchange(method, private, rng)
    if method in (KeId.CURVE25519, KeId.CURVE448):
        return MontgomeryKeyExchange(method, private, rng)
    if method in _ML_KEM_METHODS:
        return MlKemKeyExchange(method, private, rng)
    raise ValueError(f"key exchange method {method.name} is not implemented")


def key_exchange_data_length(method: KeId) -> int | None:
    """Octets of Key Exchange Data an initiator sends for ``method`` (None: unsupported).

    Lets a parser reject a KE payload of the wrong length before any computation.
    """
    if method in MODP_PRIMES:
        return (MODP_PRIMES[method].bit_length() + 7) // 8
    if method in _EC_CURVES:
        return 2 * ((_EC_CURVES[method]().key_size + 7) // 8)
    if method == KeId.CURVE25519:
        return 32
    if method == KeId.CURVE448:
        return 56
    if method in _ML_KEM_METHODS:
        return ML_KEM_SIZES[method][0]
    return None
