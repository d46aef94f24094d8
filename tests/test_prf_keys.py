"""PRF, prf+ and key derivation (RFC 7296 sec. 2.13-2.18, RFC 9370 sec. 2.2.2).

The known-answer vectors of aioipsec/vectors/*.json run in test_vectors.py; this file checks
the rules around them: the prf+ iteration limit, key splitting order, the AES-PRF nonce rule,
and RFC 9370 key updates, against values computed independently with hmac/hashlib or the RFC text.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest

from ikev2.crypto.keys import (
    ChildKeys,
    IkeKeys,
    compute_skeyseed,
    derive_child_keymat,
    derive_ike_keys,
    derive_rekeyed_ike_keys,
    split_child_keymat,
    update_ike_keys_additional_ke,
)
from ikev2.crypto.prf import PRF_PLUS_MAX_ITERATIONS, Prf, aes_xcbc_mac
from ikev2.enums import NotifyType, PrfId
from ikev2.errors import ProtocolError
from tests.convert_reference import RFC3566_XCBC_MACS


def _reference_prf_plus(name: str, key: bytes, seed: bytes, length: int) -> bytes:
    """prf+ written out as RFC 7296 sec. 2.13 states it, with plain hmac."""
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(key, block + seed + bytes([counter]), name).digest()
        out += block
        counter += 1
    return out[:length]


@pytest.mark.parametrize(
    ("prf_id", "name", "size"),
    [
        (PrfId.PRF_HMAC_MD5, "md5", 16),
        (PrfId.PRF_HMAC_SHA1, "sha1", 20),
        (PrfId.PRF_HMAC_SHA2_256, "sha256", 32),
        (PrfId.PRF_HMAC_SHA2_384, "sha384", 48),
        (PrfId.PRF_HMAC_SHA2_512, "sha512", 64),
    ],
)
def test_hmac_prf_matches_hmac_module(prf_id: PrfId, name: str, size: int) -> None:
    prf = Prf(prf_id)
    assert prf.output_size == prf.key_size == size
    assert prf(b"key", b"data") == hmac.new(b"key", b"data", name).digest()
    assert prf.plus(b"k" * 7, b"seed", 1000) == _reference_prf_plus(name, b"k" * 7, b"seed", 1000)


def test_prf_plus_limit_is_255_iterations() -> None:
    prf = Prf(PrfId.PRF_HMAC_SHA2_256)
    assert len(prf.plus(b"k", b"s", 255 * 32)) == 255 * 32
    assert PRF_PLUS_MAX_ITERATIONS == 255
    with pytest.raises(ProtocolError) as info:
        prf.plus(b"k", b"s", 255 * 32 + 1)
    assert info.value.notify == NotifyType.INVALID_SYNTAX


def test_prf_plus_counter_is_one_octet_starting_at_one() -> None:
    prf = Prf(PrfId.PRF_HMAC_SHA1)
    t1 = hmac.new(b"K", b"S\x01", "sha1").digest()
    t2 = hmac.new(b"K", t1 + b"S\x02", "sha1").digest()
    assert prf.plus(b"K", b"S", 40) == t1 + t2


def test_prf_plus_zero_length() -> None:
    assert Prf(PrfId.PRF_HMAC_SHA2_256).plus(b"k", b"s", 0) == b""


# RFC 3566 sec. 4 (AES-XCBC-MAC, full 128-bit output before the -96 truncation) with key
# 000102..0f, the table the vector converter also writes into ike_prf_aes.json.
_XCBC_KEY = bytes(range(16))


@pytest.mark.parametrize(("message_length", "mac_hex"), RFC3566_XCBC_MACS)
def test_aes_xcbc_mac_rfc3566(message_length: int, mac_hex: str) -> None:
    assert aes_xcbc_mac(_XCBC_KEY, bytes(range(message_length))).hex() == mac_hex


def test_unknown_prf_is_refused() -> None:
    with pytest.raises(ValueError):
        Prf(PrfId.PRF_HMAC_TIGER)
    with pytest.raises(ValueError):
        Prf(99)


# --- IKE SA keys -----------------------------------------------------------------------------
_NI = bytes.fromhex("00112233445566778899aabbccddeeff")
_NR = bytes.fromhex("ffeeddccbbaa99887766554433221100")
_SPI_I = bytes.fromhex("0102030405060708")
_SPI_R = bytes.fromhex("1112131415161718")
_SECRET = bytes(range(32))


def test_ike_keys_split_order_and_lengths() -> None:
    prf = Prf(PrfId.PRF_HMAC_SHA2_256)
    keys = derive_ike_keys(prf, _SECRET, _NI, _NR, _SPI_I, _SPI_R, 32, 32)
    skeyseed = hmac.new(_NI + _NR, _SECRET, "sha256").digest()
    assert keys.skeyseed == skeyseed
    stream = _reference_prf_plus("sha256", skeyseed, _NI + _NR + _SPI_I + _SPI_R, 7 * 32)
    parts = [stream[i : i + 32] for i in range(0, 7 * 32, 32)]
    assert [keys.sk_d, keys.sk_ai, keys.sk_ar, keys.sk_ei, keys.sk_er, keys.sk_pi, keys.sk_pr] == (
        parts
    )


def test_ike_keys_aead_has_empty_integrity_keys() -> None:
    prf = Prf(PrfId.PRF_HMAC_SHA2_384)
    keys = derive_ike_keys(prf, _SECRET, _NI, _NR, _SPI_I, _SPI_R, 36, 0)
    assert keys.sk_ai == keys.sk_ar == b""
    assert len(keys.sk_ei) == len(keys.sk_er) == 36
    assert len(keys.sk_d) == len(keys.sk_pi) == len(keys.sk_pr) == 48


def test_key_material_never_in_repr() -> None:
    keys = derive_ike_keys(Prf(PrfId.PRF_HMAC_SHA2_256), _SECRET, _NI, _NR, _SPI_I, _SPI_R, 16, 16)
    assert keys.sk_d.hex() not in repr(keys)
    child = split_child_keymat(bytes(range(64)), 16, 16)
    assert bytes(range(16)).hex() not in repr(child)
    assert isinstance(keys, IkeKeys)


@pytest.mark.parametrize("prf_id", [PrfId.PRF_AES128_XCBC, PrfId.PRF_AES128_CMAC])
def test_aes_prf_skeyseed_uses_first_64_bits_of_each_nonce(prf_id: PrfId) -> None:
    # RFC 7296 sec. 2.14: "only the first 64 bits of Ni and the first 64 bits of Nr are used
    # in calculating SKEYSEED, but all the bits are used for input to the prf+ function."
    prf = Prf(prf_id)
    ni = bytes(range(32))
    nr = bytes(range(100, 132))
    skeyseed = compute_skeyseed(prf, _SECRET, ni, nr)
    assert skeyseed == prf(ni[:8] + nr[:8], _SECRET)
    keys = derive_ike_keys(prf, _SECRET, ni, nr, _SPI_I, _SPI_R, 16, 16)
    assert keys.sk_d == prf.plus(skeyseed, ni + nr + _SPI_I + _SPI_R, 16)
    assert len(keys.sk_d) == 16


def test_rekey_uses_old_prf_for_skeyseed_and_new_prf_for_keys() -> None:
    old, new = Prf(PrfId.PRF_HMAC_SHA1), Prf(PrfId.PRF_HMAC_SHA2_512)
    sk_d_old = bytes(range(20))
    keys = derive_rekeyed_ike_keys(old, sk_d_old, new, _SECRET, _NI, _NR, _SPI_I, _SPI_R, 32, 0)
    skeyseed = hmac.new(sk_d_old, _SECRET + _NI + _NR, "sha1").digest()
    assert keys.skeyseed == skeyseed
    stream = _reference_prf_plus("sha512", skeyseed, _NI + _NR + _SPI_I + _SPI_R, 64)
    assert keys.sk_d == stream


def test_rekey_with_additional_key_exchanges_appends_secrets() -> None:
    prf = Prf(PrfId.PRF_HMAC_SHA2_256)
    sk_d = bytes(32)
    extra = [b"\x01" * 32, b"\x02" * 32]
    keys = derive_rekeyed_ike_keys(
        prf, sk_d, prf, _SECRET, _NI, _NR, _SPI_I, _SPI_R, 32, 0, additional_shared_secrets=extra
    )
    assert keys.skeyseed == hmac.new(sk_d, _SECRET + b"".join(extra) + _NI + _NR, "sha256").digest()


def test_rfc9370_intermediate_update_recomputes_all_keys() -> None:
    prf = Prf(PrfId.PRF_HMAC_SHA2_256)
    keys0 = derive_ike_keys(prf, _SECRET, _NI, _NR, _SPI_I, _SPI_R, 36, 0)
    mlkem_secret = hashlib.sha256(b"SK(1)").digest()
    keys1 = update_ike_keys_additional_ke(prf, keys0, mlkem_secret, _NI, _NR, _SPI_I, _SPI_R, 36, 0)
    skeyseed1 = hmac.new(keys0.sk_d, mlkem_secret + _NI + _NR, "sha256").digest()
    assert keys1.skeyseed == skeyseed1
    stream = _reference_prf_plus("sha256", skeyseed1, _NI + _NR + _SPI_I + _SPI_R, 32 + 72 + 64)
    assert keys1.sk_d == stream[:32]
    assert keys1.sk_ei == stream[32:68]
    assert keys1.sk_er == stream[68:104]
    assert keys1.sk_pi == stream[104:136]
    assert keys1.sk_pr == stream[136:168]
    assert keys1.sk_ei != keys0.sk_ei


# --- Child SA --------------------------------------------------------------------------------
def test_child_keymat_without_and_with_pfs() -> None:
    prf = Prf(PrfId.PRF_HMAC_SHA2_256)
    sk_d = bytes(range(32))
    plain = derive_child_keymat(prf, sk_d, _NI, _NR, None, 72)
    assert plain == _reference_prf_plus("sha256", sk_d, _NI + _NR, 72)
    pfs = derive_child_keymat(prf, sk_d, _NI, _NR, _SECRET, 72)
    assert pfs == _reference_prf_plus("sha256", sk_d, _SECRET + _NI + _NR, 72)
    with pytest.raises(ValueError):
        derive_child_keymat(prf, sk_d, _NI, _NR, None, 72, additional_shared_secrets=[b"x"])


def test_split_child_keymat_initiator_to_responder_first() -> None:
    keymat = bytes(range(104))
    keys = split_child_keymat(keymat, 20, 32)
    assert isinstance(keys, ChildKeys)
    assert keys.encr_i2r == keymat[0:20]
    assert keys.integ_i2r == keymat[20:52]
    assert keys.encr_r2i == keymat[52:72]
    assert keys.integ_r2i == keymat[72:104]


def test_split_child_keymat_too_short() -> None:
    with pytest.raises(ValueError):
        split_child_keymat(bytes(71), 36, 0)
    aead = split_child_keymat(bytes(range(72)), 36, 0)
    assert aead.integ_i2r == aead.integ_r2i == b""
    assert aead.encr_r2i == bytes(range(36, 72))
