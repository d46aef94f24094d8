"""ML-KEM (FIPS 203) as an IKEv2 key exchange method (IANA 35/36/37).

draft-ietf-ipsecme-ikev2-mlkem: the initiator's KE payload carries the encapsulation key
``ek``, the responder's carries the ciphertext ``c``; the shared secret is the 32-octet
``K``. Used as the only method or as an RFC 9370 additional key exchange (ADDKE1..7).

Role by call order (docs/architecture.md): calling ``our_payload()`` first makes this the
initiator (a key pair is generated, ``compute(c)`` decapsulates); calling ``compute(ek)``
first makes it the responder (it encapsulates to ``ek``, ``our_payload()`` is then ``c``).

Deterministic values (``private=``): 64 octets ``d || z`` (the FIPS 203 ML-KEM.KeyGen_internal
seed, the same 64-octet seed ``cryptography``'s ``from_seed_bytes`` takes), 32 octets ``m``
(the encapsulation randomness of ML-KEM.Encaps_internal, for a responder), or 96 octets
``d || z || m`` for either role. Or ``rng=``: the seed (initiator) or ``m`` (responder)
is drawn from it when the role is known, so a seeded rng reproduces the exchange.

Backends: ML-KEM-768/1024 with random values use OpenSSL through ``cryptography`` (its
``MLKEM768PrivateKey``/``MLKEM1024PrivateKey``; it has no ML-KEM-512 and no deterministic
encapsulation). ML-KEM-512, and any encapsulation with a given ``m``, use the pure-Python
FIPS 203 implementation in :mod:`ikev2.crypto.mlkem`, which the tests check against
``cryptography`` and the liboqs KAT.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import mlkem as openssl_mlkem

from ikev2.crypto import mlkem as pure_mlkem
from ikev2.crypto.ke_base import KeyExchange, Rng, invalid_key_exchange_data
from ikev2.enums import KeId

# KeId -> (encapsulation key octets, ciphertext octets); FIPS 203 sec. 8 table 3.
ML_KEM_SIZES: dict[KeId, tuple[int, int]] = {
    KeId.ML_KEM_512: (800, 768),
    KeId.ML_KEM_768: (1184, 1088),
    KeId.ML_KEM_1024: (1568, 1568),
}

_PARAMETER_SETS = {
    KeId.ML_KEM_512: pure_mlkem.ML_KEM_512,
    KeId.ML_KEM_768: pure_mlkem.ML_KEM_768,
    KeId.ML_KEM_1024: pure_mlkem.ML_KEM_1024,
}

_OpenSslPrivateKey = openssl_mlkem.MLKEM768PrivateKey | openssl_mlkem.MLKEM1024PrivateKey
_OpenSslPublicKey = openssl_mlkem.MLKEM768PublicKey | openssl_mlkem.MLKEM1024PublicKey

_OPENSSL_KEYS: dict[KeId, tuple[type[_OpenSslPrivateKey], type[_OpenSslPublicKey]]] = {
    KeId.ML_KEM_768: (openssl_mlkem.MLKEM768PrivateKey, openssl_mlkem.MLKEM768PublicKey),
    KeId.ML_KEM_1024: (openssl_mlkem.MLKEM1024PrivateKey, openssl_mlkem.MLKEM1024PublicKey),
}


class MlKemKeyExchange(KeyExchange):
    """One ML-KEM exchange; see the module docstring for the role rules."""

    def __init__(self, method: KeId, private: bytes | None = None, rng: Rng | None = None) -> None:
        if method not in ML_KEM_SIZES:
            raise ValueError(f"{method!r} is not an ML-KEM method")
        self.method = method
        self._params = _PARAMETER_SETS[method]
        self._ek_length, self._ct_length = ML_KEM_SIZES[method]
        self._keygen_seed: bytes | None = None
        self._encaps_randomness: bytes | None = None
        if private is not None:
            if len(private) == 64:
                self._keygen_seed = private
            elif len(private) == 32:
                self._encaps_randomness = private
            elif len(private) == 96:
                self._keygen_seed, self._encaps_randomness = private[:64], private[64:]
            else:
                raise ValueError("ML-KEM private value must be 32, 64 or 96 octets")
        self._rng = rng
        self._role: str | None = None
        self._payload: bytes | None = None
        # The pure-Python dk (octets) or OpenSSL's key; set by our_payload().
        self._decapsulation_key: bytes | _OpenSslPrivateKey | None = None
        # Lengths as seen before the role is known: an initiator sends ek, expects c.
        self.payload_length = self._ek_length
        self.peer_payload_length = self._ct_length

    # -- initiator -------------------------------------------------------------------------
    def our_payload(self) -> bytes:
        if self._payload is not None:
            return self._payload
        if self._role == "responder":
            raise RuntimeError("ML-KEM responder has no payload before compute()")
        self._role = "initiator"
        if self._keygen_seed is None and self._rng is not None:
            self._keygen_seed = self._rng(64)
        openssl_types = _OPENSSL_KEYS.get(self.method)
        if openssl_types is not None:
            private_type = openssl_types[0]
            key = (
                private_type.generate()
                if self._keygen_seed is None
                else private_type.from_seed_bytes(self._keygen_seed)
            )
            self._decapsulation_key = key
            self._payload = key.public_key().public_bytes_raw()
        else:
            seed = self._keygen_seed
            if seed is None:
                seed = pure_mlkem.random_bytes(64)
            ek, dk = pure_mlkem.keygen_internal(self._params, seed[:32], seed[32:])
            self._decapsulation_key = dk
            self._payload = ek
        return self._payload

    def compute(self, peer_payload: bytes) -> bytes:
        if self._role is None:
            self._role = "responder"
            self.payload_length, self.peer_payload_length = self._ct_length, self._ek_length
            return self._encapsulate(peer_payload)
        if self._role == "responder":
            raise RuntimeError("ML-KEM compute() called twice")
        return self._decapsulate(peer_payload)

    def _decapsulate(self, ciphertext: bytes) -> bytes:
        self._check_length(ciphertext)
        key = self._decapsulation_key
        if key is None:
            raise RuntimeError("ML-KEM initiator has no key pair: our_payload() failed")
        if isinstance(key, bytes):
            return pure_mlkem.decaps(self._params, key, ciphertext)
        try:
            return key.decapsulate(ciphertext)
        except ValueError:
            # FIPS 203 decapsulation has implicit rejection: any well-sized ciphertext gives
            # a (pseudorandom) key; only a malformed one can fail here.
            raise invalid_key_exchange_data(self.method, "malformed ciphertext") from None

    # -- responder -------------------------------------------------------------------------
    def _encapsulate(self, encapsulation_key: bytes) -> bytes:
        self._check_length(encapsulation_key)
        # FIPS 203 sec. 7.2 input check: every 12-bit coefficient of ek must be below q.
        if not pure_mlkem.encapsulation_key_is_valid(self._params, encapsulation_key):
            raise invalid_key_exchange_data(
                self.method, "encapsulation key fails the modulus check"
            )
        if self._encaps_randomness is None and self._rng is not None:
            self._encaps_randomness = self._rng(32)
        openssl_types = _OPENSSL_KEYS.get(self.method)
        if openssl_types is not None and self._encaps_randomness is None:
            try:
                public_key = openssl_types[1].from_public_bytes(encapsulation_key)
                shared, ciphertext = public_key.encapsulate()
            except ValueError:
                raise invalid_key_exchange_data(self.method, "invalid encapsulation key") from None
        else:
            randomness = self._encaps_randomness
            if randomness is None:
                randomness = pure_mlkem.random_bytes(32)
            shared, ciphertext = pure_mlkem.encaps_internal(
                self._params, encapsulation_key, randomness
            )
        self._payload = ciphertext
        return shared
