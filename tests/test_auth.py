"""AUTH payload computation (RFC 7296 sec. 2.15) and signatures (RFC 7427, RFC 4754).

PSK: the worked example in shared/reference/vectors/ikev2_worked_example_psk_auth.txt
(record C2: initiator PSK AUTH, PRF_HMAC_SHA1, with its expected AUTH value).
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

from ikev2.crypto.auth import (
    KEY_PAD,
    AuthenticationError,
    psk_auth,
    signed_octets,
    verify_psk_auth,
)
from ikev2.enums import NotifyType
from ikev2.errors import ProtocolError

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "reference" / "vectors"
PSK_FILE = VECTORS / "ikev2_worked_example_psk_auth.txt"


def _record(name: str) -> dict[str, str]:
    """The ``key = value`` lines of one ``[name ...]`` record (comments stripped)."""
    values: dict[str, str] = {}
    inside = False
    for line in PSK_FILE.read_text().splitlines():
        if line.startswith("["):
            inside = line.startswith(f"[{name}")
            continue
        if inside and "=" in line and not line.startswith("#"):
            key = line.split("=", 1)[0]
            value = line.rsplit("=", 1)[1]  # "AUTH = prf(...) = <hex>": the hex at the end
            values[key.strip()] = value.split("#", 1)[0].strip()
    return values


def hmac_sha1(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha1).digest()


def _derive_sk_pi(c2: dict[str, str]) -> bytes:
    """SK_pi for record C2 from its own inputs (RFC 7296 sec. 2.14, PRF_HMAC_SHA1,
    AES-CBC-128 + HMAC-SHA1-96 as in the IKE_SA_INIT request's proposal)."""
    ni, nr = bytes.fromhex(c2["Ni"]), bytes.fromhex(c2["Nr"])
    spis = bytes.fromhex(c2["SPIi"]) + bytes.fromhex(c2["SPIr"])
    skeyseed = hmac_sha1(ni + nr, bytes.fromhex(c2["g^ir"]))
    needed = 20 + 20 + 20 + 16 + 16 + 20 + 20  # SK_d, SK_ai, SK_ar, SK_ei, SK_er, SK_pi, SK_pr
    stream, block, counter = b"", b"", 1
    while len(stream) < needed:
        block = hmac_sha1(skeyseed, block + ni + nr + spis + bytes([counter]))
        stream += block
        counter += 1
    return stream[20 + 20 + 20 + 16 + 16 : 20 + 20 + 20 + 16 + 16 + 20]


@pytest.fixture(scope="module")
def c2() -> dict[str, str]:
    if not PSK_FILE.exists():
        pytest.fail(f"reference vector file missing: {PSK_FILE}")
    return _record("C2")


def test_key_pad_is_the_17_octets_of_rfc7296() -> None:
    assert KEY_PAD == b"Key Pad for IKEv2" and len(KEY_PAD) == 17


def test_psk_auth_worked_example(c2: dict[str, str]) -> None:
    sk_pi = _derive_sk_pi(c2)
    id_body = bytes.fromhex(c2["IDi_body"])
    assert hmac_sha1(sk_pi, id_body).hex() == c2["prf(SK_pi, IDi')"]
    octets = signed_octets(
        bytes.fromhex(c2["IKE_SA_INIT_request"]),
        bytes.fromhex(c2["Nr"]),
        hmac_sha1,
        sk_pi,
        id_body,
    )
    psk = bytes.fromhex(c2["PSK"])
    expected = c2["AUTH"]
    assert psk_auth(hmac_sha1, psk, octets).hex() == expected
    verify_psk_auth(hmac_sha1, psk, octets, bytes.fromhex(expected), peer_id="10.0.3.1")


def test_psk_auth_with_the_project_prf(c2: dict[str, str]) -> None:
    prf_module = pytest.importorskip("ikev2.crypto.prf")
    from ikev2.enums import PrfId

    prf = prf_module.Prf(PrfId.PRF_HMAC_SHA1)
    sk_pi = _derive_sk_pi(c2)
    octets = signed_octets(
        bytes.fromhex(c2["IKE_SA_INIT_request"]),
        bytes.fromhex(c2["Nr"]),
        prf,
        sk_pi,
        bytes.fromhex(c2["IDi_body"]),
    )
    assert psk_auth(prf, bytes.fromhex(c2["PSK"]), octets).hex() == (c2["AUTH"])


def test_wrong_psk_is_refused_without_leaking_it(c2: dict[str, str]) -> None:
    octets = signed_octets(b"msg", b"nonce" * 4, hmac_sha1, b"k" * 20, b"\x02\x00\x00\x00a.b")
    good = psk_auth(hmac_sha1, b"right secret", octets)
    with pytest.raises(AuthenticationError) as info:
        verify_psk_auth(hmac_sha1, b"wrong secret", octets, good, peer_id="a.b")
    assert isinstance(info.value, ProtocolError)
    assert info.value.notify is NotifyType.AUTHENTICATION_FAILED
    assert info.value.reason == (
        "AUTH payload does not verify with the configured PSK for id a.b (PSK mismatch?)"
    )
    assert "secret" not in info.value.reason
    with pytest.raises(AuthenticationError):
        verify_psk_auth(hmac_sha1, b"right secret", octets, good[:-1], peer_id="a.b")
    with pytest.raises(AuthenticationError):  # a tampered message changes the octets
        verify_psk_auth(
            hmac_sha1,
            b"right secret",
            signed_octets(b"msG", b"nonce" * 4, hmac_sha1, b"k" * 20, b"\x02\x00\x00\x00a.b"),
            good,
        )


def test_signed_octets_layout() -> None:
    octets = signed_octets(
        b"M" * 10, b"N" * 16, hmac_sha1, b"K", b"\x01\x00\x00\x00\x0a\x00\x00\x01"
    )
    assert octets[:10] == b"M" * 10 and octets[10:26] == b"N" * 16
    assert octets[26:] == hmac_sha1(b"K", b"\x01\x00\x00\x00\x0a\x00\x00\x01")
    with pytest.raises(ValueError):
        signed_octets(b"M", b"N", hmac_sha1, b"K", b"\x01\x00")
