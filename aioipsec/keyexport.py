"""Key export for Wireshark (``aioipsec daemon --save-keys DIR``).

Writes the two key tables Wireshark reads from its personal configuration directory, in
Wireshark's own UAT formats, and rewrites them whenever an SA comes or goes:

* ``ikev2_decryption_table``: ``SPIi,SPIr,SK_ei,SK_er,"encryption",SK_ai,SK_ar,"integrity"``
  (keys in hex; AEAD keys include their salt, as Wireshark expects);
* ``esp_sa``: ``"IPv4","src","dst","0xSPI","encryption","0xkey","authentication","0xkey"``.

Point Wireshark at the directory with ``WIRESHARK_CONFIG_DIR=DIR tshark -r capture.pcap``
(or copy the two files into ``~/.config/wireshark/``), or pass rows with
``tshark -o 'uat:esp_sa:...'``. This is a debugging aid that writes live session keys to
disk: it is off by default and the daemon warns loudly when it is on. The files are
created with mode 0600 and replaced atomically (write to a temporary file, then rename).

Algorithms Wireshark 4.0 cannot decrypt (ESP ChaCha20-Poly1305 and AES-CCM, IKE
ChaCha20-Poly1305) are written as ``#`` comment lines naming the SA, so the file stays
loadable and says why a row is missing.
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ikev2.enums import EncrId, IntegId

IKE_TABLE_FILE = "ikev2_decryption_table"
ESP_TABLE_FILE = "esp_sa"

# Wireshark's ESP dissector names (epan/dissectors/packet-ipsec.c, UAT "esp_sa").
_ESP_ENCRYPTION = {
    EncrId.ENCR_NULL: "NULL",
    EncrId.ENCR_3DES: "TripleDES-CBC [RFC2451]",
    EncrId.ENCR_AES_CBC: "AES-CBC [RFC3602]",
    EncrId.ENCR_AES_CTR: "AES-CTR [RFC3686]",
    EncrId.ENCR_AES_GCM_8: "AES-GCM with 8 octet ICV [RFC4106]",
    EncrId.ENCR_AES_GCM_12: "AES-GCM with 12 octet ICV [RFC4106]",
    EncrId.ENCR_AES_GCM_16: "AES-GCM with 16 octet ICV [RFC4106]",
}
_ESP_AUTHENTICATION = {
    IntegId.NONE: "NULL",
    IntegId.AUTH_HMAC_MD5_96: "HMAC-MD5-96 [RFC2403]",
    IntegId.AUTH_HMAC_SHA1_96: "HMAC-SHA-1-96 [RFC2404]",
    IntegId.AUTH_HMAC_SHA2_256_128: "HMAC-SHA-256-128 [RFC4868]",
    IntegId.AUTH_HMAC_SHA2_384_192: "HMAC-SHA-384-192 [RFC4868]",
    IntegId.AUTH_HMAC_SHA2_512_256: "HMAC-SHA-512-256 [RFC4868]",
}
# Wireshark's IKEv2 dissector names (epan/dissectors/packet-isakmp.c, UAT
# "ikev2_decryption_table"); AEAD names carry the key size, so they are built below.
_IKE_INTEGRITY = {
    IntegId.NONE: "NONE [RFC4306]",
    IntegId.AUTH_HMAC_MD5_96: "HMAC_MD5_96 [RFC2403]",
    IntegId.AUTH_HMAC_SHA1_96: "HMAC_SHA1_96 [RFC2404]",
    IntegId.AUTH_HMAC_SHA2_256_128: "HMAC_SHA2_256_128 [RFC4868]",
    IntegId.AUTH_HMAC_SHA2_384_192: "HMAC_SHA2_384_192 [RFC4868]",
    IntegId.AUTH_HMAC_SHA2_512_256: "HMAC_SHA2_512_256 [RFC4868]",
}
_AEAD_ICV = {
    EncrId.ENCR_AES_GCM_8: ("GCM", 8),
    EncrId.ENCR_AES_GCM_12: ("GCM", 12),
    EncrId.ENCR_AES_GCM_16: ("GCM", 16),
    EncrId.ENCR_AES_CCM_8: ("CCM", 8),
    EncrId.ENCR_AES_CCM_12: ("CCM", 12),
    EncrId.ENCR_AES_CCM_16: ("CCM", 16),
}


def ike_encryption_name(encr: EncrId, key_bits: int | None) -> str | None:
    """Wireshark's name for an IKE SA encryption algorithm, or None if it has none."""
    if encr in _AEAD_ICV:
        kind, icv = _AEAD_ICV[encr]
        return f"AES-{kind}-{key_bits} with {icv} octet ICV [RFC5282]"
    if encr == EncrId.ENCR_AES_CBC:
        return f"AES-CBC-{key_bits} [RFC3602]"
    if encr == EncrId.ENCR_AES_CTR:
        return f"AES-CTR-{key_bits} [RFC5930]"
    if encr == EncrId.ENCR_3DES:
        return "3DES [RFC2451]"
    if encr == EncrId.ENCR_NULL:
        return "NULL [RFC2410]"
    return None


def esp_encryption_name(encr: EncrId | None) -> str | None:
    return _ESP_ENCRYPTION.get(encr) if encr is not None else "NULL"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class IkeKeyRow:
    spi_i: int
    spi_r: int
    encr: EncrId
    encr_key_bits: int | None
    integ: IntegId | None
    sk_ei: bytes = field(repr=False)
    sk_er: bytes = field(repr=False)
    sk_ai: bytes = field(repr=False, default=b"")
    sk_ar: bytes = field(repr=False, default=b"")

    def line(self) -> str:
        encryption = ike_encryption_name(self.encr, self.encr_key_bits)
        integrity = _IKE_INTEGRITY.get(self.integ or IntegId.NONE)
        if encryption is None or integrity is None:
            return (
                f"# IKE SA {self.spi_i:016x}_i {self.spi_r:016x}_r: "
                f"{self.encr.name}/{(self.integ or IntegId.NONE).name} "
                "cannot be decrypted by Wireshark"
            )
        return ",".join(
            [
                f"{self.spi_i:016x}",
                f"{self.spi_r:016x}",
                self.sk_ei.hex(),
                self.sk_er.hex(),
                _quote(encryption),
                self.sk_ai.hex(),
                self.sk_ar.hex(),
                _quote(integrity),
            ]
        )


@dataclass(frozen=True)
class EspKeyRow:
    """One direction of a Child SA: packets from ``source`` to ``destination`` with ``spi``.

    ``source``/``destination`` may be ``"*"`` (Wireshark's wildcard), used when a NAT
    rewrites the outer addresses so a capture on either side still matches.
    """

    source: str
    destination: str
    spi: int
    encr: EncrId | None
    integ: IntegId | None
    encr_key: bytes = field(repr=False)
    integ_key: bytes = field(repr=False, default=b"")
    ipv6: bool = False  # the outer family, for wildcard rows

    def line(self) -> str:
        encryption = esp_encryption_name(self.encr)
        authentication = _ESP_AUTHENTICATION.get(self.integ or IntegId.NONE)
        if encryption is None or authentication is None:
            name = self.encr.name if self.encr is not None else "none"
            return (
                f"# ESP SA 0x{self.spi:08x} {self.source} -> {self.destination}: "
                f"{name} cannot be decrypted by Wireshark"
            )
        # Wireshark needs the family even with wildcard addresses ("Any" matches nothing).
        family = "IPv6" if self.ipv6 else "IPv4"
        for host in (self.source, self.destination):
            if host != "*":
                family = "IPv6" if ipaddress.ip_address(host).version == 6 else "IPv4"
        return ",".join(
            [
                _quote(family),
                _quote(self.source),
                _quote(self.destination),
                _quote(f"0x{self.spi:08x}"),
                _quote(encryption),
                _quote("0x" + self.encr_key.hex() if self.encr_key else ""),
                _quote(authentication),
                _quote("0x" + self.integ_key.hex() if self.integ_key else ""),
            ]
        )


class KeyExporter:
    """Keeps the current IKE and ESP key rows and rewrites both files on every change.

    Removed SAs stay in the files (``keep_removed``, default True) so that a capture
    spanning a rekey or a restart can still be decrypted in full.
    """

    def __init__(self, directory: str | os.PathLike[str], keep_removed: bool = True) -> None:
        self.directory = Path(directory)
        self.keep_removed = keep_removed
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._ike: dict[tuple[int, int], IkeKeyRow] = {}
        self._esp: dict[tuple[int, str, str], EspKeyRow] = {}
        self._write()

    @property
    def ike_table_path(self) -> Path:
        return self.directory / IKE_TABLE_FILE

    @property
    def esp_table_path(self) -> Path:
        return self.directory / ESP_TABLE_FILE

    def add_ike_sa(self, row: IkeKeyRow) -> None:
        self._ike[(row.spi_i, row.spi_r)] = row
        self._write()

    def remove_ike_sa(self, spi_i: int, spi_r: int) -> None:
        if not self.keep_removed and self._ike.pop((spi_i, spi_r), None) is not None:
            self._write()

    def add_esp_sa(self, *rows: EspKeyRow) -> None:
        for row in rows:
            self._esp[(row.spi, row.source, row.destination)] = row
        self._write()

    def remove_esp_sa(self, *spis: int) -> None:
        if self.keep_removed:
            return
        gone = [key for key in self._esp if key[0] in spis]
        for key in gone:
            del self._esp[key]
        if gone:
            self._write()

    def _write(self) -> None:
        header = "# Written by aioipsec --save-keys: live session keys. Keep private.\n"
        _atomic_write(
            self.ike_table_path, header + "".join(r.line() + "\n" for r in self._ike.values())
        )
        _atomic_write(
            self.esp_table_path, header + "".join(r.line() + "\n" for r in self._esp.values())
        )


def _atomic_write(path: Path, text: str) -> None:
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
