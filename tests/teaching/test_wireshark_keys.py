"""Wireshark key tables: Wireshark's own test tables parse, and what ``--save-keys``
writes (aioipsec.keyexport) reads back with the same keys and algorithms."""

from __future__ import annotations

from pathlib import Path

import pytest

from aioipsec.keyexport import EspKeyRow, IkeKeyRow, KeyExporter
from aioipsec.wireshark_keys import (
    KeyTableError,
    load_esp_table,
    load_ikev2_table,
    parse_esp_table,
    parse_ikev2_table,
)
from ikev2.enums import EncrId, IntegId
from tests.reference_data import CAPTURES


def test_wireshark_test_tables_parse() -> None:
    ike = load_ikev2_table(CAPTURES / "wireshark_ikev2_decryption_table.csv")
    assert len(ike) == 9
    ccm = next(e for e in ike if e.spi_i.hex() == "ea684d21597afd36")
    assert (ccm.encr, ccm.encr_key_bits, ccm.integ) == (EncrId.ENCR_AES_CCM_12, 128, IntegId.NONE)
    assert len(ccm.sk_ei) == 16 + 3  # key || CCM salt
    cbc = next(e for e in ike if e.spi_i.hex() == "191ccd371a7a1f7b")
    assert (cbc.encr, cbc.encr_key_bits, cbc.integ) == (
        EncrId.ENCR_AES_CBC, 256, IntegId.AUTH_HMAC_SHA2_256_128,
    )  # fmt: skip
    assert len(cbc.sk_ai) == 32
    esp = load_esp_table(CAPTURES / "wireshark_esp_sa.csv")
    assert [e.spi for e in esp] == [0x070883C2, 0xC254FE64]
    assert esp[0].encr == EncrId.ENCR_AES_CBC and esp[0].integ == IntegId.AUTH_HMAC_SHA1_96
    assert esp[0].matches("192.168.0.1", "192.168.0.100", 0x070883C2)
    assert not esp[0].matches("192.168.0.100", "192.168.0.1", 0x070883C2)


def test_keyexport_rows_read_back(tmp_path: Path) -> None:
    exporter = KeyExporter(tmp_path)
    exporter.add_ike_sa(
        IkeKeyRow(0x1122334455667788, 0x99AABBCCDDEEFF00, EncrId.ENCR_AES_GCM_16, 256, None,
                  sk_ei=bytes(range(36)), sk_er=bytes(range(1, 37)))
    )  # fmt: skip
    exporter.add_ike_sa(
        IkeKeyRow(1, 2, EncrId.ENCR_AES_CBC, 128, IntegId.AUTH_HMAC_SHA2_256_128,
                  sk_ei=b"e" * 16, sk_er=b"E" * 16, sk_ai=b"a" * 32, sk_ar=b"A" * 32)
    )  # fmt: skip
    exporter.add_ike_sa(
        IkeKeyRow(3, 4, EncrId.ENCR_CHACHA20_POLY1305, None, None, sk_ei=b"c" * 36,
                  sk_er=b"C" * 36)
    )  # fmt: skip
    exporter.add_esp_sa(
        EspKeyRow("10.0.0.1", "10.0.0.2", 0xC0FFEE01, EncrId.ENCR_AES_GCM_16, None,
                  encr_key=b"k" * 36),
        EspKeyRow("*", "*", 0xC0FFEE02, EncrId.ENCR_AES_CBC, IntegId.AUTH_HMAC_SHA1_96,
                  encr_key=b"k" * 16, integ_key=b"i" * 20, ipv6=True),
    )  # fmt: skip
    ike = load_ikev2_table(exporter.ike_table_path)
    # ChaCha20 cannot be decrypted by Wireshark: a comment line, not a row.
    assert len(ike) == 2
    gcm, cbc = ike
    assert (gcm.spi_i, gcm.spi_r) == (bytes.fromhex("1122334455667788"),
                                      bytes.fromhex("99aabbccddeeff00"))  # fmt: skip
    assert (gcm.encr, gcm.encr_key_bits, gcm.integ) == (EncrId.ENCR_AES_GCM_16, 256, IntegId.NONE)
    assert gcm.sk_ei == bytes(range(36)) and gcm.sk_er == bytes(range(1, 37))
    assert (cbc.encr, cbc.integ, cbc.sk_ai, cbc.sk_ar) == (
        EncrId.ENCR_AES_CBC, IntegId.AUTH_HMAC_SHA2_256_128, b"a" * 32, b"A" * 32,
    )  # fmt: skip
    esp = load_esp_table(exporter.esp_table_path)
    assert [(e.family, e.spi, e.encr, e.integ) for e in esp] == [
        ("IPv4", 0xC0FFEE01, EncrId.ENCR_AES_GCM_16, IntegId.NONE),
        ("IPv6", 0xC0FFEE02, EncrId.ENCR_AES_CBC, IntegId.AUTH_HMAC_SHA1_96),
    ]
    assert esp[1].integ_key == b"i" * 20 and esp[1].matches(
        "2001:db8::1", "2001:db8::2", 0xC0FFEE02
    )


@pytest.mark.parametrize(
    "line",
    [
        '0011,2233,00,00,"NULL [RFC2410]",,,"NONE [RFC4306]"',  # short SPIs
        '1122334455667788,1122334455667788,zz,00,"NULL [RFC2410]",,,"NONE [RFC4306]"',
        "1122334455667788,1122334455667788,00",
    ],
)
def test_bad_ike_rows_name_the_line(line: str) -> None:
    with pytest.raises(KeyTableError, match=r"table:1"):
        parse_ikev2_table(line, "table")


def test_bad_esp_spi() -> None:
    with pytest.raises(KeyTableError, match="SPI"):
        parse_esp_table('"IPv4","*","*","0xzz","NULL","","NULL",""', "esp")
