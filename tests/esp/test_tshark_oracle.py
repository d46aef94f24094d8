"""Wireshark's ESP dissector (tshark) as a second independent oracle: it decrypts and
authenticates the packets we produce, given the keys in its ``esp_sa`` table."""

from __future__ import annotations

import os
import subprocess

import pytest
from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.utils import wrpcap

from esp.sa import EspSa
from ikev2.enums import EncrId, IntegId
from tests.esp.helpers import ipv4_packet, ipv6_packet

pytestmark = [
    pytest.mark.needs("tshark"),
    pytest.mark.timeout(120),
]

# our algorithm -> (key material length, Wireshark's esp_sa name)
ENCRYPTION = {
    EncrId.ENCR_AES_CBC: (16, "AES-CBC [RFC3602]"),
    EncrId.ENCR_AES_CTR: (20, "AES-CTR [RFC3686]"),
    EncrId.ENCR_AES_GCM_16: (20, "AES-GCM with 16 octet ICV [RFC4106]"),
    EncrId.ENCR_AES_GCM_12: (20, "AES-GCM with 12 octet ICV [RFC4106]"),
    EncrId.ENCR_AES_GCM_8: (36, "AES-GCM with 8 octet ICV [RFC4106]"),
    EncrId.ENCR_NULL: (0, "NULL"),
}
INTEGRITY = {
    IntegId.NONE: (0, "NULL"),
    IntegId.AUTH_HMAC_SHA1_96: (20, "HMAC-SHA-1-96 [RFC2404]"),
    IntegId.AUTH_HMAC_SHA2_256_128: (32, "HMAC-SHA-256-128 [RFC4868]"),
    IntegId.AUTH_HMAC_SHA2_384_192: (48, "HMAC-SHA-384-192 [RFC4868]"),
    IntegId.AUTH_HMAC_SHA2_512_256: (64, "HMAC-SHA-512-256 [RFC4868]"),
}
CASES = [
    (EncrId.ENCR_AES_CBC, IntegId.AUTH_HMAC_SHA1_96),
    (EncrId.ENCR_AES_CBC, IntegId.AUTH_HMAC_SHA2_256_128),
    (EncrId.ENCR_AES_CBC, IntegId.AUTH_HMAC_SHA2_384_192),
    (EncrId.ENCR_AES_CBC, IntegId.AUTH_HMAC_SHA2_512_256),
    (EncrId.ENCR_AES_CTR, IntegId.AUTH_HMAC_SHA2_256_128),
    (EncrId.ENCR_AES_GCM_16, IntegId.NONE),
    (EncrId.ENCR_AES_GCM_12, IntegId.NONE),
    (EncrId.ENCR_AES_GCM_8, IntegId.NONE),
    (EncrId.ENCR_NULL, IntegId.AUTH_HMAC_SHA2_256_128),
]


def tshark_fields(pcap: str, sa_row: str, fields: list[str]) -> list[list[str]]:
    command = [
        "tshark", "-r", pcap, "-o", "esp.enable_encryption_decode:TRUE",
        "-o", "esp.enable_authentication_check:TRUE", "-o", f"uat:esp_sa:{sa_row}",
        "-T", "fields", "-E", "separator=|",
    ]  # fmt: skip
    for field in fields:
        command += ["-e", field]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    return [line.split("|") for line in done.stdout.splitlines()]


@pytest.mark.parametrize("encr, integ", CASES, ids=lambda v: v.name)
@pytest.mark.parametrize("family", [4, 6])
def test_tshark_decrypts_and_authenticates_ours(tmp_path, encr, integ, family: int) -> None:
    key_len, encr_name = ENCRYPTION[encr]
    integ_len, integ_name = INTEGRITY[integ]
    key, integ_key = os.urandom(key_len), os.urandom(integ_len)
    src, dst = ("192.0.2.1", "192.0.2.2") if family == 4 else ("2001:db8::1", "2001:db8::2")
    sa = EspSa(0x00C0FFEE, "out", encr, key, integ, integ_key, src=src, dst=dst,
               allow_null=encr == EncrId.ENCR_NULL)  # fmt: skip
    inners = [ipv4_packet(64 + 37 * i) for i in range(3)] + [ipv6_packet(200)]
    outer = IP if family == 4 else IPv6
    pcap = str(tmp_path / "esp.pcap")
    wrpcap(pcap, [outer(sa.encapsulate(inner)) for inner in inners])
    row = (
        f'"IPv{family}","{src}","{dst}","0x00c0ffee","{encr_name}","0x{key.hex()}",'
        f'"{integ_name}","0x{integ_key.hex()}"'
    )
    rows = tshark_fields(pcap, row, ["esp.sequence", "esp.protocol", "esp.icv_good", "ip.src"])
    assert [r[0] for r in rows] == ["1", "2", "3", "4"]
    assert [r[1] for r in rows] == ["0x04", "0x04", "0x04", "0x29"]  # IPv4, IPv4, IPv4, IPv6
    if integ != IntegId.NONE or encr != EncrId.ENCR_AES_CBC:
        assert all(r[2] == "1" for r in rows), rows  # Wireshark verified our ICV
    # The inner IPv4 source address is visible only if the payload decrypted correctly.
    assert all("10.1.0.1" in r[3] for r in rows[:3]), rows
