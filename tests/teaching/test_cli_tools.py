"""The three tools through the ``aioipsec`` command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.reference_data import CAPTURES

pytestmark = pytest.mark.timeout(120)


def _aioipsec(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aioipsec", *args], capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def test_help_lists_the_tools() -> None:
    out = _aioipsec("--help")
    for name in ("decode", "explain", "doctor"):
        assert f"    {name} " in out.stdout


def test_decode_json_through_the_cli() -> None:
    capture = CAPTURES / "wireshark_ikev2-decrypt-aes128ccm12_4frames_from_scapy.pcap"
    table = CAPTURES / "wireshark_ikev2_decryption_table.csv"
    out = _aioipsec("decode", "--json", str(capture), "--ikev2-keys", str(table))
    assert out.returncode == 0, out.stderr
    frames = [json.loads(line) for line in out.stdout.splitlines()]
    assert [f["exchange"] for f in frames] == ["IKE_SA_INIT"] * 2 + ["INFORMATIONAL"] * 2
    assert frames[2]["payloads"] == [{"SK": ["DELETE"]}]
    missing = _aioipsec("decode", "/nonexistent.pcap")
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_explain_and_doctor_through_the_cli() -> None:
    module = subprocess.run([sys.executable, "-m", "aioipsec.explain", "--seed", "5"],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    cli = _aioipsec("explain", "--seed", "5")
    assert cli.returncode == 0 and cli.stdout == module.stdout
    doctor = _aioipsec("doctor", "--json")
    assert doctor.returncode in (0, 1)
    assert {c["name"] for c in json.loads(doctor.stdout)} >= {"privileges", "tun", "firewall"}


def test_decode_brief_and_verbose_text() -> None:
    capture = CAPTURES / "wireshark_ikev2-decrypt-aes128ccm12_4frames_from_scapy.pcap"
    table = CAPTURES / "wireshark_ikev2_decryption_table.csv"
    brief = _aioipsec("decode", "--brief", str(capture), "--ikev2-keys", str(table))
    lines = brief.stdout.splitlines()
    assert len(lines) == 4
    assert lines[0].endswith("IKE IKE_SA_INIT request #0: HDR, SA, KE, Nonce, "
                             "N(NAT_DETECTION_SOURCE_IP), N(NAT_DETECTION_DESTINATION_IP), "
                             "N(SIGNATURE_HASH_ALGORITHMS)")  # fmt: skip
    assert lines[2].endswith("IKE INFORMATIONAL request #2: HDR, SK {D}")
    verbose = _aioipsec("decode", str(capture), "--ikev2-keys", str(table)).stdout
    assert "proposal #1 IKE: aes128ccm12-prfsha256-ecp256" in verbose
    assert "IKE: (the IKE SA itself)" in verbose  # the decrypted Delete payload
