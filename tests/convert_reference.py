"""Convert the IKE-side known-answer text files into the JSON files of ``aioipsec/vectors/``.

Run from the checkout root: ``python -m tests.convert_reference [REFERENCE_DIR]`` (default
``tests/data/reference/vectors``, the in-repository copies of the reference text files). The
output is committed package data; this script documents how it was made and lets anyone redo
it (``tests/test_vectors.py`` checks that the committed JSON is exactly what it makes). The
ESP packet vectors (``esp_*.json``) are made by ``tests/esp/convert_vectors.py``.

Every record gets ``kind`` (what the selftest runs it through), ``name`` and ``source``
(the text file, the section as its header names it, and the original origin).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Where the JSON goes (the package data the selftest reads); a test points it at a tmp folder.
HERE = Path(__file__).resolve().parents[1] / "aioipsec" / "vectors"
REFERENCE = Path(__file__).resolve().parent / "data" / "reference" / "vectors"

Record = dict[str, Any]
SwanConverter = Callable[[str, str, str], list[Record]]


def _blocks(text: str) -> list[tuple[str, dict[str, str], list[str]]]:
    """``[header]`` blocks of ``key = value`` lines, with the ``#`` comments of each block."""
    blocks: list[tuple[str, dict[str, str], list[str]]] = []
    header = None
    fields: dict[str, str] = {}
    comments: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("["):
            if header is not None:
                blocks.append((header, fields, comments))
            header, fields, comments = line, {}, []
        elif line.startswith("#"):
            if header is not None:
                comments.append(line.lstrip("# "))
        elif "=" in line and header is not None:
            key, _, value = line.partition("=")
            value = value.split("#", 1)[0].strip()
            fields[key.strip()] = value
    if header is not None:
        blocks.append((header, fields, comments))
    return blocks


def _count_blocks(text: str) -> list[dict[str, str]]:
    """``COUNT = n`` blocks (pyca / NIST .rsp style)."""
    records: list[dict[str, str]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("COUNT"):
            records.append({})
        if "=" in line and records and not line.startswith("#"):
            key, _, value = line.partition("=")
            records[-1][key.strip()] = value.strip()
    return records


def _header_name(header: str) -> str:
    return header.split("]")[0].lstrip("[").strip()


def _named_blocks(text: str) -> list[tuple[str, dict[str, str], list[str]]]:
    """:func:`_blocks` with each header reduced to its name."""
    return [(_header_name(header), fields, comments) for header, fields, comments in _blocks(text)]


_HASH_PRF = {
    "SHA-1": "PRF_HMAC_SHA1",
    "SHA-256": "PRF_HMAC_SHA2_256",
    "SHA-384": "PRF_HMAC_SHA2_384",
    "SHA-512": "PRF_HMAC_SHA2_512",
}
_HASH_INTEG = {
    "SHA-256": "AUTH_HMAC_SHA2_256_128",
    "SHA-384": "AUTH_HMAC_SHA2_384_192",
    "SHA-512": "AUTH_HMAC_SHA2_512_256",
}


def convert_rfc4868(text: str) -> list[Record]:
    records: list[Record] = []
    for name, fields, comments in _named_blocks(text):
        case, hash_name = name.split(" ")
        xcheck = next((c for c in comments if c.startswith("xcheck")), "")
        source = f"rfc4868_hmac_sha2_prf_auth.txt [{name}]: RFC 4868 sec. 2.7"
        source += ".1" if case.startswith("PRF") else ".2"
        if xcheck:
            source += f" ({xcheck})"
        prf_key = next(k for k in fields if k.startswith("PRF-HMAC"))
        records.append(
            {
                "kind": "prf",
                "name": f"{case} {hash_name} PRF",
                "source": source,
                "prf": _HASH_PRF[hash_name],
                "key": fields["key"],
                "data": fields["data"],
                "output": fields[prf_key],
            }
        )
        auth_key = next((k for k in fields if k.startswith("HMAC-")), None)
        if auth_key:
            records.append(
                {
                    "kind": "integ",
                    "name": f"{case} {hash_name} {auth_key}",
                    "source": source,
                    "integ": _HASH_INTEG[hash_name],
                    "key": fields["key"],
                    "data": fields["data"],
                    "icv": fields[auth_key],
                }
            )
    return records


# RFC 3566 sec. 4: (message length, full 128-bit AES-XCBC-MAC) with key 000102..0f; the
# MAC-96 values the RFC prints are the first 12 octets of these.
RFC3566_XCBC_MACS = [
    (0, "75f0251d528ac01c4573dfd584d79f29"),
    (3, "5b376580ae2f19afe7219ceef172756f"),
    (16, "d2a246fa349b68a79998a4394ff7a263"),
    (20, "47f51b4564966215b8985c63055ed308"),
    (32, "f54f0ec8d2b9f3d36807734bd5283fd4"),
    (34, "becbb3bccdb518a30677d5481fb6b4d8"),
]


def aes_prf_records() -> list[Record]:
    """RFC 3566 sec. 4, RFC 4434 sec. 2.1 and RFC 4615 sec. 4 (transcribed from the RFCs).

    Not in the shared reference folder: the RFC texts' own test vectors, identical in every
    public transcription compared (libreswan, strongSwan, Android IKE tests).
    """
    key16 = bytes(range(16)).hex()
    key10 = bytes(range(10)).hex()
    key18 = bytes(range(16)).hex() + "edcb"
    message20 = bytes(range(20)).hex()
    records: list[Record] = []
    for number, (length, output) in enumerate(RFC3566_XCBC_MACS, start=1):
        records.append(
            {
                "kind": "prf",
                "name": f"AES-XCBC-MAC test case #{number} ({length}-octet message)",
                "source": f"RFC 3566 sec. 4 [test case #{number}, full 128-bit MAC]",
                "prf": "PRF_AES128_XCBC",
                "key": key16,
                "data": bytes(range(length)).hex(),
                "output": output,
            }
        )
    # The PRFs over a 20-octet message with keys shorter, equal and longer than 16 octets.
    for prf_name, section, prf, outputs in (
        (
            "AES-XCBC-PRF-128",
            "RFC 4434 sec. 2.1",
            "PRF_AES128_XCBC",
            (
                (key16, "47f51b4564966215b8985c63055ed308"),
                (key10, "0fa087af7d866e7653434e602fdde835"),
                (key18, "8cd3c93ae598a9803006ffb67c40e9e4"),
            ),
        ),
        (
            "AES-CMAC-PRF-128",
            "RFC 4615 sec. 4",
            "PRF_AES128_CMAC",
            (
                (key18, "84a348a4a45d235babfffc0d2b4da09a"),
                (key16, "980ae87b5f4c9c5214f5b6a8455e4c2d"),
                (key10, "290d9e112edb09ee141fcf64c0b72f3d"),
            ),
        ),
    ):
        for key, output in outputs:
            records.append(
                {
                    "kind": "prf",
                    "name": f"{prf_name} key length {len(key) // 2}",
                    "source": f"{section} [key length {len(key) // 2}]",
                    "prf": prf,
                    "key": key,
                    "data": message20,
                    "output": output,
                }
            )
    return records


def convert_kdf(text: str) -> list[Record]:
    records: list[Record] = []
    # Section A: the CAVP SP 800-135 IKEv2 case (HMAC-SHA-1), COUNT = 0
    section_a = text.split("############ A.", 1)[1].split("############ B.", 1)[0]
    cavp = _count_blocks(section_a)[0]
    source_a = (
        "ikev2_kdf_cavp.txt section A: NIST CAVP SP 800-135 IKEv2 KDF (HMAC-SHA-1), "
        "via libreswan programs/cavp/test.acvp.ikev2.run"
    )
    common = {"prf": "PRF_HMAC_SHA1", "nonce_i": cavp["Ni"], "nonce_r": cavp["Nr"]}
    records.append(
        {
            "kind": "ike_skeyseed",
            "name": "CAVP IKEv2 SHA-1 COUNT 0 SKEYSEED",
            "source": source_a,
            **common,
            "shared_secret": cavp["g^ir"],
            "skeyseed": cavp["SKEYSEED"],
        }
    )
    # DKM is 1056 bits = 132 octets = 3 * 20 (SK_d, SK_pi, SK_pr) + 2 * 20 (SK_a, HMAC-SHA1)
    # + 2 * 16 (SK_e, AES-128): derive_ike_keys with those lengths yields exactly DKM.
    records.append(
        {
            "kind": "ike_dkm",
            "name": "CAVP IKEv2 SHA-1 COUNT 0 DKM",
            "source": source_a,
            **common,
            "spi_i": cavp["SPIi"],
            "spi_r": cavp["SPIr"],
            "shared_secret": cavp["g^ir"],
            "encr_key_len": 16,
            "integ_key_len": 20,
            "dkm": cavp["DKM"],
        }
    )
    sk_d = cavp["DKM"][:40]
    records.append(
        {
            "kind": "child_keymat",
            "name": "CAVP IKEv2 SHA-1 COUNT 0 DKM(Child SA)",
            "source": source_a,
            **common,
            "sk_d": sk_d,
            "shared_secret": None,
            "keymat": cavp["DKM(Child SA)"],
        }
    )
    records.append(
        {
            "kind": "child_keymat",
            "name": "CAVP IKEv2 SHA-1 COUNT 0 DKM(Child SA D-H)",
            "source": source_a,
            **common,
            "sk_d": sk_d,
            "shared_secret": cavp["g^ir (new)"],
            "keymat": cavp["DKM(Child SA D-H)"],
        }
    )
    records.append(
        {
            "kind": "rekey_skeyseed",
            "name": "CAVP IKEv2 SHA-1 COUNT 0 SKEYSEED(Rekey)",
            "source": source_a,
            **common,
            "sk_d_old": sk_d,
            "shared_secret": cavp["g^ir (new)"],
            "skeyseed": cavp["SKEYSEED(Rekey)"],
        }
    )
    # Section B: strongSwan's transcription of CAVP vectors (kdf_prf.c / kdf_prf_plus.c)
    section_b = text.split("############ B.", 1)[1].split("############ C.", 1)[0]
    for name, fields, _comments in _named_blocks(section_b):
        step, label, hash_name = name.split(" ")
        source = (
            f"ikev2_kdf_cavp.txt section B [{name}]: NIST CAVP SP 800-135 IKEv2 via strongSwan "
            + ("kdf_prf.c" if step == "SKEYSEED" else "kdf_prf_plus.c")
            + (" (derived from RFC 4868, not CAVP)" if label.endswith("_old") else "")
        )
        if step == "SKEYSEED":
            records.append(
                {
                    "kind": "ike_skeyseed",
                    "name": f"{label} SKEYSEED",
                    "source": source,
                    "prf": _HASH_PRF[hash_name],
                    "nonces": fields["Ni|Nr"],
                    "shared_secret": fields["g^ir"],
                    "skeyseed": fields["SKEYSEED"],
                }
            )
        else:
            records.append(
                {
                    "kind": "prf_plus",
                    "name": f"{label} DKM",
                    "source": source,
                    "prf": _HASH_PRF[hash_name],
                    "key": fields["SKEYSEED"],
                    "seed": fields["Ni|Nr|SPIi|SPIr"],
                    "output": fields["DKM"],
                }
            )
    return records


_WORKED_EXAMPLE_ALGORITHMS = {"prf": "PRF_HMAC_SHA1", "encr_key_len": 16, "integ_key_len": 20}


def _worked_example_exchange(fields: dict[str, str]) -> Record:
    """The SPIs, nonces and DH secret of the example's IKE_SA_INIT, as C1 and C2 give them."""
    return {
        "spi_i": fields["SPIi"],
        "spi_r": fields["SPIr"],
        "nonce_i": fields["Ni"],
        "nonce_r": fields["Nr"],
        "shared_secret": fields["g^ir"],
    }


def convert_worked_example(text: str) -> list[Record]:
    records: list[Record] = []
    origin = (
        "RUB-NDS/IPsec-StateMachineExtractor IKEv2HandshakeSessionSecretsTest.java; "
        "PRF_HMAC_SHA1, ENCR_AES_CBC-128, AUTH_HMAC_SHA1_96, MODP-1024"
    )
    for name, fields, _comments in _named_blocks(text):
        source = f"ikev2_worked_example_psk_auth.txt [{name}]: {origin}"
        if name.startswith("C1"):
            records.append(
                {
                    "kind": "ike_keys",
                    "name": "worked example C1: SKEYSEED and SK_* split",
                    "source": source,
                    **_WORKED_EXAMPLE_ALGORITHMS,
                    **_worked_example_exchange(fields),
                    "skeyseed": fields["SKEYSEED"],
                    **{key.lower(): fields[key] for key in fields if key.startswith("SK_")},
                }
            )
        elif name.startswith("C2"):
            records.append(
                {
                    "kind": "psk_auth",
                    "name": "worked example C2: initiator PSK AUTH",
                    "source": source,
                    **_WORKED_EXAMPLE_ALGORITHMS,
                    "psk": fields["PSK"],
                    **_worked_example_exchange(fields),
                    "ike_sa_init_request": fields["IKE_SA_INIT_request"],
                    "id_payload_body": fields["IDi_body"],
                    "prf_sk_pi_id": fields["prf(SK_pi, IDi')"],
                    "auth": fields["AUTH"].split("=")[-1].strip(),
                }
            )
    return records


def convert_rfc5903(text: str) -> list[Record]:
    records: list[Record] = []
    methods = {"19": "ECP_256", "20": "ECP_384", "21": "ECP_521"}
    for name, fields, _comments in _named_blocks(text):
        group = name.rsplit(" ", 1)[1]
        section = name.split(",")[0].replace("Section", "sec.")
        records.append(
            {
                "kind": "ke",
                "name": f"RFC 5903 group {group}",
                "source": f"rfc5903_ecp_groups_19_20_21.txt [{name}]: {section}",
                "method": methods[group],
                "private_i": fields["i"],
                "private_r": fields["r"],
                "public_i": fields["gix"] + fields["giy"],
                "public_r": fields["grx"] + fields["gry"],
                "shared": fields["shared_secret"],
                "ke_payload_i": fields["KEi"],
                "ke_payload_r": fields["KEr"],
            }
        )
    return records


def convert_rfc7748(text: str, method: str, file_name: str) -> list[Record]:
    return [
        {
            "kind": "x_function",
            "name": f"RFC 7748 {method} case {fields['COUNT']}",
            "source": (
                f"{file_name} COUNT {fields['COUNT']}: RFC 7748 sec. 5.2 (via pyca/cryptography)"
            ),
            "method": method,
            "scalar": fields["INPUT_SCALAR"],
            "u": fields["INPUT_U"],
            "output": fields["OUTPUT_U"],
        }
        for fields in _count_blocks(text)
    ]


def convert_modp(text: str) -> list[Record]:
    methods = {
        "1": "MODP_768",
        "2": "MODP_1024",
        "5": "MODP_1536",
        "14": "MODP_2048",
        "15": "MODP_3072",
        "16": "MODP_4096",
        "17": "MODP_6144",
        "18": "MODP_8192",
    }
    records: list[Record] = []
    for name, fields, _comments in _named_blocks(text):
        group = name.split(":")[0].split(" ")[-1]
        records.append(
            {
                "kind": "modp_group",
                "name": f"MODP group {group}",
                "source": f"modp_groups_rfc2409_rfc3526.txt [{name}]",
                "method": methods[group],
                "generator": int(fields["generator"], 16),
                "k": int(fields["k"]),
                "prime": fields["prime"],
            }
        )
    return records


_SWAN_METHODS = {
    "CURVE_25519": "CURVE25519",
    "CURVE_448": "CURVE448",
    "ECP_192_BIT": "ECP_192",
    "ECP_224_BIT": "ECP_224",
    "ECP_256_BIT": "ECP_256",
    "ECP_384_BIT": "ECP_384",
    "ECP_521_BIT": "ECP_521",
    "ML_KEM_512": "ML_KEM_512",
    "ML_KEM_768": "ML_KEM_768",
    "ML_KEM_1024": "ML_KEM_1024",
}


def _swan_blocks(text: str, file_name: str, c_file: str) -> list[tuple[str, dict[str, str], str]]:
    """The blocks of a strongSwan KAT file with each one's ``source``: a ``# source:``
    comment names the origin of its block and of the blocks after it."""
    blocks: list[tuple[str, dict[str, str], str]] = []
    origin = ""
    for name, fields, comments in _named_blocks(text):
        origin = next((c[len("source: ") :] for c in comments if c.startswith("source:")), origin)
        source = f"{file_name} [{name}]: strongSwan @3b902ea5 test_vectors/{c_file}"
        blocks.append((name, fields, f"{source} ({origin})" if origin else source))
    return blocks


def convert_swan_ke(text: str, file_name: str, c_file: str) -> list[Record]:
    records: list[Record] = []
    for name, fields, source in _swan_blocks(text, file_name, c_file):
        method = _SWAN_METHODS[fields["method"]]
        if method.startswith("ML_KEM"):
            records.append(
                {
                    "kind": "ke_mlkem_kat",
                    "name": f"strongSwan {name}",
                    "source": source,
                    "method": method,
                    "drbg_seed": fields["seed"],
                    "encapsulation_key": fields["pub_i"],
                    "ciphertext": fields["pub_r"],
                    "shared": fields["shared"],
                }
            )
            continue
        seed = fields["seed"]
        half = len(seed) // 2
        records.append(
            {
                "kind": "ke",
                "name": f"strongSwan {name}",
                "source": source,
                "method": method,
                "private_i": seed[:half],
                "private_r": seed[half:],
                "public_i": fields["pub_i"],
                "public_r": fields["pub_r"],
                "shared": fields["shared"],
            }
        )
    return records


_SWAN_AEAD = {
    "ENCR_AES_GCM_ICV8": "ENCR_AES_GCM_8",
    "ENCR_AES_GCM_ICV12": "ENCR_AES_GCM_12",
    "ENCR_AES_GCM_ICV16": "ENCR_AES_GCM_16",
    "ENCR_AES_CCM_ICV8": "ENCR_AES_CCM_8",
    "ENCR_AES_CCM_ICV12": "ENCR_AES_CCM_12",
    "ENCR_AES_CCM_ICV16": "ENCR_AES_CCM_16",
}


def convert_swan_cipher(text: str, file_name: str, c_file: str) -> list[Record]:
    records: list[Record] = []
    for name, fields, source in _swan_blocks(text, file_name, c_file):
        key_size = int(fields["key_size"])
        key = fields["key"]
        if fields["alg"] == "ENCR_AES_CBC":
            records.append(
                {
                    "kind": "cipher_cbc",
                    "name": f"strongSwan {name}",
                    "source": source,
                    "encr": "ENCR_AES_CBC",
                    "key": key,
                    "iv": fields["iv"],
                    "plaintext": fields.get("plain", ""),
                    "ciphertext": fields["cipher"],
                }
            )
            continue
        salt_size = int(fields["salt_size"])
        if len(key) != 2 * (key_size + salt_size):
            # aes_ccm15 lists 35 key octets for key_size 16; strongSwan's test uses the
            # first key_size + salt_size octets only, and so do we.
            source += (
                f" [key_size {key_size}: only the first {key_size + salt_size} key octets used]"
            )
        records.append(
            {
                "kind": "aead",
                "name": f"strongSwan {name}",
                "source": source,
                "encr": _SWAN_AEAD[fields["alg"]],
                "key": key[: 2 * key_size],
                "salt": key[2 * key_size : 2 * (key_size + salt_size)],
                "iv": fields["iv"],
                "aad": fields.get("adata", ""),
                "plaintext": fields.get("plain", ""),
                "ciphertext": fields["cipher"],
            }
        )
    return records


def convert_rfc3686(text: str) -> list[Record]:
    records: list[Record] = []
    for name, fields, _comments in _named_blocks(text):
        number = name.split(":")[0].replace("Test Vector ", "")
        records.append(
            {
                "kind": "cipher_ctr",
                "name": f"RFC 3686 test vector {number}",
                "source": f"rfc3686_aes_ctr.txt [{name}]: RFC 3686 sec. 6 (via libreswan)",
                "encr": "ENCR_AES_CTR",
                "keymat": fields["keymat"],
                "iv": fields["iv"],
                "counter_block": fields["counter_block"],
                "plaintext": fields["plaintext"],
                "ciphertext": fields["ciphertext"],
            }
        )
    return records


def convert_rfc7634_ikev2(text: str) -> list[Record]:
    """Only Appendix B (the IKEv2 SK payload); Appendix A is an ESP packet (esp_*.json)."""
    records: list[Record] = []
    for name, fields, _comments in _named_blocks(text):
        if not name.startswith("Appendix B"):
            continue
        plaintext = fields["plaintext"]
        records.append(
            {
                "kind": "sk_payload",
                "name": "RFC 7634 Appendix B: INFORMATIONAL with SET_WINDOW_SIZE",
                "source": (
                    f"rfc7634_chacha20poly1305_esp_ikev2.txt [{name.split(' (')[0]}]: "
                    "RFC 7634 Appendix B (via strongSwan chacha20poly1305.c)"
                ),
                "encr": "ENCR_CHACHA20_POLY1305",
                "encr_key_bits": None,
                "integ": None,
                "sk_e": fields["keymat"],
                "sk_a": None,
                "iv": fields["iv"],
                "aad": fields["aad"],
                # the RFC's plaintext ends with Pad Length 0: the inner payloads are the rest
                "inner_payloads": plaintext[:-2],
                "sealed": fields["iv"] + fields["ciphertext_and_icv"],
                "ike_message": fields["ike_message"],
            }
        )
    return records


def _write(file_name: str, description: str, records: list[Record]) -> None:
    for record in records:
        assert record.get("kind") and record.get("source") and record.get("name"), record
    document = {"description": description, "records": records}
    path = HERE / file_name
    path.write_text(json.dumps(document, indent=1) + "\n")
    print(f"{path.name}: {len(records)} records")


def main(reference: Path) -> None:
    def read(name: str) -> str:
        return (reference / name).read_text()

    def swan(
        convert: Callable[[str, str, str], list[Record]], kat: str, c_file: str
    ) -> list[Record]:
        """A strongSwan KAT file, converted: ``strongswan_kat_{kat}.txt`` from ``c_file``."""
        file_name = f"strongswan_kat_{kat}.txt"
        return convert(read(file_name), file_name, c_file)

    def rfc7748(file_name: str, method: str) -> list[Record]:
        return convert_rfc7748(read(file_name), method, file_name)

    _write(
        "ike_prf_rfc4868.json",
        "HMAC-SHA2 PRF and truncated integrity (RFC 4868 sec. 2.7)",
        convert_rfc4868(read("rfc4868_hmac_sha2_prf_auth.txt")),
    )
    _write(
        "ike_prf_aes.json",
        "AES-XCBC (RFC 3566, RFC 4434) and AES-CMAC (RFC 4615) PRFs",
        aes_prf_records(),
    )
    _write(
        "ike_kdf.json",
        "IKEv2 key derivation: SKEYSEED, prf+, Child SA KEYMAT, rekey (NIST CAVP)",
        convert_kdf(read("ikev2_kdf_cavp.txt")),
    )
    _write(
        "ike_worked_example.json",
        "A real IKE_SA_INIT: SK_* split and PSK AUTH (independent Java implementation)",
        convert_worked_example(read("ikev2_worked_example_psk_auth.txt")),
    )
    _write(
        "ke_rfc5903_ecp.json",
        "ECP groups 19/20/21 with KE payloads (RFC 5903 sec. 8)",
        convert_rfc5903(read("rfc5903_ecp_groups_19_20_21.txt")),
    )
    _write(
        "ke_rfc7748.json",
        "X25519 / X448 scalar multiplication (RFC 7748 sec. 5.2)",
        rfc7748("X25519_rfc7748.txt", "CURVE25519") + rfc7748("X448_rfc7748.txt", "CURVE448"),
    )
    _write(
        "ke_modp_groups.json",
        "MODP group primes (RFC 2409 sec. 6, RFC 3526)",
        convert_modp(read("modp_groups_rfc2409_rfc3526.txt")),
    )
    _write(
        "ke_strongswan_kat.json",
        "strongSwan key exchange KATs: Curve25519/448, ECP, ML-KEM (liboqs KAT)",
        swan(convert_swan_ke, "curve25519", "curve25519.c")
        + swan(convert_swan_ke, "curve448", "curve448.c")
        + swan(convert_swan_ke, "ecp", "ecp.c")
        + swan(convert_swan_ke, "ml_kem", "ml_kem.c"),
    )
    _write(
        "cipher_strongswan_kat.json",
        "strongSwan cipher KATs: AES-CBC, AES-GCM, AES-CCM",
        swan(convert_swan_cipher, "aes_cbc", "aes_cbc.c")
        + swan(convert_swan_cipher, "aes_gcm", "aes_gcm.c")
        + swan(convert_swan_cipher, "aes_ccm", "aes_ccm.c"),
    )
    _write(
        "ike_sk_rfc7634.json",
        "SK payload with ChaCha20-Poly1305 (RFC 7634 Appendix B)",
        convert_rfc7634_ikev2(read("rfc7634_chacha20poly1305_esp_ikev2.txt")),
    )
    _write(
        "cipher_rfc3686_ctr.json",
        "AES-CTR for IPsec (RFC 3686 sec. 6)",
        convert_rfc3686(read("rfc3686_aes_ctr.txt")),
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REFERENCE)
