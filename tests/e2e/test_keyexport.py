"""``--save-keys``: the files we write are what Wireshark reads (checked with tshark).

The ESP packets come from scapy's own ESP implementation (not ours) with a key we choose;
our exporter writes the key table; tshark, reading the table from the directory through
``WIRESHARK_CONFIG_DIR``, must decrypt the packets to the inner ICMP echo.
The IKE table is checked on a real IKE exchange in the daemon tests.
"""

from __future__ import annotations

import os
import stat
import subprocess

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.ipsec import ESP, SecurityAssociation
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

from aioipsec.keyexport import EspKeyRow, IkeKeyRow, KeyExporter
from ikev2.enums import EncrId, IntegId

pytestmark = pytest.mark.needs("tshark")


def tshark_fields(pcap, keys_dir, *fields):
    env = {**os.environ, "WIRESHARK_CONFIG_DIR": str(keys_dir)}
    argv = ["tshark", "-r", str(pcap), "-o", "esp.enable_encryption_decode:TRUE", "-T", "fields"]
    for field in fields:
        argv += ["-e", field]
    return subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize(
    ("scapy_algo", "encr", "integ", "scapy_auth", "key_len", "auth_key_len"),
    [
        ("AES-GCM", EncrId.ENCR_AES_GCM_16, None, None, 36, 0),
        ("AES-CBC", EncrId.ENCR_AES_CBC, IntegId.AUTH_HMAC_SHA2_256_128, "SHA2-256-128", 32, 32),
    ],
)
def test_esp_table_decrypts_in_tshark(
    tmp_path, scapy_algo, encr, integ, scapy_auth, key_len, auth_key_len
):
    key = bytes(range(7, 7 + key_len))
    auth_key = bytes(range(50, 50 + auth_key_len))
    sa = SecurityAssociation(
        ESP,
        spi=0x0A0B0C0D,
        crypt_algo=scapy_algo,
        crypt_key=key,
        auth_algo=scapy_auth,
        auth_key=auth_key or None,
        tunnel_header=IP(src="192.0.2.1", dst="192.0.2.2"),
    )
    packets = [
        Ether() / sa.encrypt(IP(src="10.1.0.1", dst="10.2.0.1") / ICMP(id=0x4242, seq=i)
                             / Raw(b"aioipsec" * 4))
        for i in range(1, 4)
    ]  # fmt: skip
    pcap = tmp_path / "esp.pcap"
    wrpcap(str(pcap), packets)
    keys = tmp_path / "keys"
    exporter = KeyExporter(keys)
    out = tshark_fields(pcap, keys, "icmp.ident")
    assert "16962" not in out  # no keys, no decryption: the check below can fail
    exporter.add_esp_sa(EspKeyRow("192.0.2.1", "192.0.2.2", 0x0A0B0C0D, encr, integ, key, auth_key))
    out = tshark_fields(pcap, keys, "icmp.ident", "icmp.seq")
    assert out.split() == ["16962", "1", "16962", "2", "16962", "3"]


def test_files_are_private_and_rows_stay_after_removal(tmp_path):
    exporter = KeyExporter(tmp_path / "k")
    row = IkeKeyRow(
        spi_i=0x1122334455667788, spi_r=0x99AABBCCDDEEFF00, encr=EncrId.ENCR_AES_GCM_16,
        encr_key_bits=256, integ=None, sk_ei=bytes(36), sk_er=bytes(range(36)),
    )  # fmt: skip
    exporter.add_ike_sa(row)
    exporter.remove_ike_sa(row.spi_i, row.spi_r)
    text = exporter.ike_table_path.read_text()
    assert (
        "1122334455667788,99aabbccddeeff00," + bytes(36).hex() + "," + bytes(range(36)).hex()
        + ',"AES-GCM-256 with 16 octet ICV [RFC5282]",,,"NONE [RFC4306]"'
    ) in text  # fmt: skip
    for path in (exporter.ike_table_path, exporter.esp_table_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "sk_ei" not in repr(row) and bytes(range(36)).hex() not in repr(row)


def test_unsupported_algorithm_becomes_a_comment(tmp_path):
    exporter = KeyExporter(tmp_path / "k")
    exporter.add_esp_sa(EspKeyRow("*", "*", 0x1234, EncrId.ENCR_CHACHA20_POLY1305, None, bytes(36)))
    lines = [x for x in exporter.esp_table_path.read_text().splitlines() if x.strip()]
    assert lines[-1].startswith("# ESP SA 0x00001234")
