"""The decoder never crashes on what a capture may hold: random or mutated IKE messages
and ESP packets, with keys loaded (so the decryption paths run too)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aioipsec.decode import EspDecryptor, IkeDecryptor, decode_ike
from aioipsec.wireshark_keys import parse_esp_table, parse_ikev2_table
from tests.reference_data import CAPTURES

ESP_ROWS = "\n".join([
    '"IPv4","*","*","0x00000001","AES-CBC [RFC3602]","0x' + "11" * 16
    + '","HMAC-SHA-256-128 [RFC4868]","0x' + "22" * 32 + '"',
    '"IPv4","*","*","0x00000002","AES-CBC [RFC3602]","0x' + "11" * 16
    + '","ANY 96 bit authentication [no checking]",""',
    '"IPv4","*","*","0x00000003","AES-GCM with 16 octet ICV [RFC4106]","0x' + "33" * 20
    + '","NULL",""',
    '"IPv4","*","*","0x00000004","AES-CTR [RFC3686]","0x' + "44" * 20 + '","NULL",""',
    '"IPv4","*","*","0x00000005","NULL","","ANY 128 bit authentication [no checking]",""',
    '"IPv4","*","*","0x00000006","AES-CCM with 8 octet ICV [RFC4309]","0x' + "55" * 19
    + '","NULL",""',
])  # fmt: skip
# One IKE SA per cipher family, SPIs 01.. / 02..
IKE_ROWS = "\n".join([
    "0101010101010101,0202020202020202," + "66" * 36 + "," + "77" * 36
    + ',"AES-GCM-256 with 16 octet ICV [RFC5282]",,,"NONE [RFC4306]"',
    "0303030303030303,0404040404040404," + "88" * 16 + "," + "99" * 16
    + ',"AES-CBC-128 [RFC3602]",' + "aa" * 32 + "," + "bb" * 32
    + ',"HMAC_SHA2_256_128 [RFC4868]"',
])  # fmt: skip

esp_decryptor = EspDecryptor(parse_esp_table(ESP_ROWS))
ike_decryptor = IkeDecryptor(parse_ikev2_table(IKE_ROWS))


@settings(max_examples=400, deadline=None)
@given(spi=st.integers(1, 7), rest=st.binary(min_size=4, max_size=200))
def test_esp_any_bytes(spi: int, rest: bytes) -> None:
    result = esp_decryptor.decrypt("192.0.2.1", "192.0.2.2", spi.to_bytes(4, "big") + rest)
    assert result.get("decrypted") in (True, False, None)


@pytest.mark.parametrize("spi", range(1, 8))
def test_esp_every_length(spi: int) -> None:
    """Every length up to 150 octets for every row: block alignment, truncation."""
    for length in range(4, 150):
        packet = spi.to_bytes(4, "big") + bytes(range(length % 256))[:length].ljust(length, b"x")
        result = esp_decryptor.decrypt("192.0.2.1", "192.0.2.2", packet)
        assert result.get("decrypted") in (True, False, None)


def _ike_header(spis: bytes, next_payload: int, exchange: int, flags: int, length: int) -> bytes:
    return (
        spis
        + bytes([next_payload, 0x20, exchange, flags])
        + (1).to_bytes(4, "big")
        + (length.to_bytes(4, "big"))
    )


@settings(max_examples=400, deadline=None)
@given(
    which=st.sampled_from([bytes.fromhex("01" * 8 + "02" * 8), bytes.fromhex("03" * 8 + "04" * 8)]),
    next_payload=st.sampled_from([46, 53, 33, 41, 0, 255]),
    flags=st.sampled_from([0x08, 0x20, 0x28, 0x00]),
    body=st.binary(max_size=300),
)
def test_ike_any_bytes(which: bytes, next_payload: int, flags: int, body: bytes) -> None:
    data = _ike_header(which, next_payload, 37, flags, 28 + len(body)) + body
    record = decode_ike(data, ike_decryptor, 0.0)
    assert record["kind"] == "ike"


@settings(max_examples=300, deadline=None)
@given(position=st.integers(0, 60), value=st.integers(0, 255))
def test_ike_mutated_real_message(position: int, value: int) -> None:
    from aioipsec.decode import decode_capture

    table = parse_ikev2_table((CAPTURES / "wireshark_ikev2_decryption_table.csv").read_text())
    decryptor = IkeDecryptor(table)
    capture = CAPTURES / "wireshark_ikev2-decrypt-aes128ccm12_4frames_from_scapy.pcap"
    frames = list(decode_capture(capture, table))
    original = frames[2]["_message"].raw
    mutated = bytearray(original)
    mutated[position % len(mutated)] = value
    record = decode_ike(bytes(mutated), decryptor, 0.0)
    assert record["kind"] == "ike"


@pytest.mark.parametrize("spis", ["01" * 8 + "02" * 8, "03" * 8 + "04" * 8])
@pytest.mark.parametrize("first", [46, 53])
def test_ike_sk_every_length(spis: str, first: int) -> None:
    for length in range(0, 120):
        body = bytes([0, 0]) + (4 + length).to_bytes(2, "big") + bytes(length)
        if first == 53 and length >= 4:  # SKF: fragment number and total
            body = body[:4] + b"\x00\x01\x00\x02" + body[8:]
        data = _ike_header(bytes.fromhex(spis), first, 37, 0x08, 28 + len(body)) + body
        assert decode_ike(data, ike_decryptor, 0.0)["kind"] == "ike"
