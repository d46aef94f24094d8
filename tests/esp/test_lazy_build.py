"""EspSa builds its cipher objects and per-packet functions on first use (issue 17:
memory per tunnel), with every check still done when the SA is installed."""

from __future__ import annotations

import os

import pytest

from esp.errors import InvalidKey, UnsupportedAlgorithm
from esp.sa import EspSa
from esp.transforms import ENCR_INFO, make_transform, transform_layout
from ikev2.enums import EncrId, IntegId

INNER = bytes((0x45, 0, 0, 28)) + bytes(24)


def _key(encr: EncrId) -> bytes:
    info = ENCR_INFO[encr]
    return os.urandom(info.key_sizes[-1] + info.salt_size)


@pytest.mark.parametrize("encr", sorted(ENCR_INFO))
def test_layout_matches_the_transform(encr: EncrId) -> None:
    integ = IntegId.NONE if ENCR_INFO[encr].aead else IntegId.AUTH_HMAC_SHA2_256_128
    key, integ_key = _key(encr), os.urandom(32) if integ else b""
    built = make_transform(encr, key, integ, integ_key, allow_null=True)
    layout = transform_layout(encr, key, integ, integ_key, allow_null=True)
    assert layout == (built.iv_size, built.icv_size, built.block_size)


def test_idle_sa_holds_no_cipher_and_first_packets_work() -> None:
    key = _key(EncrId.ENCR_AES_GCM_16)
    out = EspSa(0x1234, "out", EncrId.ENCR_AES_GCM_16, key)
    inbound = EspSa(0x1234, "in", EncrId.ENCR_AES_GCM_16, key)
    for sa in (out, inbound):
        with pytest.raises(AttributeError):  # the transform's slot is empty
            object.__getattribute__(sa, "_built")
        assert sa._keys is not None
    assert inbound.decrypt(out.encrypt(INNER)) == INNER
    assert object.__getattribute__(out, "_built") and out._keys is None
    assert object.__getattribute__(inbound, "_built") and inbound._keys is None
    assert not hasattr(type(out), "__getattr__")  # it would slow every attribute look-up
    assert inbound.decrypt(out.encrypt(INNER)) == INNER
    assert (out.seq, inbound.packets_in) == (2, 2)
    with pytest.raises(ValueError, match="decrypt on an outbound SA"):
        out.decrypt(b"")
    with pytest.raises(AttributeError):
        _ = out.no_such_attribute  # type: ignore[attr-defined]  # the point of the test


def test_checks_still_at_install() -> None:
    with pytest.raises(InvalidKey):
        EspSa(0x1234, "in", EncrId.ENCR_AES_GCM_16, bytes(5))
    with pytest.raises(UnsupportedAlgorithm):
        EspSa(0x1234, "in", EncrId.ENCR_NULL, b"", IntegId.AUTH_HMAC_SHA2_256_128, bytes(32))
    with pytest.raises(UnsupportedAlgorithm):
        EspSa(0x1234, "in", EncrId.ENCR_AES_CBC, bytes(32))


def test_no_instance_dict() -> None:
    """Every attribute an SA sets is a slot: no per-SA dict (memory per tunnel)."""
    key = _key(EncrId.ENCR_AES_GCM_16)
    out = EspSa(0x1234, "out", EncrId.ENCR_AES_GCM_16, key, tfc_pad_to=64)
    inbound = EspSa(0x1234, "in", EncrId.ENCR_AES_GCM_16, key)
    for _ in range(2):
        assert inbound.decrypt(out.encrypt(INNER)) == INNER
    out.expire(hard=False)
    inbound.check_time(1e9)
    assert not vars(out) and not vars(inbound)
