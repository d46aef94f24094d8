"""SK payload protection (RFC 7296 sec. 3.14, RFC 5282, RFC 7634) against published vectors
and a real capture, plus the integrity/padding failure modes."""

from __future__ import annotations

import hashlib
import hmac
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from ikev2.crypto.sk import AeadSkCipher, make_sk_cipher, sk_key_lengths
from ikev2.enums import EncrId, ExchangeType, IntegId, NotifyType, PayloadType
from ikev2.errors import IntegrityError, ProtocolError
from ikev2.message import IkeHeader, decrypt_message, parse_message, serialize_message
from ikev2.payloads import DeletePayload, NotifyPayload
from tests.reference_data import REFERENCE


def read_vector_file(name: str) -> dict[str, dict[str, str]]:
    """Sections ``[title]`` of ``key = hex   # comment`` lines."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in (REFERENCE / "vectors" / name).read_text().splitlines():
        if line.startswith("["):
            current = sections.setdefault(line[1 : line.index("]")], {})
            continue
        line = line.split("#", 1)[0].strip()
        if "=" in line:
            key, value = (part.strip() for part in line.split("=", 1))
            current[key] = value
    return sections


RFC7634 = read_vector_file("rfc7634_chacha20poly1305_esp_ikev2.txt")
RFC7634_IKE = next(v for k, v in RFC7634.items() if k.startswith("Appendix B"))


def test_rfc7634_appendix_b_byte_for_byte() -> None:
    vector = {k: bytes.fromhex(v) for k, v in RFC7634_IKE.items()}
    cipher = make_sk_cipher(EncrId.ENCR_CHACHA20_POLY1305, None, None, vector["keymat"], None)
    header = IkeHeader(
        spi_i=bytes(range(0xC0, 0xC8)),
        spi_r=bytes(range(0xD0, 0xD8)),
        exchange=ExchangeType.INFORMATIONAL,
        message_id=9,
    )
    notify = NotifyPayload(NotifyType.SET_WINDOW_SIZE, data=(10).to_bytes(4, "big"))
    wire = serialize_message(header, [notify], cipher, iv=vector["iv"])
    assert wire == vector["ike_message"]
    assert wire[:32] == vector["aad"]
    assert wire[40:] == vector["ciphertext_and_icv"]

    received = parse_message(vector["ike_message"])
    assert received.header.message_id == 9
    assert received.associated_data == vector["aad"]
    plain = decrypt_message(
        received, make_sk_cipher(EncrId.ENCR_CHACHA20_POLY1305, None, None, vector["keymat"], None)
    )
    assert plain.payloads == [notify]
    assert plain.protected
    assert plain.associated_data == vector["aad"]  # kept for RFC 9242 IntAuth


CCM_CAPTURE = REFERENCE / "captures" / "wireshark_ikev2-decrypt-aes128ccm12_4frames_from_scapy.pcap"


def capture_ike_messages(path: Path) -> list[bytes]:
    from scapy.all import UDP, rdpcap

    return [bytes(packet[UDP].payload) for packet in rdpcap(str(path)) if UDP in packet]


def ccm_table_row() -> tuple[bytes, bytes]:
    for line in (
        (REFERENCE / "captures" / "wireshark_ikev2_decryption_table.csv").read_text().splitlines()
    ):
        if line.startswith("ea684d21597afd36"):
            fields = line.split(",")
            return bytes.fromhex(fields[2]), bytes.fromhex(fields[3])
    raise AssertionError("key row missing")


def test_wireshark_aes128_ccm12_capture_decrypts() -> None:
    sk_ei, sk_er = ccm_table_row()
    cipher_i = make_sk_cipher(EncrId.ENCR_AES_CCM_12, 128, None, sk_ei, None)
    cipher_r = make_sk_cipher(EncrId.ENCR_AES_CCM_12, 128, None, sk_er, None)
    frames = [parse_message(data) for data in capture_ike_messages(CCM_CAPTURE)]
    assert [m.header.exchange for m in frames] == [ExchangeType.IKE_SA_INIT] * 2 + [
        ExchangeType.INFORMATIONAL
    ] * 2
    request, response = frames[2], frames[3]
    assert request.header.initiator and not request.header.response
    assert decrypt_message(request, cipher_i).payloads == [DeletePayload(1)]
    assert decrypt_message(response, cipher_r).payloads == []
    # the other direction's key must not verify
    with pytest.raises(IntegrityError):
        decrypt_message(request, cipher_r)


AEAD_CASES = [
    (EncrId.ENCR_AES_GCM_8, 128),
    (EncrId.ENCR_AES_GCM_12, 192),
    (EncrId.ENCR_AES_GCM_16, 256),
    (EncrId.ENCR_AES_CCM_8, 128),
    (EncrId.ENCR_AES_CCM_12, 192),
    (EncrId.ENCR_AES_CCM_16, 256),
    (EncrId.ENCR_CHACHA20_POLY1305, None),
]
CBC_CASES = [
    (128, IntegId.AUTH_HMAC_SHA1_96),
    (128, IntegId.AUTH_HMAC_SHA2_256_128),
    (192, IntegId.AUTH_HMAC_SHA2_384_192),
    (256, IntegId.AUTH_HMAC_SHA2_512_256),
]


def build(encr, bits, integ=None):
    encr_len, integ_len = sk_key_lengths(encr, bits, integ)
    return make_sk_cipher(
        encr, bits, integ, bytes(range(encr_len)), bytes(range(integ_len)) or None
    )


ALL_CASES = [(e, b, None) for e, b in AEAD_CASES] + [
    (EncrId.ENCR_AES_CBC, b, i) for b, i in CBC_CASES
]


def test_key_lengths() -> None:
    assert sk_key_lengths(EncrId.ENCR_AES_GCM_16, 256, None) == (36, 0)
    assert sk_key_lengths(EncrId.ENCR_AES_CCM_8, 128, None) == (19, 0)
    assert sk_key_lengths(EncrId.ENCR_CHACHA20_POLY1305, None, None) == (36, 0)
    assert sk_key_lengths(EncrId.ENCR_AES_CBC, 192, IntegId.AUTH_HMAC_SHA2_384_192) == (24, 48)
    assert sk_key_lengths(EncrId.ENCR_AES_CBC, 128, IntegId.AUTH_HMAC_SHA1_96) == (16, 20)
    for bad in [
        (EncrId.ENCR_AES_GCM_16, 100, None),
        (EncrId.ENCR_AES_GCM_16, 128, IntegId.AUTH_HMAC_SHA2_256_128),
        (EncrId.ENCR_AES_CBC, 128, None),
        (EncrId.ENCR_3DES, None, IntegId.AUTH_HMAC_SHA1_96),
    ]:
        with pytest.raises(ProtocolError):
            sk_key_lengths(*bad)


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: f"{c[0].name}-{c[1]}-{c[2]}")
@pytest.mark.parametrize("length", [0, 1, 15, 16, 17, 100])
def test_seal_open_round_trip_and_length(case, length: int) -> None:
    sender, receiver = build(*case), build(*case)
    aad = b"header" * 5 + b"sk"
    plaintext = bytes(range(length))
    body = sender.seal(aad, plaintext)
    assert len(body) == sender.sealed_length(length)
    assert receiver.open(aad, body) == plaintext
    # any bit flip anywhere (AAD, IV, ciphertext, ICV) is an integrity failure
    for position in (0, len(body) // 2, len(body) - 1):
        tampered = bytearray(body)
        tampered[position] ^= 0x01
        with pytest.raises(IntegrityError):
            receiver.open(aad, bytes(tampered))
    with pytest.raises(IntegrityError):
        receiver.open(aad[:-1] + b"x", body)
    # truncated bodies never decrypt
    for cut in (1, len(body) // 2, len(body) - 1):
        with pytest.raises(IntegrityError):
            receiver.open(aad, body[:cut])


@pytest.mark.parametrize("case", ALL_CASES[:7], ids=lambda c: c[0].name)
def test_aead_ivs_never_repeat(case) -> None:
    cipher = build(*case)
    ivs = {cipher.seal(b"a", b"p")[: cipher.iv_size] for _ in range(200)}
    assert len(ivs) == 200


def test_aes_gcm_matches_independent_computation() -> None:
    # Independent check with the plain GCM mode object: nonce = salt || IV, AAD, tag prefix.
    key, salt, iv = bytes(range(16)), b"\xa0\xa1\xa2\xa3", bytes(range(8))
    cipher = make_sk_cipher(EncrId.ENCR_AES_GCM_8, 128, None, key + salt, None)
    body = cipher.seal(b"aad", b"payloads", iv=iv)
    encryptor = Cipher(algorithms.AES(key), modes.GCM(salt + iv)).encryptor()
    encryptor.authenticate_additional_data(b"aad")
    expected = encryptor.update(b"payloads\x00") + encryptor.finalize()
    assert body == iv + expected + encryptor.tag[:8]


def test_cbc_icv_is_hmac_over_aad_iv_ciphertext() -> None:
    key, integ_key, iv = bytes(16), bytes(range(32)), bytes(range(16))
    cipher = make_sk_cipher(
        EncrId.ENCR_AES_CBC, 128, IntegId.AUTH_HMAC_SHA2_256_128, key, integ_key
    )
    body = cipher.seal(b"AAD", b"x" * 20, iv=iv)
    assert len(body) == 16 + 32 + 16  # 20 + pad 11 + pad length 1 = 2 blocks
    expected = hmac.new(integ_key, b"AAD" + body[:-16], hashlib.sha256).digest()[:16]
    assert body[-16:] == expected
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(body[16:-16]) + decryptor.finalize()
    assert padded[:20] == b"x" * 20 and padded[-1] == 11


def test_pad_length_larger_than_plaintext_is_invalid_syntax() -> None:
    # A correctly authenticated plaintext whose Pad Length points before its start.
    key = bytes(range(36))
    cipher = make_sk_cipher(EncrId.ENCR_AES_GCM_16, 256, None, key, None)
    assert isinstance(cipher, AeadSkCipher)
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    iv = bytes(8)
    forged = iv + AESGCM(key[:32]).encrypt(key[32:] + iv, b"\x00\x00\x05", b"aad")
    with pytest.raises(ProtocolError) as info:
        cipher.open(b"aad", forged)
    assert info.value.notify == NotifyType.INVALID_SYNTAX
    assert not isinstance(info.value, IntegrityError)


def test_cbc_ciphertext_not_whole_blocks_is_invalid_syntax() -> None:
    integ_key = bytes(32)
    cipher = make_sk_cipher(
        EncrId.ENCR_AES_CBC, 128, IntegId.AUTH_HMAC_SHA2_256_128, bytes(16), integ_key
    )
    protected = bytes(16) + bytes(20)  # IV + 20 octets: authenticated, but not whole blocks
    icv = hmac.new(integ_key, b"aad" + protected, hashlib.sha256).digest()[:16]
    with pytest.raises(ProtocolError) as info:
        cipher.open(b"aad", protected + icv)
    assert info.value.notify == NotifyType.INVALID_SYNTAX


def test_sk_in_message_rejects_corruption() -> None:
    cipher = build(EncrId.ENCR_AES_GCM_16, 128)
    header = IkeHeader(spi_i=b"\x01" * 8, spi_r=b"\x02" * 8, exchange=ExchangeType.INFORMATIONAL)
    wire = serialize_message(header, [DeletePayload(1)], cipher)
    peer = build(EncrId.ENCR_AES_GCM_16, 128)
    assert decrypt_message(parse_message(wire), peer).payloads == [DeletePayload(1)]
    corrupted = bytearray(wire)
    corrupted[-1] ^= 0x80
    with pytest.raises(IntegrityError):
        decrypt_message(parse_message(bytes(corrupted)), peer)
    # the header is authenticated too (RFC 5282 sec. 5.1: AAD = header .. SK header)
    corrupted = bytearray(wire)
    corrupted[20] ^= 0x01  # message ID
    with pytest.raises(IntegrityError):
        decrypt_message(parse_message(bytes(corrupted)), peer)
    assert parse_message(wire).header.next_payload == PayloadType.SK


# --- known answers for the primitives under the SK layer ---------------------------------

STRONGSWAN_AEAD_ALGS = {
    "ENCR_AES_GCM_ICV8": EncrId.ENCR_AES_GCM_8,
    "ENCR_AES_GCM_ICV12": EncrId.ENCR_AES_GCM_12,
    "ENCR_AES_GCM_ICV16": EncrId.ENCR_AES_GCM_16,
    "ENCR_AES_CCM_ICV8": EncrId.ENCR_AES_CCM_8,
    "ENCR_AES_CCM_ICV12": EncrId.ENCR_AES_CCM_12,
    "ENCR_AES_CCM_ICV16": EncrId.ENCR_AES_CCM_16,
}
STRONGSWAN_AEAD = [
    (f"{name}:{title}", vector)
    for name in ("strongswan_kat_aes_gcm.txt", "strongswan_kat_aes_ccm.txt")
    for title, vector in read_vector_file(name).items()
]


@pytest.mark.parametrize("title,vector", STRONGSWAN_AEAD, ids=[t for t, _ in STRONGSWAN_AEAD])
def test_strongswan_aead_known_answers(title: str, vector: dict[str, str]) -> None:
    # strongSwan's AEAD vectors (NIST GCM spec, Linux kernel CCM cases): key includes the
    # salt at its end, exactly our SK_e layout (RFC 5282 sec. 7.1).
    encr = STRONGSWAN_AEAD_ALGS[vector["alg"]]
    # like strongSwan, take key_size + salt_size octets of the array (aes_ccm15 carries a
    # longer array than its 16-octet key + 3-octet salt)
    key_size, salt_size = int(vector["key_size"]), int(vector["salt_size"])
    key = bytes.fromhex(vector["key"])[: key_size + salt_size]
    bits = key_size * 8
    cipher = make_sk_cipher(encr, bits, None, key, None)
    assert isinstance(cipher, AeadSkCipher)
    iv, plain = bytes.fromhex(vector["iv"]), bytes.fromhex(vector.get("plain", ""))
    aad, expected = bytes.fromhex(vector.get("adata", "")), bytes.fromhex(vector["cipher"])
    assert cipher.encrypt(iv, plain, aad) == expected
    assert cipher.decrypt(iv, expected, aad) == plain
    with pytest.raises(IntegrityError):
        cipher.decrypt(iv, expected[:-1] + bytes([expected[-1] ^ 1]), aad)


RFC3602 = [v for k, v in read_vector_file("rfc3602_aes_cbc_esp.txt").items() if "Encrypting" in k]


@pytest.mark.parametrize("vector", RFC3602, ids=lambda v: v["plaintext"][:8])
def test_cbc_ciphertext_matches_rfc3602(vector: dict[str, str]) -> None:
    # Whole-block plaintext: our seal appends one block of padding; the blocks before it
    # are the RFC's ciphertext (CBC is a prefix-preserving chain).
    key, iv = bytes.fromhex(vector["key"]), bytes.fromhex(vector["iv"])
    plain, expected = bytes.fromhex(vector["plaintext"]), bytes.fromhex(vector["ciphertext"])
    cipher = make_sk_cipher(
        EncrId.ENCR_AES_CBC, len(key) * 8, IntegId.AUTH_HMAC_SHA2_256_128, key, bytes(32)
    )
    body = cipher.seal(b"", plain, iv=iv)
    assert body[:16] == iv
    assert body[16 : 16 + len(expected)] == expected
    assert cipher.open(b"", body) == plain


RFC4868_AUTH = [
    (title, vector)
    for title, vector in read_vector_file("rfc4868_hmac_sha2_prf_auth.txt").items()
    if title.startswith("AUTH")
]
_AUTH_IDS = {
    "256": (IntegId.AUTH_HMAC_SHA2_256_128, "HMAC-SHA-256-128"),
    "384": (IntegId.AUTH_HMAC_SHA2_384_192, "HMAC-SHA-384-192"),
    "512": (IntegId.AUTH_HMAC_SHA2_512_256, "HMAC-SHA-512-256"),
}


@pytest.mark.parametrize("title,vector", RFC4868_AUTH, ids=[t for t, _ in RFC4868_AUTH])
def test_integrity_icv_matches_rfc4868(title: str, vector: dict[str, str]) -> None:
    integ, field_name = _AUTH_IDS[title[4:7]]
    key = bytes.fromhex(vector["key"])
    cipher = make_sk_cipher(EncrId.ENCR_AES_CBC, 128, integ, bytes(16), key)
    expected = bytes.fromhex(vector[field_name])
    assert cipher.icv_size == len(expected)
    assert cipher.compute_icv(bytes.fromhex(vector["data"]), b"") == expected


# --- properties ------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(ALL_CASES), st.binary(max_size=600), st.binary(max_size=64))
def test_any_plaintext_round_trips(case, plaintext: bytes, aad: bytes) -> None:
    sender, receiver = build(*case), build(*case)
    body = sender.seal(aad, plaintext)
    assert len(body) == sender.sealed_length(len(plaintext))
    assert receiver.open(aad, body) == plaintext


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(ALL_CASES), st.binary(max_size=200))
def test_random_bodies_only_raise_protocol_errors(case, body: bytes) -> None:
    try:
        build(*case).open(b"aad", body)
    except IntegrityError:
        pass  # random data never authenticates; ProtocolError subclasses only


def test_empty_informational_round_trip() -> None:
    # The liveness check (RFC 7296 sec. 2.4): an INFORMATIONAL with an empty SK payload.
    sender, receiver = build(EncrId.ENCR_AES_GCM_16, 256), build(EncrId.ENCR_AES_GCM_16, 256)
    header = IkeHeader(spi_i=b"\x01" * 8, spi_r=b"\x02" * 8, exchange=ExchangeType.INFORMATIONAL)
    wire = serialize_message(header, [], sender)
    msg = parse_message(wire)
    assert msg.encrypted_payload.first_inner == PayloadType.NO_NEXT_PAYLOAD
    assert decrypt_message(msg, receiver).payloads == []


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: f"{c[0].name}-{c[1]}")
def test_truncated_sk_payload_in_a_consistent_message(case) -> None:
    # A message whose lengths all agree but whose SK body is cut short: never decrypts.
    sender, receiver = build(*case), build(*case)
    header = IkeHeader(spi_i=b"\x01" * 8, spi_r=b"\x02" * 8, exchange=ExchangeType.INFORMATIONAL)
    wire = serialize_message(header, [DeletePayload(1)], sender)
    for keep in (1, sender.iv_size, sender.iv_size + sender.icv_size, len(wire) - 33):
        cut = bytearray(wire[: 32 + keep])
        struct.pack_into("!I", cut, 24, len(cut))
        struct.pack_into("!H", cut, 30, 4 + keep)
        with pytest.raises(IntegrityError):
            decrypt_message(parse_message(bytes(cut)), receiver)
