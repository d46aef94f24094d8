"""Known-answer checks of the data plane, one ``aioipsec/vectors/esp_*.json`` record at a time.

``aioipsec.selftest`` hands every record of the ``esp_*.json`` files to ``run_vector``,
which raises ``AssertionError`` on any mismatch. Kinds:

``esp_packet``
    A complete packet with its plaintext: sealing ``plaintext`` with the record's IV and
    sequence number gives ``packet`` byte for byte; an inbound SA (replay window just
    before ``seq``) decrypts ``packet`` to ``payload`` and ``next_header``, refuses it a
    second time (replay) and, when the transform has an ICV, refuses it with one bit
    changed. With ``ip_packet``/``ip_packet_protected``, transport mode on whole packets.
``esp_packet_decrypt``
    A packet produced elsewhere (Linux xfrm): decrypts to ``inner``, next header
    ``next_header``.
``esp_refused_algorithm``
    A legacy algorithm (DES, 3DES, Blowfish, CAST): building the SA must be refused.
"""

from __future__ import annotations

import struct
from typing import Any

from esp.errors import DropReason, EspDrop, UnsupportedAlgorithm
from esp.sa import EspSa
from esp.transforms import Transform, make_transform
from ikev2.enums import EncrId, IntegId

Record = dict[str, Any]


def _sa(record: Record, direction: str) -> EspSa:
    integ = IntegId[record.get("integ") or "NONE"]
    return EspSa(
        record["spi"], direction, EncrId[record["encr"]], bytes.fromhex(record["encr_key"]),
        integ, bytes.fromhex(record.get("integ_key", "")), esn=bool(record.get("esn")),
        mode=record.get("mode", "tunnel"),
        allow_no_integrity=bool(record.get("allow_no_integrity")),
        allow_null=record["encr"] == "ENCR_NULL",
    )  # fmt: skip


def _inbound(record: Record) -> EspSa:
    sa = _sa(record, "in")
    # As if the packets before this one had arrived: the ESN high half is inferred from
    # the window (RFC 4303 App. A2.2), so the window must sit just before ``seq``.
    assert sa.replay is not None
    sa.replay.highest = record["seq"] - 1
    return sa


def _equal(what: str, got: bytes | int | str, expected: bytes | int | str) -> None:
    if got != expected:
        raise AssertionError(f"{what}: got {_shown(got)}, expected {_shown(expected)}")


def _shown(value: bytes | int | str) -> str | int:
    return value.hex() if isinstance(value, bytes) else value


def _expect_drop(sa: EspSa, packet: bytes, reason: DropReason, what: str) -> None:
    try:
        sa.decrypt(packet)
    except EspDrop as drop:
        _equal(what, drop.reason.value, reason.value)
        return
    raise AssertionError(f"{what}: packet accepted")


def _check_decrypt(record: Record, packet: bytes, expected: bytes) -> EspSa:
    sa = _inbound(record)
    _equal("decrypted payload", sa.decrypt(packet), expected)
    _equal("next header", sa.last_next_header, record["next_header"])
    _expect_drop(sa, packet, DropReason.REPLAY, "second copy")
    return sa


def _transform(record: Record) -> Transform:
    return make_transform(
        EncrId[record["encr"]], bytes.fromhex(record["encr_key"]),
        IntegId[record.get("integ") or "NONE"], bytes.fromhex(record.get("integ_key", "")),
        allow_no_integrity=bool(record.get("allow_no_integrity")),
        allow_null=record["encr"] == "ENCR_NULL",
    )  # fmt: skip


def run_esp_packet(record: Record) -> None:
    packet = bytes.fromhex(record["packet"])
    plaintext = bytes.fromhex(record["plaintext"])
    seq = record["seq"]
    esn = bool(record.get("esn"))
    transform = _transform(record)
    sealed = bytearray(8 + transform.iv_size + len(plaintext) + transform.icv_size)
    struct.pack_into("!II", sealed, 0, record["spi"], seq & 0xFFFFFFFF)
    iv = bytes.fromhex(record["iv"])
    transform.seal(memoryview(sealed), 0, memoryview(plaintext), seq, esn, iv)
    _equal("sealed packet", bytes(sealed), packet)
    opened = bytearray(len(plaintext))
    _equal("opened length", transform.open(memoryview(packet), seq, esn, memoryview(opened)),
           len(plaintext))  # fmt: skip
    _equal("opened plaintext", bytes(opened), plaintext)

    if record["spi"] < 256:
        # RFC 4303 sec. 2.1: SPIs 1-255 are reserved and 0 is never sent; an SA with one
        # must be refused (draft-mcgrew case 4 uses SPI 0: the transform alone is checked).
        try:
            _sa(record, "in")
        except ValueError:
            return
        raise AssertionError(f"SA with reserved SPI {record['spi']} accepted")

    in_sa = _check_decrypt(record, packet, bytes.fromhex(record["payload"]))
    if in_sa.icv_size:
        forged = bytearray(packet)
        forged[len(forged) // 2] ^= 0x01
        _expect_drop(_inbound(record), bytes(forged), DropReason.ICV_FAILURE, "changed bit")
    del in_sa

    if "ip_packet_protected" in record:
        whole = _inbound(record).unprotect_transport(bytes.fromhex(record["ip_packet_protected"]))
        _equal("transport-mode IP packet", whole, bytes.fromhex(record["ip_packet"]))


def run_esp_packet_decrypt(record: Record) -> None:
    _check_decrypt(record, bytes.fromhex(record["packet"]), bytes.fromhex(record["inner"]))


def run_esp_refused_algorithm(record: Record) -> None:
    try:
        _sa(record, "in")
    except UnsupportedAlgorithm:
        return
    raise AssertionError(f"{record['encr']} was accepted; it must be refused (RFC 8221)")


RUNNERS = {
    "esp_packet": run_esp_packet,
    "esp_packet_decrypt": run_esp_packet_decrypt,
    "esp_refused_algorithm": run_esp_refused_algorithm,
}


def run_vector(record: Record) -> None:
    """Check one ``aioipsec/vectors/esp_*.json`` record; AssertionError on any mismatch."""
    runner = RUNNERS.get(record.get("kind", ""))
    if runner is None:
        raise AssertionError(f"unknown ESP vector kind {record.get('kind')!r}")
    runner(record)
