"""``aioipsec decode`` against tshark on captures we did not make (Wireshark's and scapy's
test captures, Linux xfrm ESP) with Wireshark's own key tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aioipsec.decode import decode_capture, json_record
from aioipsec.wireshark_keys import load_esp_table, load_ikev2_table
from tests.reference_data import CAPTURES
from tests.teaching.compare import compare_frame
from tests.teaching.tshark_oracle import tshark_frames

CCM = CAPTURES / "wireshark_ikev2-decrypt-aes128ccm12_4frames_from_scapy.pcap"
IKE_TABLE = CAPTURES / "wireshark_ikev2_decryption_table.csv"
NAT_T = CAPTURES / "scapy_ikev2_nat_t.pcapng"
REDIRECT = CAPTURES / "scapy_ikev2_notify_redirect.pcap"
XFRM = CAPTURES / "linux_xfrm_esp.pcap"
XFRM_SA = CAPTURES / "linux_xfrm_esp_sa"

pytestmark = [
    pytest.mark.needs("tshark"),
    pytest.mark.timeout(120),
]


def _agree(capture: Path, ike_table: Path | None = None, esp_table: Path | None = None) -> list:
    ours = list(
        decode_capture(
            capture,
            load_ikev2_table(ike_table) if ike_table else (),
            load_esp_table(esp_table) if esp_table else (),
        )
    )
    theirs = tshark_frames(
        capture,
        ike_table.read_text() if ike_table else None,
        esp_table.read_text() if esp_table else None,
    )
    assert [r["frame"] for r in ours] == sorted(theirs)
    problems = [p for record in ours for p in compare_frame(record, theirs[record["frame"]])]
    assert problems == []
    return ours


def test_ccm_capture_with_wireshark_key_table_matches_tshark() -> None:
    records = _agree(CCM, IKE_TABLE)
    assert [r["exchange"] for r in records] == ["IKE_SA_INIT"] * 2 + ["INFORMATIONAL"] * 2
    # The SK payloads really were decrypted: a Delete of the IKE SA, then an empty answer.
    assert records[2]["payloads"] == [{"SK": ["DELETE"]}]
    assert records[3]["payloads"] == [{"SK": []}]
    assert records[0]["payloads"][0] == "SA"


def test_ccm_capture_without_keys_keeps_sk_closed() -> None:
    records = list(decode_capture(CCM))
    assert records[2]["payloads"] == ["SK"] and records[2]["decrypted"] is False


def test_wrong_key_is_an_icv_failure_not_garbage() -> None:
    table = IKE_TABLE.read_text().replace("be83fe15f6a9976941870830fe26c014b863b3", "00" * 19)
    from aioipsec.wireshark_keys import parse_ikev2_table

    records = list(decode_capture(CCM, parse_ikev2_table(table)))
    assert records[2]["decrypted"] is False and "ICV" in records[2]["error"]
    assert records[3]["decrypted"] is True  # the responder's key was left intact


def test_nat_t_capture_matches_tshark() -> None:
    records = _agree(NAT_T)
    kinds = [r["kind"] for r in records]
    assert kinds.count("ike") == 30 and kinds.count("esp") == 24
    assert all(r["non_esp_marker"] for r in records if r["kind"] == "ike")
    assert {r["spi"] for r in records if r["kind"] == "esp"} == {
        "ac0faf03", "c1a9656b", "958a753b", "78bd5377", "b6b5f296", "c1d717e8",
    }  # fmt: skip


def test_redirect_capture_matches_tshark() -> None:
    records = _agree(REDIRECT)
    assert any("REDIRECT" in r.get("notifies", []) for r in records)


def test_linux_xfrm_esp_matches_tshark_and_decrypts_ccm_too() -> None:
    records = _agree(XFRM, esp_table=XFRM_SA)
    assert all(r["decrypted"] for r in records)
    # tshark 4.0 has no ESP AES-CCM: frame 4 is checked against the ident the kernel sent.
    assert records[3]["inner_summary"].endswith("ICMP echo request id 0x0151 seq 1")
    assert [r["next_header"] for r in records] == [4, 4, 4, 4]


def test_esp_wrong_key_reports_mac_mismatch() -> None:
    from aioipsec.wireshark_keys import parse_esp_table

    text = XFRM_SA.read_text().replace(
        "0x3136627974656b65792b34627974656e6f6e6365", "0x" + "11" * 20
    )
    records = list(decode_capture(XFRM, esp_keys=parse_esp_table(text)))
    assert records[0]["decrypted"] is True  # AES-CBC row untouched
    assert records[1]["decrypted"] is False  # CTR without integrity: garbage is not detected
    assert records[2]["decrypted"] is False and "MAC mismatch" in records[2]["error"]


def test_cli_json_lines() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "aioipsec.decode", "--json", str(CCM),
         "--ikev2-keys", str(IKE_TABLE)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [line["frame"] for line in lines] == [1, 2, 3, 4]
    expected = [json_record(r) for r in decode_capture(CCM, load_ikev2_table(IKE_TABLE))]
    assert lines == json.loads(json.dumps(expected))


def test_ip_fragments_are_reassembled_like_tshark(tmp_path: Path) -> None:
    """IKE messages in IPv4 fragments (one set out of order) and IPv6 fragments (scapy's
    fragment/fragment6), decoded at the frame of the last fragment, as tshark does."""
    from scapy.layers.inet import IP, UDP, fragment
    from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, fragment6
    from scapy.layers.l2 import Ether
    from scapy.utils import rdpcap, wrpcap

    frames = []
    for index, packet in enumerate(rdpcap(str(CCM))):
        ip = packet[IP]
        udp = bytes(ip[UDP])
        v4 = fragment(IP(src=ip.src, dst=ip.dst, id=0x100 + index, proto=17) / udp, 64)
        if index == 0:
            v4 = list(reversed(v4))
        frames += [Ether() / f for f in v4]
        v6 = IPv6(src=f"2001:db8::{index % 2 + 1}", dst=f"2001:db8::{2 - index % 2}")
        v6 = v6 / IPv6ExtHdrFragment(id=0x200 + index) / UDP(udp)
        v6[UDP].chksum = None
        frames += [Ether() / f for f in fragment6(v6, 120)]
    capture = tmp_path / "fragments.pcap"
    wrpcap(str(capture), frames)
    records = _agree(capture, IKE_TABLE)
    ike = [r for r in records if r["kind"] == "ike"]
    assert len(ike) == 8  # 4 messages, each over IPv4 and over IPv6
    assert sum(bool(r.get("ip_fragment")) for r in records) == len(records) - 8
    informational = [r["payloads"] for r in ike if r["exchange"] == "INFORMATIONAL"]
    assert informational == [[{"SK": ["DELETE"]}]] * 2 + [[{"SK": []}]] * 2


@pytest.mark.parametrize(
    "linktype",
    ["ethernet", "vlan", "qinq", "sll", "sll2", "raw", "loopback"],
)
def test_link_layers_built_by_scapy(linktype: str) -> None:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether, Loopback

    from aioipsec.decode import ip_from_link

    ip = IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=4500, dport=4500) / b"\xff"
    frames = {
        "ethernet": (1, Ether() / ip),
        "vlan": (1, Ether() / Dot1Q(vlan=7) / ip),
        "qinq": (1, Ether() / Dot1AD(vlan=3) / Dot1Q(vlan=7) / ip),
        "sll": (113, CookedLinux(proto=0x0800) / ip),
        "sll2": (276, CookedLinuxV2(proto=0x0800) / ip),
        "raw": (101, ip),
        "loopback": (0, Loopback(type=2) / ip),
    }
    number, frame = frames[linktype]
    assert ip_from_link(number, bytes(frame)) == bytes(ip)


@pytest.mark.parametrize("crypt", ["AES-CBC", "NULL"])
def test_esp_any_bit_authentication_rows_like_tshark(tmp_path: Path, crypt: str) -> None:
    """esp_sa rows with "ANY 96 bit authentication [no checking]": ESP made by scapy's own
    implementation with HMAC-SHA1-96, decoded without checking the ICV, as tshark does."""
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.ipsec import ESP, SecurityAssociation
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    key = bytes(range(16)) if crypt == "AES-CBC" else None
    sa = SecurityAssociation(ESP, spi=0x01020304, crypt_algo=crypt, crypt_key=key,
                             auth_algo="HMAC-SHA1-96", auth_key=b"\x42" * 20,
                             tunnel_header=IP(src="192.0.2.1", dst="192.0.2.2"))  # fmt: skip
    packets = [Ether() / sa.encrypt(IP(src="10.1.0.1", dst="10.2.0.1") / ICMP(id=0x5151, seq=n))
               for n in (1, 2)]  # fmt: skip
    capture = tmp_path / "any.pcap"
    wrpcap(str(capture), packets)
    name = "AES-CBC [RFC3602]" if crypt == "AES-CBC" else "NULL"
    table = tmp_path / "esp_sa"
    table.write_text(
        f'"IPv4","192.0.2.1","192.0.2.2","0x01020304","{name}",'
        f'"{"0x" + key.hex() if key else ""}","ANY 96 bit authentication [no checking]",""\n'
    )
    records = _agree(capture, esp_table=table)
    assert [r["inner_summary"] for r in records] == [
        "IPv4 10.1.0.1 -> 10.2.0.1 ICMP echo request id 0x5151 seq 1",
        "IPv4 10.1.0.1 -> 10.2.0.1 ICMP echo request id 0x5151 seq 2",
    ]
