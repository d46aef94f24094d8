"""MD4 and MS-CHAPv2 known answers (RFC 1320 A.5, RFC 2759 sec. 9.2, RFC 3079 sec. 3.5.3)."""

from __future__ import annotations

import pytest

from ikev2.crypto.md4 import md4
from ikev2.eap import mschapv2 as m

# RFC 1320 A.5 "Test suite"
MD4_SUITE = [
    (b"", "31d6cfe0d16ae931b73c59d7e0c089c0"),
    (b"a", "bde52cb31de33e46245e05fbdbd6fb24"),
    (b"abc", "a448017aaf21d8525fc10ae87aa6729d"),
    (b"message digest", "d9130a8164549fe818874806e1c7014b"),
    (b"abcdefghijklmnopqrstuvwxyz", "d79e1c308aa5bbcdeea8ed63df412da9"),
    (
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
        "043f8582f241db351ce627e153e7f0e4",
    ),
    (b"1234567890" * 8, "e33b4ddc9c38f2199c3e7b164fcc0536"),
]


@pytest.mark.parametrize("message, digest", MD4_SUITE)
def test_md4_rfc1320(message: bytes, digest: str) -> None:
    assert md4(message).hex() == digest


# RFC 2759 sec. 9.2 "Hash computations" (and RFC 3079 sec. 3.5.3, the same inputs)
USER = "User"
PASSWORD = "clientPass"
AUTH_CHALLENGE = bytes.fromhex("5B5D7C7D7B3F2F3E3C2C602132262628")
PEER_CHALLENGE = bytes.fromhex("21402324255E262A28295F2B3A337C7E")


def test_rfc2759_vectors() -> None:
    assert m.challenge_hash(PEER_CHALLENGE, AUTH_CHALLENGE, USER).hex() == "d02e4386bce91226"
    password_hash = m.nt_password_hash(PASSWORD)
    assert password_hash.hex() == "44ebba8d5312b8d611474411f56989ae"
    assert m.hash_nt_password_hash(password_hash).hex() == "41c00c584bd2d91c4017a2a12fa59f3f"
    nt_response = m.generate_nt_response(AUTH_CHALLENGE, PEER_CHALLENGE, USER, PASSWORD)
    assert nt_response.hex() == "82309ecd8d708b5ea08faa3981cd83544233114a3d85d6df"
    assert (
        m.generate_authenticator_response(
            password_hash, nt_response, PEER_CHALLENGE, AUTH_CHALLENGE, USER
        )
        == "S=407A5589115FD0D6209F510FE9C04566932CDA56"
    )


def test_rfc3079_keys_and_msk() -> None:
    password_hash_hash = bytes.fromhex("41C00C584BD2D91C4017A2A12FA59F3F")
    nt_response = bytes.fromhex("82309ECD8D708B5EA08FAA3981CD83544233114A3D85D6DF")
    master = m.get_master_key(password_hash_hash, nt_response)
    assert master.hex() == "fdece3717a8c838cb388e527ae3cdd31"
    # RFC 3079 sec. 3.5.3: SendStartKey128 (the server's send key)
    send = m.get_asymmetric_start_key(master, is_send=True, is_server=True)
    assert send.hex() == "8b7cdc149b993a1ba118cb153f56dccb"
    # each side's send key is the other's receive key
    assert m.get_asymmetric_start_key(master, is_send=False, is_server=False) == send
    receive = m.get_asymmetric_start_key(master, is_send=False, is_server=True)
    assert m.get_asymmetric_start_key(master, is_send=True, is_server=False) == receive
    assert receive != send
    assert m.msk(password_hash_hash, nt_response) == receive + send + bytes(32)


def test_domain_prefix_left_out_of_challenge_hash() -> None:
    # RFC 2759 sec. 8.2: the user name without the Windows domain
    assert m.challenge_hash(PEER_CHALLENGE, AUTH_CHALLENGE, "CORP\\User") == m.challenge_hash(
        PEER_CHALLENGE, AUTH_CHALLENGE, USER
    )


def test_des_key_expansion() -> None:
    # 56 key bits spread over 8 octets, low bit (parity) clear: all-ones -> 0xfe each
    assert m._des_key(b"\xff" * 7) == b"\xfe" * 8
    assert m._des_key(bytes(7)) == bytes(8)
