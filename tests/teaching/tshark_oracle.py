"""tshark as the oracle for ``aioipsec decode``: per-frame fields from Wireshark's own
dissectors (ISAKMP/IKEv2 and ESP), with key tables loaded from a private config dir."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

TSHARK = shutil.which("tshark")
FIELDS = [
    "frame.number",
    "isakmp.ispi",
    "isakmp.rspi",
    "isakmp.exchangetype",
    "isakmp.messageid",
    "isakmp.flag_i",
    "isakmp.flag_r",
    "isakmp.typepayload",
    "isakmp.notify.msgtype",
    "esp.spi",
    "esp.sequence",
    "esp.pad_len",
    "esp.protocol",
    "icmp.ident",
    "icmp.type",
]


@dataclass
class TsharkFrame:
    number: int
    exchange: int | None = None
    message_id: int | None = None
    spi_i: str | None = None
    spi_r: str | None = None
    initiator: bool | None = None
    response: bool | None = None
    payload_types: list[int] = field(default_factory=list)  # IKEv2 payloads only (>= 33)
    notify_types: list[int] = field(default_factory=list)
    esp_spi: int | None = None
    esp_seq: int | None = None
    esp_pad_len: int | None = None
    esp_next_header: int | None = None
    icmp_idents: list[int] = field(default_factory=list)


def _ints(text: str, base: int = 10) -> list[int]:
    return [int(v, base) for v in text.split(",") if v]


def tshark_frames(
    capture: Path,
    ikev2_table: str | None = None,
    esp_table: str | None = None,
) -> dict[int, TsharkFrame]:
    """Run tshark on ``capture`` with the given key table *texts* (Wireshark's formats).

    Rows tshark 4.0 cannot load (ESP AES-CCM, ChaCha20) are left out of its copy, as
    Wireshark itself would refuse the file otherwise.
    """
    assert TSHARK is not None
    with tempfile.TemporaryDirectory(prefix="aioipsec-tshark-") as config:
        if ikev2_table is not None:
            Path(config, "ikev2_decryption_table").write_text(ikev2_table)
        if esp_table is not None:
            usable = [
                line
                for line in esp_table.splitlines()
                if "AES-CCM" not in line and "ChaCha20" not in line
            ]
            Path(config, "esp_sa").write_text("\n".join(usable) + "\n")
        command = [TSHARK, "-n", "-r", str(capture), "-o", "esp.enable_encryption_decode:TRUE",
                   "-o", "esp.enable_authentication_check:TRUE",
                   "-T", "fields", "-E", "separator=|", "-E", "occurrence=a"]  # fmt: skip
        for name in FIELDS:
            command += ["-e", name]
        env = dict(os.environ, WIRESHARK_CONFIG_DIR=config, HOME=config)
        out = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    frames: dict[int, TsharkFrame] = {}
    for line in out.stdout.splitlines():
        values = dict(zip(FIELDS, line.split("|"), strict=True))
        frame = TsharkFrame(int(values["frame.number"]))
        if values["isakmp.exchangetype"]:
            frame.exchange = _ints(values["isakmp.exchangetype"])[0]
            frame.message_id = _ints(values["isakmp.messageid"], 16)[0]
            frame.spi_i = values["isakmp.ispi"].split(",")[0]
            frame.spi_r = values["isakmp.rspi"].split(",")[0]
            frame.initiator = values["isakmp.flag_i"].split(",")[0] in ("1", "True")
            frame.response = values["isakmp.flag_r"].split(",")[0] in ("1", "True")
            # Proposal (2) and Transform (3) substructures share the field: keep payloads.
            frame.payload_types = [t for t in _ints(values["isakmp.typepayload"]) if t >= 33]
            frame.notify_types = _ints(values["isakmp.notify.msgtype"])
        if values["esp.spi"]:
            frame.esp_spi = _ints(values["esp.spi"], 16)[0]
            frame.esp_seq = _ints(values["esp.sequence"])[0]
            if values["esp.protocol"]:
                frame.esp_next_header = _ints(values["esp.protocol"], 16)[0]
                frame.esp_pad_len = _ints(values["esp.pad_len"])[0]
            frame.icmp_idents = _ints(values["icmp.ident"])
        frames[frame.number] = frame
    return frames
