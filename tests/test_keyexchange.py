"""Key exchange methods: agreement, peer-value validation, deterministic values.

Known-answer vectors (RFC 5903, RFC 7748, strongSwan KATs, liboqs ML-KEM KAT) run in
test_vectors.py; here: both sides agree for every method, every class of invalid peer value
of bad-inputs.md is refused with INVALID_SYNTAX, and the MODP primes follow the RFC formula.
"""

from __future__ import annotations

import os
import random

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, mlkem, x25519
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ikev2.crypto import mlkem as pure_mlkem
from ikev2.crypto.keyexchange import (
    SUPPORTED_KE_METHODS,
    key_exchange_data_length,
    new_key_exchange,
)
from ikev2.crypto.modp import MODP_PI_OFFSETS, MODP_PRIMES
from ikev2.enums import KeId, NotifyType
from ikev2.errors import ProtocolError

_DH_METHODS = sorted(m for m in SUPPORTED_KE_METHODS if m < KeId.ML_KEM_512)
_KEM_METHODS = [KeId.ML_KEM_512, KeId.ML_KEM_768, KeId.ML_KEM_1024]


def _agree(method: KeId) -> tuple[bytes, bytes]:
    initiator = new_key_exchange(method)
    responder = new_key_exchange(method)
    if method in _KEM_METHODS:
        ek = initiator.our_payload()
        secret_r = responder.compute(ek)
        secret_i = initiator.compute(responder.our_payload())
    else:
        secret_i = initiator.compute(responder.our_payload())
        secret_r = responder.compute(initiator.our_payload())
    return secret_i, secret_r


@pytest.mark.parametrize("method", _DH_METHODS + _KEM_METHODS, ids=lambda m: m.name)
def test_both_sides_agree(method: KeId) -> None:
    secret_i, secret_r = _agree(method)
    assert secret_i == secret_r
    assert any(secret_i)
    assert len(new_key_exchange(method).our_payload()) == key_exchange_data_length(method)


@pytest.mark.parametrize("method", _DH_METHODS + _KEM_METHODS, ids=lambda m: m.name)
def test_wrong_length_is_invalid_syntax(method: KeId) -> None:
    ke = new_key_exchange(method)
    if method not in _KEM_METHODS:
        good = new_key_exchange(method).our_payload()
    else:
        good = new_key_exchange(method).our_payload()  # an ek, for a responder
    for bad in (good[:-1], good + b"\x00", b""):
        with pytest.raises(ProtocolError) as info:
            new_key_exchange(method).compute(bad)
        assert info.value.notify == NotifyType.INVALID_SYNTAX
    assert ke.method == method


@pytest.mark.parametrize("method", sorted(MODP_PRIMES), ids=lambda m: m.name)
def test_modp_rejects_out_of_range_values(method: KeId) -> None:
    p = MODP_PRIMES[method]
    size = (p.bit_length() + 7) // 8
    ke = new_key_exchange(method)
    for value in (0, 1, p - 1, p, p + 1, 2 ** (8 * size) - 1):
        with pytest.raises(ProtocolError) as info:
            ke.compute(value.to_bytes(size, "big"))
        assert info.value.notify == NotifyType.INVALID_SYNTAX
    # 2 and p-2 are the edge of the valid range
    assert len(ke.compute((2).to_bytes(size, "big"))) == size
    assert len(ke.compute((p - 2).to_bytes(size, "big"))) == size


def _machin_pi_scaled(bits: int) -> int:
    """floor(pi * 2^bits), via Machin's formula in integer arithmetic (plus guard bits)."""
    guard = 64
    scale = 1 << (bits + guard)

    def arctan_inverse(x: int) -> int:
        total, term, n, sign = 0, scale // x, 1, 1
        x2 = x * x
        while term:
            total += sign * (term // n)
            term //= x2
            n += 2
            sign = -sign
        return total

    return (4 * (4 * arctan_inverse(5) - arctan_inverse(239))) >> guard


@pytest.mark.parametrize("method", sorted(MODP_PRIMES), ids=lambda m: m.name)
def test_modp_prime_follows_rfc_formula(method: KeId) -> None:
    # RFC 2409 sec. 6 / RFC 3526: p = 2^n - 2^(n-64) - 1 + 2^64 * (floor(2^(n-130) pi) + k)
    n = MODP_PRIMES[method].bit_length()
    expected = (
        2**n - 2 ** (n - 64) - 1 + 2**64 * (_machin_pi_scaled(n - 130) + MODP_PI_OFFSETS[method])
    )
    assert MODP_PRIMES[method] == expected


def test_modp_deterministic_private_and_padding() -> None:
    p = MODP_PRIMES[KeId.MODP_2048]
    ke = new_key_exchange(KeId.MODP_2048, private=(5).to_bytes(1, "big"))
    assert ke.our_payload() == (32).to_bytes(256, "big")  # 2^5, left-padded to 256 octets
    secret = ke.compute((3).to_bytes(256, "big"))
    assert secret == pow(3, 5, p).to_bytes(256, "big")
    with pytest.raises(ValueError):
        new_key_exchange(KeId.MODP_2048, private=b"\x01")


_EC_METHODS = {
    KeId.ECP_256: ec.SECP256R1(),
    KeId.ECP_384: ec.SECP384R1(),
    KeId.ECP_521: ec.SECP521R1(),
}


@pytest.mark.parametrize("method", list(_EC_METHODS), ids=lambda m: m.name)
def test_ecp_rejects_points_off_the_curve(method: KeId) -> None:
    ke = new_key_exchange(method)
    good = new_key_exchange(method).our_payload()
    half = len(good) // 2
    x, y = good[:half], good[half:]
    flipped_y = y[:-1] + bytes([y[-1] ^ 1])
    all_zero = bytes(len(good))  # (0, 0): how the identity is sometimes (mis)encoded
    all_ones = b"\xff" * len(good)  # coordinates >= p
    for bad in (x + flipped_y, all_zero, all_ones):
        with pytest.raises(ProtocolError) as info:
            ke.compute(bad)
        assert info.value.notify == NotifyType.INVALID_SYNTAX


@pytest.mark.parametrize("method", list(_EC_METHODS), ids=lambda m: m.name)
def test_ecp_secret_is_x_coordinate_only(method: KeId) -> None:
    curve = _EC_METHODS[method]
    peer = ec.generate_private_key(curve)
    ours = new_key_exchange(method, private=(123456789).to_bytes(4, "big"))
    numbers = peer.public_key().public_numbers()
    size = (curve.key_size + 7) // 8
    payload = numbers.x.to_bytes(size, "big") + numbers.y.to_bytes(size, "big")
    our_key = ec.derive_private_key(123456789, curve)
    assert ours.compute(payload) == peer.exchange(ec.ECDH(), our_key.public_key())


# Small-order u-coordinates of Curve25519 (RFC 7748 sec. 6.1 and the "cr.yp.to/ecdh.html"
# list): each gives the all-zero shared secret, which RFC 8031 sec. 2.3 says to reject.
_X25519_SMALL_ORDER = [
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
]


@pytest.mark.parametrize("u_hex", _X25519_SMALL_ORDER)
def test_x25519_all_zero_secret_rejected(u_hex: str) -> None:
    ke = new_key_exchange(KeId.CURVE25519)
    with pytest.raises(ProtocolError) as info:
        ke.compute(bytes.fromhex(u_hex))
    assert info.value.notify == NotifyType.INVALID_SYNTAX


def test_x448_all_zero_secret_rejected() -> None:
    ke = new_key_exchange(KeId.CURVE448)
    for u in (bytes(56), b"\x01" + bytes(55)):
        with pytest.raises(ProtocolError):
            ke.compute(u)


def test_x25519_deterministic_private_matches_library() -> None:
    private = bytes(range(32))
    ke = new_key_exchange(KeId.CURVE25519, private=private)
    reference = x25519.X25519PrivateKey.from_private_bytes(private)
    assert ke.our_payload() == reference.public_key().public_bytes_raw()
    with pytest.raises(ValueError):
        new_key_exchange(KeId.CURVE25519, private=bytes(31))


def test_unknown_methods_refused() -> None:
    with pytest.raises(ValueError):
        new_key_exchange(1025)  # strongSwan CVE-2014-9221: group 1025
    with pytest.raises(ValueError):
        new_key_exchange(KeId.GOST3410_2012_256)
    assert key_exchange_data_length(KeId.GOST3410_2012_256) is None


# --- ML-KEM ----------------------------------------------------------------------------------
_OPENSSL = {
    KeId.ML_KEM_768: (pure_mlkem.ML_KEM_768, mlkem.MLKEM768PrivateKey),
    KeId.ML_KEM_1024: (pure_mlkem.ML_KEM_1024, mlkem.MLKEM1024PrivateKey),
}


@pytest.mark.parametrize("method", list(_OPENSSL), ids=lambda m: m.name)
def test_pure_mlkem_against_openssl(method: KeId) -> None:
    params, private_type = _OPENSSL[method]
    seed = os.urandom(64)
    ek, dk = pure_mlkem.keygen_internal(params, seed[:32], seed[32:])
    openssl_key = private_type.from_seed_bytes(seed)
    assert ek == openssl_key.public_key().public_bytes_raw()
    shared, ciphertext = openssl_key.public_key().encapsulate()
    assert pure_mlkem.decaps(params, dk, ciphertext) == shared
    shared2, ciphertext2 = pure_mlkem.encaps_internal(params, ek, os.urandom(32))
    assert openssl_key.decapsulate(ciphertext2) == shared2
    # implicit rejection agrees too: a modified ciphertext gives the same J(z || c)
    tampered = bytes([ciphertext[0] ^ 1]) + ciphertext[1:]
    assert pure_mlkem.decaps(params, dk, tampered) == openssl_key.decapsulate(tampered)
    assert pure_mlkem.decaps(params, dk, tampered) != shared


@pytest.mark.parametrize("method", _KEM_METHODS, ids=lambda m: m.name)
def test_mlkem_rejects_encapsulation_key_failing_modulus_check(method: KeId) -> None:
    ek = bytearray(new_key_exchange(method).our_payload())
    ek[0] = 0xFF
    ek[1] |= 0x0F  # first 12-bit coefficient = 0xfff >= q
    with pytest.raises(ProtocolError) as info:
        new_key_exchange(method).compute(bytes(ek))
    assert info.value.notify == NotifyType.INVALID_SYNTAX


@pytest.mark.parametrize("method", _KEM_METHODS, ids=lambda m: m.name)
def test_mlkem_deterministic_values(method: KeId) -> None:
    seed = bytes(range(64))
    m = bytes(range(100, 132))
    initiator = new_key_exchange(method, private=seed)
    again = new_key_exchange(method, private=seed)
    assert initiator.our_payload() == again.our_payload()
    responder = new_key_exchange(method, private=m)
    responder_again = new_key_exchange(method, private=m)
    secret_r = responder.compute(initiator.our_payload())
    assert responder_again.compute(initiator.our_payload()) == secret_r
    assert responder.our_payload() == responder_again.our_payload()
    assert initiator.compute(responder.our_payload()) == secret_r
    with pytest.raises(ValueError):
        new_key_exchange(method, private=bytes(33))


def test_mlkem_responder_role_and_initiator_length_check() -> None:
    responder = new_key_exchange(KeId.ML_KEM_768)
    ek = new_key_exchange(KeId.ML_KEM_768).our_payload()
    responder.compute(ek)
    assert len(responder.our_payload()) == 1088
    with pytest.raises(RuntimeError):
        responder.compute(ek)
    initiator = new_key_exchange(KeId.ML_KEM_768)
    initiator.our_payload()
    with pytest.raises(ProtocolError):
        initiator.compute(bytes(1087))


# cryptography deprecates finite-field DH (one reason MODP is done with pow() here).
@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
@pytest.mark.parametrize("method", [KeId.MODP_1024, KeId.MODP_2048], ids=lambda m: m.name)
def test_modp_against_openssl_dh(method: KeId) -> None:
    from cryptography.hazmat.primitives.asymmetric import dh

    p = MODP_PRIMES[method]
    size = (p.bit_length() + 7) // 8
    parameters = dh.DHParameterNumbers(p, 2).parameters()
    for _ in range(4):  # several, so that a short shared value (leading zeros) is likely met
        peer = parameters.generate_private_key()
        ours = new_key_exchange(method)
        peer_public = peer.public_key().public_numbers().y.to_bytes(size, "big")
        our_public = dh.DHPublicNumbers(
            int.from_bytes(ours.our_payload(), "big"), parameters.parameter_numbers()
        ).public_key()
        expected = peer.exchange(our_public).rjust(size, b"\x00")
        assert ours.compute(peer_public) == expected


@pytest.mark.parametrize("method", list(_EC_METHODS), ids=lambda m: m.name)
def test_ecp_private_out_of_range_refused(method: KeId) -> None:
    order_bytes = (_EC_METHODS[method].key_size + 7) // 8 + 1
    for private in (b"\x00", b"\xff" * order_bytes):
        with pytest.raises(ValueError):
            new_key_exchange(method, private=private)


# --- any input: accepted or ProtocolError, nothing else (the parser rule of ikev2.errors) -------
_FAST_METHODS = [m for m in _DH_METHODS if m not in (KeId.MODP_6144, KeId.MODP_8192)]


@pytest.mark.parametrize("method", _FAST_METHODS + _KEM_METHODS, ids=lambda m: m.name)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_peer_value_is_accepted_or_protocol_error(method: KeId, data: st.DataObject) -> None:
    length = key_exchange_data_length(method)
    assert length is not None
    size = data.draw(st.sampled_from([length, length, length - 1, length + 1, 0]))
    peer = data.draw(st.binary(min_size=size, max_size=size))
    ke = new_key_exchange(method)
    try:
        secret = ke.compute(peer)
    except ProtocolError as exc:
        assert exc.notify == NotifyType.INVALID_SYNTAX
    else:
        assert len(peer) == length
        assert isinstance(secret, bytes) and secret


@pytest.mark.parametrize(
    "method", [KeId.MODP_2048, KeId.ECP_521, KeId.BRAINPOOL_P256, KeId.CURVE25519, KeId.ML_KEM_512]
)
def test_rng_supplies_every_private_value(method: KeId) -> None:
    # Brainpool's order is well below 2^256, so its scalar needs rejection sampling; P-521's
    # 66 octets carry 7 bits too many.
    def run(seed: int) -> tuple[bytes, bytes, bytes]:
        generator = random.Random(seed)
        initiator = new_key_exchange(method, rng=generator.randbytes)
        responder = new_key_exchange(method, rng=generator.randbytes)
        first = initiator.our_payload()
        secret = responder.compute(first)
        assert initiator.compute(responder.our_payload()) == secret
        return first, responder.our_payload(), secret

    assert run(1) == run(1)
    assert run(1) != run(2)
