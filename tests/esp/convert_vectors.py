"""Convert the ESP packet vectors of ``tests/data/reference/vectors`` into
``aioipsec/vectors/esp_*.json`` (package data: the selftest reads it when the daemon starts).

Run ``python -m tests.esp.convert_vectors [REFERENCE_DIR]``. Values are copied from the
text files; the only computed field is ``inner`` of the Linux xfrm packets (the text gives
ciphertext only), which is decrypted here by scapy's ``SecurityAssociation``, an
implementation we did not write. ``tests/esp/test_vectors.py`` checks that the committed
JSON is exactly what this produces.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "tests" / "data" / "reference" / "vectors"
VECTORS = ROOT / "aioipsec" / "vectors"


def parse_sections(path: Path) -> list[tuple[str, dict[str, str], list[str]]]:
    """[(section title, {key: value}, comment lines)] of a reference text file."""
    sections: list[tuple[str, dict[str, str], list[str]]] = []
    for line in path.read_text().splitlines():
        line = line.rstrip()
        if line.startswith("[") and line.endswith("]"):
            sections.append((line[1:-1], {}, []))
        elif sections and line.startswith("#"):
            sections[-1][2].append(line.lstrip("# "))
        elif sections and "=" in line:
            key, value = line.split("=", 1)
            sections[-1][1][key.strip()] = value.split("#", 1)[0].strip()
    return sections


def _trailer(plaintext: bytes) -> tuple[bytes, int]:
    pad_len, next_header = plaintext[-2], plaintext[-1]
    return plaintext[: len(plaintext) - 2 - pad_len], next_header


def gcm_draft(reference: Path) -> dict:
    name = "draft-mcgrew-gcm-test-01_aes_gcm_esp.txt"
    records = []
    for title, v, _ in parse_sections(reference / name):
        number = int(re.match(r"case (\d+)", title).group(1))  # type: ignore[union-attr]  # all match
        seq_hex = v["seq"]
        plaintext = bytes.fromhex(v["plaintext"])
        payload, next_header = _trailer(plaintext)
        records.append(
            {
                "kind": "esp_packet",
                "name": f"draft-mcgrew-gcm-test-01 {title}",
                "source": f"{name} [{title}]: draft-mcgrew-gcm-test-01 sec. 4, test case {number}",
                "encr": "ENCR_AES_GCM_16",
                "encr_key": v["keymat"],
                "integ": "NONE",
                "integ_key": "",
                "esn": len(seq_hex) == 16,
                "spi": int(v["spi"], 16),
                "seq": int(seq_hex, 16),
                "iv": v["iv"],
                "mode": "transport",
                "plaintext": v["plaintext"],
                "payload": payload.hex(),
                "next_header": next_header,
                "packet": v["esp_packet"],
            }
        )
    return {"description": "AES-GCM ESP packets (draft-mcgrew-gcm-test-01, RFC 4106)",
            "records": records}  # fmt: skip


def chacha_rfc7634(reference: Path) -> dict:
    name = "rfc7634_chacha20poly1305_esp_ikev2.txt"
    title, v, _ = next(s for s in parse_sections(reference / name) if s[0].startswith("Appendix A"))
    plaintext = bytes.fromhex(v["plaintext"])
    payload, next_header = _trailer(plaintext)
    record = {
        "kind": "esp_packet",
        "name": "RFC 7634 Appendix A: ESP tunnel mode, ICMP echo",
        "source": f"{name} [{title}]: RFC 7634 Appendix A",
        "encr": "ENCR_CHACHA20_POLY1305",
        "encr_key": v["keymat"],
        "integ": "NONE",
        "integ_key": "",
        "esn": False,
        "spi": int(v["spi"], 16),
        "seq": int(v["seq"], 16),
        "iv": v["iv"],
        "mode": "tunnel",
        "plaintext": v["plaintext"],
        "payload": payload.hex(),
        "next_header": next_header,
        "packet": v["esp_packet"],
    }
    return {"description": "ChaCha20-Poly1305 ESP packet (RFC 7634 Appendix A)",
            "records": [record]}  # fmt: skip


def cbc_rfc3602(reference: Path) -> dict:
    name = "rfc3602_aes_cbc_esp.txt"
    records = []
    for title, v, _ in parse_sections(reference / name):
        number = int(re.match(r"Case #(\d+)", title).group(1))  # type: ignore[union-attr]  # all match
        if number < 5:
            continue  # cases 1-4 are raw AES-CBC blocks, in cipher_strongswan_kat.json
        next_header = int(v["next_header"], 16)
        record = {
            "kind": "esp_packet",
            "name": f"RFC 3602 {title}",
            "source": f"{name} [{title}]: RFC 3602 sec. 4, case #{number}",
            "encr": "ENCR_AES_CBC",
            "encr_key": v["key"],
            "integ": "NONE",
            "integ_key": "",
            "allow_no_integrity": True,  # the RFC 3602 examples use no authentication
            "esn": False,
            "spi": int(v["spi"], 16),
            "seq": int(v["seq"], 16),
            "iv": v["iv"],
            "mode": "tunnel" if next_header == 4 else "transport",
            "plaintext": v["plaintext_with_trailer"],
            "payload": v["payload"],
            "next_header": next_header,
            "packet": v["esp"],
        }
        if "full_packet_after" in v:
            # The whole IPv4 packet before and after transport-mode ESP (case 5).
            record["ip_packet"] = v["ip_header_before"] + v["payload"]
            record["ip_packet_protected"] = v["full_packet_after"]
        records.append(record)
    return {"description": "AES-CBC ESP packets without integrity (RFC 3602 sec. 4)",
            "records": records}  # fmt: skip


_LINUX_ALGOS = {
    "cbc(aes)": ("ENCR_AES_CBC", "AES-CBC"),
    "rfc3686(ctr(aes))": ("ENCR_AES_CTR", "AES-CTR"),
    "rfc4106(gcm(aes))": ("ENCR_AES_GCM_16", "AES-GCM"),
    "rfc4543(gcm(aes))": ("ENCR_NULL_AUTH_AES_GMAC", "AES-NULL-GMAC"),
    "rfc4309(ccm(aes))": ("ENCR_AES_CCM_8", "AES-CCM"),
    "cbc(des)": ("ENCR_DES", None),
    "cbc(des3_ede)": ("ENCR_3DES", None),
    "cbc(blowfish)": ("ENCR_BLOWFISH", None),
    "cbc(cast5)": ("ENCR_CAST", None),
}


def linux_xfrm(reference: Path) -> dict:
    from scapy.layers.inet import IP
    from scapy.layers.ipsec import ESP, SecurityAssociation

    name = "linux_xfrm_esp_packets.txt"
    records = []
    for title, v, comments in parse_sections(reference / name):
        command = " ".join(comments)
        algo, key = re.search(r"(?:enc|aead) '([^']+)' '0x([0-9a-f]+)'", command).groups()  # type: ignore[union-attr]  # all match
        ours, theirs = _LINUX_ALGOS[algo]
        esn = title.endswith("-- ESN")
        # Both ESN packets use sequence-number high half 1 ('replay-oseq-hi 0x1'; the GCM
        # one was re-tagged for high half 1, see the notes at the end of the text file).
        seq_high = 1 if esn else 0
        spi = int(v["spi"], 16)
        seq_low = int(v["seq"])
        packet = (
            spi.to_bytes(4, "big") + seq_low.to_bytes(4, "big") + bytes.fromhex(v["esp_payload"])
        )
        source = f"{name} [{title}]: scapy test/scapy/layers/ipsec.uts (Linux xfrm output)"
        record: dict[str, object] = {
            "kind": "esp_refused_algorithm" if theirs is None else "esp_packet_decrypt",
            "name": f"Linux xfrm {title}",
            "source": source,
            "encr": ours,
            "encr_key": key,
            "integ": "NONE",
            "integ_key": "",
            "esn": esn,
            "spi": spi,
            "seq": (seq_high << 32) | seq_low,
            "mode": "tunnel",
            "packet": packet.hex(),
        }
        if theirs is not None:
            sa = SecurityAssociation(
                ESP, spi=spi, crypt_algo=theirs, crypt_key=bytes.fromhex(key),
                crypt_icv_size=8 if theirs == "AES-CCM" else None, tunnel_header=IP(),
                esn_en=esn, esn=seq_high,
            )  # fmt: skip
            outer = IP(src="10.125.0.2", dst="10.125.0.1", proto=50) / ESP(packet)
            inner = bytes(sa.decrypt(IP(bytes(outer))))
            record["allow_no_integrity"] = ours in ("ENCR_AES_CBC", "ENCR_AES_CTR")
            record["inner"] = inner.hex()
            record["next_header"] = 4
        records.append(record)
    return {"description": "ESP packets made by the Linux kernel (xfrm), via scapy's tests",
            "records": records}  # fmt: skip


FILES = {
    "esp_gcm_draft_mcgrew.json": gcm_draft,
    "esp_rfc7634_chacha20poly1305.json": chacha_rfc7634,
    "esp_rfc3602_cbc.json": cbc_rfc3602,
    "esp_linux_xfrm.json": linux_xfrm,
}


def render(reference: Path = REFERENCE) -> dict[str, str]:
    return {name: json.dumps(make(reference), indent=1) + "\n" for name, make in FILES.items()}


def main(argv: list[str]) -> int:
    reference = Path(argv[1]) if len(argv) > 1 else REFERENCE
    for name, text in render(reference).items():
        (VECTORS / name).write_text(text)
        print(f"wrote aioipsec/vectors/{name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
