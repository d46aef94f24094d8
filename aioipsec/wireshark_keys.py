"""Read Wireshark's two IPsec key tables: ``ikev2_decryption_table`` and ``esp_sa``.

These are the files ``aioipsec daemon --save-keys DIR`` writes (:mod:`aioipsec.keyexport`)
and the ones Wireshark users keep in their personal configuration directory (UAT files,
one record per line, ``#`` comments, comma separated, strings in double quotes with
backslash escapes). ``aioipsec decode --ikev2-keys/--esp-keys`` uses them::

    ike_rows = load_ikev2_table("ikev2_decryption_table")   # list[IkeKeyEntry]
    esp_rows = load_esp_table("esp_sa")                       # list[EspKeyEntry]

Algorithm names are Wireshark's own (epan/dissectors/packet-isakmp.c and packet-ipsec.c),
the same strings :mod:`aioipsec.keyexport` writes. A name this module cannot map to an
algorithm we implement is kept (``supported`` False, ``why`` says what is missing), so
the decoder can say why a frame stays encrypted instead of silently skipping it.

Keys in these files are live secrets: nothing here logs or prints them.
"""

from __future__ import annotations

import csv
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from ikev2.enums import EncrId, IntegId

__all__ = [
    "EspKeyEntry",
    "IkeKeyEntry",
    "KeyTableError",
    "load_esp_table",
    "load_ikev2_table",
    "parse_esp_table",
    "parse_ikev2_table",
]


class KeyTableError(ValueError):
    """A line of a key table that cannot be read (the message names file and line)."""


# --------------------------------------------------------------------------- IKEv2 names

# "AES-GCM-256 with 16 octet ICV [RFC5282]", "AES-CCM-128 with 12 octet ICV [RFC5282]"
_IKE_AEAD = re.compile(r"AES-(GCM|CCM)-(128|192|256) with (8|12|16) octet ICV")
_IKE_CBC = re.compile(r"AES-CBC-(128|192|256)")
_IKE_CTR = re.compile(r"AES-CTR-(128|192|256)")
_AEAD_IDS = {
    ("GCM", 8): EncrId.ENCR_AES_GCM_8,
    ("GCM", 12): EncrId.ENCR_AES_GCM_12,
    ("GCM", 16): EncrId.ENCR_AES_GCM_16,
    ("CCM", 8): EncrId.ENCR_AES_CCM_8,
    ("CCM", 12): EncrId.ENCR_AES_CCM_12,
    ("CCM", 16): EncrId.ENCR_AES_CCM_16,
}
_IKE_INTEG = {
    "NONE": IntegId.NONE,
    "HMAC_MD5_96": IntegId.AUTH_HMAC_MD5_96,
    "HMAC_SHA1_96": IntegId.AUTH_HMAC_SHA1_96,
    "HMAC_SHA2_256_128": IntegId.AUTH_HMAC_SHA2_256_128,
    "HMAC_SHA2_384_192": IntegId.AUTH_HMAC_SHA2_384_192,
    "HMAC_SHA2_512_256": IntegId.AUTH_HMAC_SHA2_512_256,
    "HMAC_SHA1_160": IntegId.AUTH_HMAC_SHA1_160,
}


def _ike_encryption(name: str) -> tuple[EncrId | None, int | None]:
    if match := _IKE_AEAD.search(name):
        return _AEAD_IDS[(match.group(1), int(match.group(3)))], int(match.group(2))
    if match := _IKE_CBC.search(name):
        return EncrId.ENCR_AES_CBC, int(match.group(1))
    if match := _IKE_CTR.search(name):
        return EncrId.ENCR_AES_CTR, int(match.group(1))
    if name.startswith("3DES"):
        return EncrId.ENCR_3DES, None
    if name.startswith("NULL"):
        return EncrId.ENCR_NULL, None
    if name.startswith("CHACHA20") or name.startswith("ChaCha20"):
        return EncrId.ENCR_CHACHA20_POLY1305, 256
    return None, None


def _ike_integrity(name: str) -> IntegId | None:
    word = name.split(" [", 1)[0].strip()
    return _IKE_INTEG.get(word)


# ---------------------------------------------------------------------------- ESP names

_ESP_ENCR_NAMES = {
    "NULL": EncrId.ENCR_NULL,
    "AES-CBC": EncrId.ENCR_AES_CBC,
    "AES-CTR": EncrId.ENCR_AES_CTR,
    "AES-GCM with 8 octet ICV": EncrId.ENCR_AES_GCM_8,
    "AES-GCM with 12 octet ICV": EncrId.ENCR_AES_GCM_12,
    "AES-GCM with 16 octet ICV": EncrId.ENCR_AES_GCM_16,
    # Wireshark 4.0 has no CCM/ChaCha20 in esp_sa; later versions and the reference
    # table of tests use these names.
    "AES-CCM with 8 octet ICV": EncrId.ENCR_AES_CCM_8,
    "AES-CCM with 12 octet ICV": EncrId.ENCR_AES_CCM_12,
    "AES-CCM with 16 octet ICV": EncrId.ENCR_AES_CCM_16,
    "ChaCha20 with Poly1305": EncrId.ENCR_CHACHA20_POLY1305,
    "NULL Encryption with AES-GMAC": EncrId.ENCR_NULL_AUTH_AES_GMAC,
    "TripleDES-CBC": EncrId.ENCR_3DES,
    "DES-CBC": EncrId.ENCR_DES,
}
_ESP_AUTH_NAMES = {
    "NULL": IntegId.NONE,
    "HMAC-SHA-1-96": IntegId.AUTH_HMAC_SHA1_96,
    "HMAC-SHA-256-128": IntegId.AUTH_HMAC_SHA2_256_128,
    "HMAC-SHA-384-192": IntegId.AUTH_HMAC_SHA2_384_192,
    "HMAC-SHA-512-256": IntegId.AUTH_HMAC_SHA2_512_256,
    "HMAC-MD5-96": IntegId.AUTH_HMAC_MD5_96,
}
_ANY_BITS = re.compile(r"ANY (\d+) bit authentication", re.IGNORECASE)


def _strip_reference(name: str) -> str:
    return name.split(" [", 1)[0].strip()


# ------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class IkeKeyEntry:
    """One row of ``ikev2_decryption_table``: the SK_e/SK_a keys of one IKE SA.

    ``encr``/``encr_key_bits``/``integ`` are None when the Wireshark name is unknown here.
    ``sk_ei``/``sk_er`` include the AEAD salt (RFC 5282 sec. 7.1), as Wireshark expects.
    """

    spi_i: bytes
    spi_r: bytes
    encryption_name: str
    integrity_name: str
    encr: EncrId | None
    encr_key_bits: int | None
    integ: IntegId | None
    sk_ei: bytes = field(repr=False)
    sk_er: bytes = field(repr=False)
    sk_ai: bytes = field(repr=False, default=b"")
    sk_ar: bytes = field(repr=False, default=b"")

    @property
    def key(self) -> tuple[bytes, bytes]:
        return self.spi_i, self.spi_r


@dataclass(frozen=True)
class EspKeyEntry:
    """One row of ``esp_sa``: one direction of an ESP SA.

    ``source``/``destination`` are an address, a network (``10.0.0.0/8``) or ``*``;
    ``spi`` is None for Wireshark's ``*`` wildcard. ``icv_bits`` is set for the
    "ANY n bit authentication [no checking]" rows (ICV skipped, not verified).
    """

    family: str
    source: str
    destination: str
    spi: int | None
    encryption_name: str
    authentication_name: str
    encr: EncrId | None
    integ: IntegId | None
    encr_key: bytes = field(repr=False)
    integ_key: bytes = field(repr=False, default=b"")
    icv_bits: int | None = None

    def matches(self, source: str, destination: str, spi: int) -> bool:
        if self.spi is not None and self.spi != spi:
            return False
        return _address_matches(self.source, source) and _address_matches(
            self.destination, destination
        )


def _address_matches(pattern: str, address: str) -> bool:
    if pattern in ("*", ""):
        return True
    try:
        if "/" in pattern:
            return ipaddress.ip_address(address) in ipaddress.ip_network(pattern, strict=False)
        return ipaddress.ip_address(pattern) == ipaddress.ip_address(address)
    except ValueError:
        return False


# ------------------------------------------------------------------------------- parsing


def _records(text: str, where: str) -> list[tuple[int, list[str]]]:
    """UAT lines: skip blanks and ``#`` comments; CSV with ``\\`` escapes in quotes."""
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            fields = next(csv.reader([stripped], escapechar="\\", doublequote=False))
        except (csv.Error, StopIteration) as error:
            raise KeyTableError(f"{where}:{number}: {error}") from None
        out.append((number, [f.strip() for f in fields]))
    return out


def _hex(value: str, what: str, where: str) -> bytes:
    value = value.strip()
    if value.lower().startswith("0x"):
        value = value[2:]
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise KeyTableError(f"{where}: {what} is not hexadecimal") from None


def _spi8(value: str, where: str) -> bytes:
    spi = _hex(value, "SPI", where)
    if len(spi) != 8:
        raise KeyTableError(f"{where}: an IKE SPI is 16 hex digits, got {len(spi) * 2}")
    return spi


def parse_ikev2_table(text: str, source: str = "ikev2_decryption_table") -> list[IkeKeyEntry]:
    """Rows ``SPIi,SPIr,SK_ei,SK_er,"encryption",SK_ai,SK_ar,"integrity"``."""
    entries = []
    for number, fields in _records(text, source):
        where = f"{source}:{number}"
        if len(fields) != 8:
            raise KeyTableError(f"{where}: {len(fields)} fields, 8 expected")
        encr, bits = _ike_encryption(fields[4])
        entries.append(
            IkeKeyEntry(
                spi_i=_spi8(fields[0], where),
                spi_r=_spi8(fields[1], where),
                encryption_name=fields[4],
                integrity_name=fields[7],
                encr=encr,
                encr_key_bits=bits,
                integ=_ike_integrity(fields[7]),
                sk_ei=_hex(fields[2], "SK_ei", where),
                sk_er=_hex(fields[3], "SK_er", where),
                sk_ai=_hex(fields[5], "SK_ai", where),
                sk_ar=_hex(fields[6], "SK_ar", where),
            )
        )
    return entries


def parse_esp_table(text: str, source: str = "esp_sa") -> list[EspKeyEntry]:
    """Rows ``"family","src","dst","0xSPI","encryption","0xkey","authentication","0xkey"``."""
    entries = []
    for number, fields in _records(text, source):
        where = f"{source}:{number}"
        if len(fields) != 8:
            raise KeyTableError(f"{where}: {len(fields)} fields, 8 expected")
        family, src, dst, spi_text, encr_name, encr_key, auth_name, auth_key = fields
        if spi_text in ("*", ""):
            spi = None
        else:
            try:
                spi = int(spi_text, 16) if spi_text.lower().startswith("0x") else int(spi_text)
            except ValueError:
                raise KeyTableError(f"{where}: SPI {spi_text!r} is not a number") from None
        any_bits = _ANY_BITS.search(auth_name)
        entries.append(
            EspKeyEntry(
                family=family,
                source=src,
                destination=dst,
                spi=spi,
                encryption_name=encr_name,
                authentication_name=auth_name,
                encr=_ESP_ENCR_NAMES.get(_strip_reference(encr_name)),
                integ=None if any_bits else _ESP_AUTH_NAMES.get(_strip_reference(auth_name)),
                encr_key=_hex(encr_key, "encryption key", where),
                integ_key=_hex(auth_key, "authentication key", where),
                icv_bits=int(any_bits.group(1)) if any_bits else None,
            )
        )
    return entries


def load_ikev2_table(path: str | Path) -> list[IkeKeyEntry]:
    path = Path(path)
    return parse_ikev2_table(path.read_text(encoding="utf-8"), str(path))


def load_esp_table(path: str | Path) -> list[EspKeyEntry]:
    path = Path(path)
    return parse_esp_table(path.read_text(encoding="utf-8"), str(path))
