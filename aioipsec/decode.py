"""``aioipsec decode``: IKEv2 and ESP in a capture file, decoded by aioipsec's own parser.

Reads pcap or pcapng (tcpdump, tshark, dumpcap, our own ``make demo`` capture) with
scapy's raw readers (the optional extra ``decode``: ``pip install aioipsec[decode]``); the
link layer (Ethernet and VLAN tags, Linux cooked v1/v2, raw IP, loopback) and IPv4/IPv6
fragment reassembly are ours. For every frame:

* UDP port 500: an IKE message (RFC 7296 sec. 3.1);
* UDP port 4500 (either side, RFC 3948): four zero octets (the non-ESP marker) then an IKE
  message; a single ``0xff`` octet is a NAT-keepalive (RFC 3948 sec. 2.3); anything else
  is ESP in UDP (RFC 3948 sec. 2.1);
* IP protocol 50: ESP (RFC 4303).

IKE messages go through ``ikev2.message.parse_message`` -- the same code the engine runs,
so the decoder shows what the daemon sees, including the errors it would raise. With an
``ikev2_decryption_table`` (``--ikev2-keys``) SK payloads are decrypted (and SKF fragments
reassembled, RFC 7383) by ``ikev2.crypto.sk``; with an ``esp_sa`` table (``--esp-keys``)
ESP packets are verified and decrypted by ``esp.transforms``. Both files are Wireshark's own
formats (:mod:`aioipsec.wireshark_keys`), written by ``aioipsec daemon --save-keys``.

Public API::

    for record in decode_capture("run.pcapng", ike_keys=..., esp_keys=...):
        record["kind"]        # "ike" | "esp" | "keepalive" | "other"
        print(render_text(record))

``--json`` prints one object per frame: ``frame``, ``time``, ``kind``, ``src``, ``dst``;
for IKE ``exchange``, ``message_id``, ``initiator``, ``response``, ``spi_i``, ``spi_r``,
``payloads`` (names in wire order; a decrypted SK payload is ``{"SK": [inner names]}``),
``notifies``; for ESP ``spi``, ``seq``, ``decrypted``, ``next_header``, ``inner`` (hex of
the inner packet) and ``inner_summary``. ``error`` says why something was not decoded.
``--brief`` prints one line per frame in RFC 7296 notation (``HDR, SK {IDi, AUTH, ...}``).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import struct
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from aioipsec.wireshark_keys import (
    EspKeyEntry,
    IkeKeyEntry,
    KeyTableError,
    load_esp_table,
    load_ikev2_table,
)
from ikev2.crypto.sk import is_aead
from ikev2.enums import (
    AuthMethod,
    CertEncoding,
    CfgType,
    CpAttributeType,
    ExchangeType,
    IdType,
    KeId,
    NotifyType,
    PayloadType,
    ProtocolId,
    TsType,
)
from ikev2.errors import IntegrityError, ProtocolError
from ikev2.fragments import Reassembler
from ikev2.message import IkeMessage, decrypt_message, parse_message
from ikev2.payloads import (
    AuthPayload,
    CertPayload,
    CertReqPayload,
    CpPayload,
    DeletePayload,
    EapPayload,
    IdPayload,
    KePayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    SaPayload,
    SkfPayload,
    SkPayload,
    TsPayload,
    UnknownPayload,
    VendorIdPayload,
)

IKE_PORT = 500
NAT_T_PORT = 4500
ESP_PROTOCOL = 50
UDP_PROTOCOL = 17
NON_ESP_MARKER = b"\x00\x00\x00\x00"
KEEPALIVE = b"\xff"

# Short forms RFC 7296 uses in its exchange diagrams (sec. 1.2).
PAYLOAD_SHORT: dict[int, str] = {
    PayloadType.SA: "SA",
    PayloadType.KE: "KE",
    PayloadType.IDi: "IDi",
    PayloadType.IDr: "IDr",
    PayloadType.CERT: "CERT",
    PayloadType.CERTREQ: "CERTREQ",
    PayloadType.AUTH: "AUTH",
    PayloadType.NONCE: "Nonce",
    PayloadType.NOTIFY: "N",
    PayloadType.DELETE: "D",
    PayloadType.VENDOR_ID: "V",
    PayloadType.TSi: "TSi",
    PayloadType.TSr: "TSr",
    PayloadType.SK: "SK",
    PayloadType.CP: "CP",
    PayloadType.EAP: "EAP",
    PayloadType.SKF: "SKF",
}


class DecodeError(Exception):
    """The capture cannot be read at all (missing scapy, unreadable file)."""


def _name(enum_type: type, value: int) -> str:
    try:
        return enum_type(value).name
    except ValueError:
        return str(int(value))


def payload_name(payload: Payload) -> str:
    """The IANA name of a payload's type (``SA``, ``NONCE``, ``NOTIFY``, ``IDi``...)."""
    return _name(PayloadType, int(payload.TYPE))


def short_name(payload: Payload, *, hide_nonce_role: bool = False) -> str:
    """RFC 7296 diagram notation: ``N(NAT_DETECTION_SOURCE_IP)``, ``Ni``, ``D``..."""
    if isinstance(payload, NotifyPayload):
        return f"N({_name(NotifyType, int(payload.notify_type))})"
    if isinstance(payload, UnknownPayload):
        return f"?{payload.payload_type}"
    return PAYLOAD_SHORT.get(int(payload.TYPE), payload_name(payload))


# ---------------------------------------------------------------------------- payloads


def _hex_lines(data: bytes, indent: str, width: int = 64) -> list[str]:
    text = bytes(data).hex()
    if not text:
        return [f"{indent}(empty)"]
    return [indent + text[i : i + width] for i in range(0, len(text), width)]


def _address(data: bytes) -> str:
    try:
        return str(ipaddress.ip_address(bytes(data)))
    except ValueError:
        return bytes(data).hex()


def _identity_text(id_type: int, data: bytes) -> str:
    from ikev2.identity import Identity

    try:
        return str(Identity.from_payload(id_type, data))
    except (ProtocolError, ValueError):
        return bytes(data).hex()


def _notify_data_text(payload: NotifyPayload) -> list[str]:
    kind = int(payload.notify_type)
    data = bytes(payload.data)
    if kind == NotifyType.SIGNATURE_HASH_ALGORITHMS and len(data) % 2 == 0:
        from ikev2.enums import HashAlgorithm

        names = [
            _name(HashAlgorithm, int.from_bytes(data[i : i + 2], "big"))
            for i in range(0, len(data), 2)
        ]
        return [f"hash algorithms: {', '.join(names)}"]
    if kind == NotifyType.INVALID_KE_PAYLOAD and len(data) == 2:
        return [f"accepted group: {_name(KeId, int.from_bytes(data, 'big'))}"]
    if kind in (NotifyType.NAT_DETECTION_SOURCE_IP, NotifyType.NAT_DETECTION_DESTINATION_IP):
        return [f"SHA1(SPIi | SPIr | IP | port) = {data.hex()}"]
    if kind == NotifyType.COOKIE:
        return [f"cookie: {data.hex()}"]
    if data:
        return [f"data ({len(data)} octets):", *_hex_lines(data, "  ")]
    return []


def _selector_text(selector: Any) -> str:
    start, end = _address(selector.start_address), _address(selector.end_address)
    text = f"{start}..{end}"
    try:
        nets = list(
            ipaddress.summarize_address_range(
                ipaddress.ip_address(start), ipaddress.ip_address(end)
            )
        )
        if len(nets) == 1:
            text = str(nets[0])
    except (TypeError, ValueError):
        pass
    if selector.ip_protocol or (selector.start_port, selector.end_port) != (0, 65535):
        ports = (
            f"{selector.start_port}"
            if selector.start_port == selector.end_port
            else f"{selector.start_port}-{selector.end_port}"
        )
        text += f"[{selector.ip_protocol or 'any'}/{ports}]"
    if int(selector.ts_type) not in (TsType.TS_IPV4_ADDR_RANGE, TsType.TS_IPV6_ADDR_RANGE):
        text += f" (TS type {int(selector.ts_type)})"
    return text


def describe_payload(payload: Payload) -> list[str]:
    """The fields of one payload, one line each (the text form of ``decode`` and ``explain``)."""
    from ikev2.proposals import to_strongswan

    lines: list[str] = []
    if isinstance(payload, SaPayload):
        for proposal in payload.proposals:
            protocol = _name(ProtocolId, int(proposal.protocol))
            spi = f" SPI {bytes(proposal.spi).hex()}" if proposal.spi else ""
            try:
                text = to_strongswan(proposal)
            except (KeyError, ValueError):
                text = ", ".join(f"{t.type}:{t.id}" for t in proposal.transforms)
            lines.append(f"proposal #{proposal.number} {protocol}{spi}: {text}")
    elif isinstance(payload, KePayload):
        lines.append(f"group {_name(KeId, int(payload.group))}, {len(payload.data)} octets:")
        lines += _hex_lines(payload.data, "  ")
    elif isinstance(payload, IdPayload):
        lines.append(
            f"{_name(IdType, int(payload.id_type))}: "
            f"{_identity_text(int(payload.id_type), bytes(payload.data))}"
        )
    elif isinstance(payload, AuthPayload):
        lines.append(
            f"method {_name(AuthMethod, int(payload.method))}, {len(payload.data)} octets:"
        )
        lines += _hex_lines(payload.data, "  ")
    elif isinstance(payload, NoncePayload):
        lines.append(f"{len(payload.nonce)} octets: {bytes(payload.nonce).hex()}")
    elif isinstance(payload, NotifyPayload):
        head = _name(NotifyType, int(payload.notify_type))
        kind = "error" if payload.is_error else "status"
        if int(payload.protocol):
            head += f" ({_name(ProtocolId, int(payload.protocol))}"
            head += f" SPI {bytes(payload.spi).hex()})" if payload.spi else ")"
        lines.append(f"{head} [{kind}]")
        lines += _notify_data_text(payload)
    elif isinstance(payload, DeletePayload):
        spis = ", ".join(bytes(s).hex() for s in payload.spis) or "(the IKE SA itself)"
        lines.append(f"{_name(ProtocolId, int(payload.protocol))}: {spis}")
    elif isinstance(payload, VendorIdPayload):
        data = bytes(payload.vendor_id)
        printable = data.decode("ascii", "replace") if data.isascii() else ""
        lines.append(f"{data.hex()} {printable!r}" if printable else data.hex())
    elif isinstance(payload, TsPayload):
        for selector in payload.selectors:
            lines.append(_selector_text(selector))
    elif isinstance(payload, CertPayload):
        lines.append(f"{_name(CertEncoding, int(payload.encoding))}, {len(payload.data)} octets")
    elif isinstance(payload, CertReqPayload):
        hashes = [bytes(payload.data)[i : i + 20].hex() for i in range(0, len(payload.data), 20)]
        lines.append(f"{_name(CertEncoding, int(payload.encoding))}, CA key hashes:")
        lines += [f"  {h}" for h in hashes]
    elif isinstance(payload, CpPayload):
        lines.append(_name(CfgType, int(payload.cfg_type)))
        for attribute in payload.attributes:
            value = bytes(attribute.value)
            shown = _address(value) if len(value) in (4, 16) else value.hex()
            lines.append(f"  {_name(CpAttributeType, attribute.type)} {shown}".rstrip())
    elif isinstance(payload, EapPayload):
        lines.append(f"EAP message, {len(payload.message)} octets")
    elif isinstance(payload, SkfPayload):
        lines.append(
            f"fragment {payload.fragment_number}/{payload.total_fragments}, "
            f"{len(payload.body)} octets encrypted"
        )
    elif isinstance(payload, SkPayload):
        lines.append(
            f"{len(payload.body)} octets: IV || encrypted payloads || ICV "
            f"(first inner: {_name(PayloadType, int(payload.first_inner))})"
        )
    elif isinstance(payload, UnknownPayload):
        lines.append(f"type {payload.payload_type}, {len(payload.body)} octets (not parsed)")
    return lines


# ---------------------------------------------------------------------------- IKE frames


class IkeDecryptor:
    """SK/SKF decryption with rows of an ``ikev2_decryption_table``."""

    def __init__(self, entries: Iterable[IkeKeyEntry] = ()) -> None:
        self._entries = {entry.key: entry for entry in entries}
        self._ciphers: dict[tuple[bytes, bytes, bool], Any] = {}
        self._reassemblers: dict[tuple[bytes, bytes, bool], Reassembler] = {}

    def __bool__(self) -> bool:
        return bool(self._entries)

    def _cipher(self, msg: IkeMessage) -> Any:
        """The cipher of the sender's direction, or a string saying why there is none."""
        from ikev2.crypto.sk import make_sk_cipher

        key = (msg.header.spi_i, msg.header.spi_r, msg.header.initiator)
        if key in self._ciphers:
            return self._ciphers[key]
        entry = self._entries.get(key[:2])
        if entry is None:
            result: Any = "no key for these SPIs in the ikev2_decryption_table"
        elif entry.encr is None or entry.integ is None:
            result = f"algorithm {entry.encryption_name!r}/{entry.integrity_name!r} not known here"
        else:
            # The initiator flag says who sent it: SK_ei/SK_ai for the original initiator.
            sk_e, sk_a = (
                (entry.sk_ei, entry.sk_ai) if msg.header.initiator else (entry.sk_er, entry.sk_ar)
            )
            try:
                result = make_sk_cipher(
                    entry.encr, entry.encr_key_bits, entry.integ, sk_e, sk_a or None
                )
            except (ProtocolError, ValueError) as error:
                result = f"cannot decrypt {entry.encryption_name}: {error}"
        self._ciphers[key] = result
        return result

    def decrypt(self, msg: IkeMessage, now: float) -> tuple[IkeMessage | None, str | None]:
        """``(decrypted message or None, why not)``; fragments return None until complete."""
        cipher = self._cipher(msg)
        if isinstance(cipher, str):
            return None, cipher
        try:
            if msg.is_fragment:
                key = (msg.header.spi_i, msg.header.spi_r, msg.header.initiator)
                reassembler = self._reassemblers.setdefault(key, Reassembler(timeout=1e9))
                whole = reassembler.add(msg, cipher, now)
                if whole is None:
                    return None, "fragment stored (message not complete yet)"
                return whole, None
            return decrypt_message(msg, cipher), None
        except IntegrityError as error:
            return None, f"ICV does not verify (wrong key?): {error.reason}"
        except ProtocolError as error:
            return None, f"decrypted content invalid: {error.reason}"


def decode_ike(data: bytes, decryptor: IkeDecryptor | None, now: float) -> dict[str, Any]:
    record: dict[str, Any] = {"kind": "ike"}
    try:
        msg = parse_message(data)
    except ProtocolError as error:
        record["error"] = f"not a valid IKEv2 message: {error.reason}"
        record["length"] = len(data)
        return record
    header = msg.header
    record.update(
        exchange=_name(ExchangeType, int(header.exchange)),
        message_id=header.message_id,
        initiator=header.initiator,
        response=header.response,
        spi_i=header.spi_i.hex(),
        spi_r=header.spi_r.hex(),
        length=header.length,
    )
    names: list[Any] = [payload_name(p) for p in msg.payloads]
    notifies = [_name(NotifyType, int(n.notify_type)) for n in msg.notifies()]
    record["_message"] = msg
    if msg.encrypted_payload is not None:
        sk = msg.encrypted_payload
        if isinstance(sk, SkfPayload):
            record["fragment"] = [sk.fragment_number, sk.total_fragments]
        if decryptor:
            inner, why = decryptor.decrypt(msg, now)
            if inner is not None:
                inner_names = [payload_name(p) for p in inner.payloads]
                names[-1] = {payload_name(sk): inner_names}
                notifies += [_name(NotifyType, int(n.notify_type)) for n in inner.notifies()]
                record["_inner"] = inner
                record["decrypted"] = True
            else:
                record["decrypted"] = False
                record["error"] = why
        else:
            record["decrypted"] = False
    record["payloads"] = names
    record["notifies"] = notifies
    return record


# ---------------------------------------------------------------------------- ESP frames


class EspDecryptor:
    """ESP decryption with rows of an ``esp_sa`` table (no replay state: a decoder shows
    duplicates too)."""

    def __init__(self, entries: Iterable[EspKeyEntry] = ()) -> None:
        self._entries = list(entries)
        self._transforms: dict[int, Any] = {}

    def __bool__(self) -> bool:
        return bool(self._entries)

    def _transform(self, index: int, entry: EspKeyEntry) -> Any:
        from esp.errors import InvalidKey, UnsupportedAlgorithm
        from esp.transforms import make_transform
        from ikev2.enums import IntegId

        if index not in self._transforms:
            if entry.encr is None or (entry.icv_bits is not None and is_aead(entry.encr)):
                why = f"{entry.encryption_name!r}/{entry.authentication_name!r} not supported"
                self._transforms[index] = why
            elif entry.icv_bits is not None:
                # Wireshark's "ANY n bit authentication [no checking]": skip the ICV
                self._transforms[index] = _UncheckedIcv(entry, entry.icv_bits // 8)
            elif entry.integ is None:
                self._transforms[index] = f"{entry.authentication_name!r} not known here"
            else:
                try:
                    self._transforms[index] = make_transform(
                        entry.encr,
                        entry.encr_key,
                        entry.integ if entry.integ is not None else IntegId.NONE,
                        entry.integ_key,
                        allow_null=True,  # a decoder shows what is there, policy is not its job
                        allow_no_integrity=True,
                    )
                except (InvalidKey, UnsupportedAlgorithm, ValueError) as error:
                    self._transforms[index] = f"cannot use the esp_sa row: {error}"
        return self._transforms[index]

    def decrypt(self, src: str, dst: str, esp: bytes) -> dict[str, Any]:
        spi, seq = struct.unpack_from("!II", esp)
        for index, entry in enumerate(self._entries):
            if not entry.matches(src, dst, spi):
                continue
            transform = self._transform(index, entry)
            if isinstance(transform, str):
                return {"decrypted": False, "error": transform}
            if isinstance(transform, _UncheckedIcv):
                esp, transform = esp[: len(esp) - transform.icv_size], transform.transform
                if isinstance(transform, str):
                    return {"decrypted": False, "error": transform}
            size = transform.plaintext_size(len(esp))
            if size < 2:
                return {"decrypted": False, "error": "too short for its transform"}
            if size % max(1, getattr(transform, "block_size", 1)):
                return {"decrypted": False, "error": "ciphertext not a multiple of the block"}
            out = bytearray(size)
            # ESN: only the low 32 bits are on the wire; like Wireshark we assume no ESN.
            try:
                length = transform.open(memoryview(esp), seq, False, memoryview(out))
            except ValueError as error:  # a capture may hold anything
                return {"decrypted": False, "error": f"malformed: {error}"}
            if length < 0:
                return {"decrypted": False, "error": "ICV does not verify (MAC mismatch)"}
            pad_length, next_header = out[length - 2], out[length - 1]
            if pad_length > length - 2:
                return {"decrypted": False, "error": "pad length beyond the payload"}
            inner = bytes(out[: length - 2 - pad_length])
            return {
                "decrypted": True,
                "next_header": next_header,
                "pad_length": pad_length,
                "inner": inner.hex(),
                "inner_summary": summarize_inner(next_header, inner),
            }
        return {"decrypted": False, "error": "no matching esp_sa row"} if self._entries else {}


class _UncheckedIcv:
    """An esp_sa row with "ANY n bit authentication [no checking]": the ICV is cut off
    unverified and the rest decrypted without integrity (Wireshark does the same)."""

    def __init__(self, entry: EspKeyEntry, icv_size: int) -> None:
        from esp.errors import InvalidKey, UnsupportedAlgorithm
        from esp.transforms import make_transform
        from ikev2.enums import EncrId, IntegId

        self.icv_size = icv_size
        self.transform: Any
        assert entry.encr is not None
        if entry.encr == EncrId.ENCR_NULL:
            self.transform = _NullCipher()
            return
        try:
            self.transform = make_transform(entry.encr, entry.encr_key, IntegId.NONE,
                                            allow_no_integrity=True)  # fmt: skip
        except (InvalidKey, UnsupportedAlgorithm, ValueError) as error:
            self.transform = f"cannot use the esp_sa row: {error}"


class _NullCipher:
    """ENCR_NULL without integrity: the payload is the plaintext (RFC 2410)."""

    iv_size = icv_size = 0

    def plaintext_size(self, packet_len: int) -> int:
        return packet_len - 8

    def open(self, packet: memoryview, seq: int, esn: bool, out: memoryview) -> int:
        out[: len(packet) - 8] = packet[8:]
        return len(packet) - 8


def summarize_inner(next_header: int, inner: bytes) -> str:
    """One line for a decrypted ESP payload: inner IP header, ICMP echo, UDP/TCP ports."""
    if next_header == 59:
        return "dummy packet (next header 59, RFC 4303 sec. 2.6)"
    if next_header == 4 and len(inner) >= 20 and inner[0] >> 4 == 4:
        ihl = (inner[0] & 0x0F) * 4
        proto = inner[9]
        src, dst = _address(inner[12:16]), _address(inner[16:20])
        return f"IPv4 {src} -> {dst} " + _transport_summary(proto, inner[ihl:])
    if next_header == 41 and len(inner) >= 40 and inner[0] >> 4 == 6:
        src, dst = _address(inner[8:24]), _address(inner[24:40])
        return f"IPv6 {src} -> {dst} " + _transport_summary(inner[6], inner[40:])
    return f"next header {next_header}, {len(inner)} octets"


def _transport_summary(proto: int, data: bytes) -> str:
    if proto in (1, 58) and len(data) >= 8:
        kind = {
            (1, 8): "echo request",
            (1, 0): "echo reply",
            (58, 128): "echo request",
            (58, 129): "echo reply",
        }.get((proto, data[0]), f"type {data[0]}")
        ident, seq = struct.unpack_from("!HH", data, 4)
        name = "ICMP" if proto == 1 else "ICMPv6"
        return f"{name} {kind} id 0x{ident:04x} seq {seq}"
    if proto in (6, 17) and len(data) >= 4:
        sport, dport = struct.unpack_from("!HH", data)
        return f"{'TCP' if proto == 6 else 'UDP'} {sport} -> {dport}"
    return f"protocol {proto}"


# ---------------------------------------------------------------------------- frames


class IpReassembler:
    """IPv4 and IPv6 fragment reassembly (RFC 791, RFC 8200 sec. 4.5) for the decoder: a
    large IKE_AUTH (certificates) without IKE fragmentation arrives in IP fragments.

    :meth:`packet` returns ``(src, dst, protocol, payload)`` of a whole packet -- at the
    frame of its last missing fragment -- or None (an incomplete fragment, not IP). Bounded:
    at most ``max_pending`` packets in reassembly, the oldest are forgotten first.
    """

    def __init__(self, max_pending: int = 64) -> None:
        self.max_pending = max_pending
        self._pending: dict[tuple[Any, ...], dict[str, Any]] = {}
        self.last_was_fragment = False

    def packet(self, raw: bytes) -> tuple[str, str, int, bytes] | None:
        self.last_was_fragment = False
        if not raw:
            return None
        version = raw[0] >> 4
        if version == 4 and len(raw) >= 20:
            return self._ipv4(raw)
        if version == 6 and len(raw) >= 40:
            return self._ipv6(raw)
        return None

    def _ipv4(self, raw: bytes) -> tuple[str, str, int, bytes] | None:
        ihl = (raw[0] & 0x0F) * 4
        total = struct.unpack_from("!H", raw, 2)[0]
        ident, fragment = struct.unpack_from("!HH", raw, 4)
        src, dst, protocol = _address(raw[12:16]), _address(raw[16:20]), raw[9]
        payload = raw[ihl : max(total, ihl)]
        offset, more = (fragment & 0x1FFF) * 8, bool(fragment & 0x2000)
        if not offset and not more:
            return src, dst, protocol, payload
        whole = self._add((4, src, dst, ident, protocol), offset, more, payload, protocol)
        return None if whole is None else (src, dst, whole[1], whole[0])

    def _ipv6(self, raw: bytes) -> tuple[str, str, int, bytes] | None:
        length = struct.unpack_from("!H", raw, 4)[0]
        next_header, offset = raw[6], 40
        end = 40 + length
        while next_header in (0, 43, 60) and offset + 8 <= end:
            next_header, offset = raw[offset], offset + 8 * (raw[offset + 1] + 1)
        src, dst = _address(raw[8:24]), _address(raw[24:40])
        if next_header != 44:
            return src, dst, next_header, raw[offset:end]
        if offset + 8 > end:
            return None
        inner_next = raw[offset]
        bits, ident = struct.unpack_from("!HI", raw, offset + 2)
        first = (bits & 0xFFF8) == 0
        whole = self._add((6, src, dst, ident), bits & 0xFFF8, bool(bits & 1),
                          raw[offset + 8 : end], inner_next if first else None)  # fmt: skip
        return None if whole is None else (src, dst, whole[1], whole[0])

    def _add(
        self, key: tuple[Any, ...], offset: int, more: bool, data: bytes, protocol: int | None
    ) -> tuple[bytes, int] | None:
        """Store one fragment; (payload, upper-layer protocol) once the packet is whole."""
        self.last_was_fragment = True
        entry = self._pending.setdefault(key, {"pieces": {}, "total": None, "protocol": None})
        entry["pieces"][offset] = data
        if protocol is not None:
            entry["protocol"] = protocol  # IPv6: only the first fragment says (RFC 8200)
        if not more:
            entry["total"] = offset + len(data)
        while len(self._pending) > self.max_pending:
            del self._pending[next(iter(self._pending))]
        if entry["total"] is None or entry["protocol"] is None:
            return None
        joined, position = b"", 0
        for start in sorted(entry["pieces"]):
            if start > position:
                return None  # a hole: wait for more
            piece = entry["pieces"][start]
            joined += piece[max(0, position - start) :]
            position = max(position, start + len(piece))
        if position < entry["total"]:
            return None
        self._pending.pop(key, None)
        return joined[: entry["total"]], int(entry["protocol"])


def classify_udp(sport: int, dport: int, payload: bytes, ike_ports: set[int],
                 natt_ports: set[int]) -> tuple[str, bytes]:  # fmt: skip
    """("ike" | "esp" | "keepalive" | "other", the bytes to decode) for one UDP payload."""
    if sport in natt_ports or dport in natt_ports:
        if payload == KEEPALIVE:
            return "keepalive", payload
        if payload[:4] == NON_ESP_MARKER:
            return "ike", payload[4:]
        if len(payload) >= 8:
            return "esp", payload
        return "other", payload
    if sport in ike_ports or dport in ike_ports:
        return "ike", payload
    return "other", payload


# Link-layer types (https://www.tcpdump.org/linktypes.html) and how to find the IP header.
LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LOOP = 0, 1, 101, 108
LINKTYPE_LINUX_SLL, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_LINUX_SLL2 = 113, 228, 229, 276
_RAW_IP_TYPES = {LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6, 12, 14}  # 12/14: DLT_RAW on BSDs
_VLAN_ETHERTYPES = {0x8100, 0x88A8, 0x9100}
_IP_ETHERTYPES = {0x0800, 0x86DD}


def ip_from_link(linktype: int, frame: bytes) -> bytes | None:
    """The IP packet inside one captured frame, or None (not IP, or a link type we do not
    know): Ethernet (with 802.1Q/802.1ad tags), Linux cooked v1/v2 (``tcpdump -i any``),
    raw IP, BSD loopback."""
    if linktype in _RAW_IP_TYPES:
        return frame
    if linktype == LINKTYPE_ETHERNET:
        offset, ethertype = 14, int.from_bytes(frame[12:14], "big") if len(frame) >= 14 else 0
        while ethertype in _VLAN_ETHERTYPES and len(frame) >= offset + 4:
            ethertype = int.from_bytes(frame[offset + 2 : offset + 4], "big")
            offset += 4
    elif linktype == LINKTYPE_LINUX_SLL and len(frame) >= 16:
        offset, ethertype = 16, int.from_bytes(frame[14:16], "big")
    elif linktype == LINKTYPE_LINUX_SLL2 and len(frame) >= 20:
        offset, ethertype = 20, int.from_bytes(frame[0:2], "big")
    elif linktype in (LINKTYPE_NULL, LINKTYPE_LOOP) and len(frame) >= 4:
        family = int.from_bytes(frame[:4], "little" if linktype == LINKTYPE_NULL else "big")
        if family not in (2, 24, 28, 30) and linktype == LINKTYPE_NULL:
            family = int.from_bytes(frame[:4], "big")  # written on a big-endian host
        return frame[4:] if family in (2, 24, 28, 30) else None
    else:
        return None
    return frame[offset:] if ethertype in _IP_ETHERTYPES else None


def _read_frames(path: str | Path) -> Iterator[tuple[float, bytes | None]]:
    """(time, raw IP packet or None) per frame. scapy reads the pcap/pcapng container
    (its raw readers: no dissection); the link layer is ours (:func:`ip_from_link`)."""
    try:
        from scapy.error import Scapy_Exception
        from scapy.utils import RawPcapReader
    except ImportError:
        raise DecodeError(
            "reading captures needs scapy: pip install 'aioipsec[decode]' (or pip install scapy)"
        ) from None
    try:
        reader = RawPcapReader(str(path))
    except (OSError, Scapy_Exception) as error:
        raise DecodeError(f"cannot read {path}: {error}") from None
    # RawPcapReader(path) returns a RawPcapNgReader for pcapng (scapy's metaclass), whose
    # metadata has other fields (tshigh, tslow, tsresol) than the pcap type it is typed with.
    meta: Any
    with reader:
        for frame, meta in reader:
            linktype = getattr(meta, "linktype", None)
            if linktype is None:
                linktype = reader.linktype
            if hasattr(meta, "tshigh"):  # pcapng: 64-bit timestamp in tsresol units
                stamp = ((meta.tshigh << 32) | meta.tslow) / meta.tsresol
            else:
                stamp = meta.sec + meta.usec / (1e9 if getattr(reader, "nano", False) else 1e6)
            yield float(stamp), ip_from_link(int(linktype), bytes(frame))


def decode_capture(
    path: str | Path,
    ike_keys: Iterable[IkeKeyEntry] = (),
    esp_keys: Iterable[EspKeyEntry] = (),
    *,
    ike_ports: Iterable[int] = (IKE_PORT,),
    natt_ports: Iterable[int] = (NAT_T_PORT,),
) -> Iterator[dict[str, Any]]:
    """One record per frame (see the module docstring). Keys starting with ``_`` hold the
    parsed objects for :func:`render_text` and are left out of the JSON."""
    ike_decryptor = IkeDecryptor(ike_keys)
    esp_decryptor = EspDecryptor(esp_keys)
    ike_set, natt_set = set(ike_ports), set(natt_ports)
    fragments = IpReassembler()
    for number, (timestamp, raw) in enumerate(_read_frames(path), start=1):
        record: dict[str, Any] = {"frame": number, "time": timestamp}
        ip = fragments.packet(raw) if raw is not None else None
        if ip is None:
            record["kind"] = "other"
            if fragments.last_was_fragment:
                record["ip_fragment"] = True
            yield record
            continue
        src, dst, protocol, payload = ip
        record.update(src=src, dst=dst)
        if protocol == ESP_PROTOCOL:
            record.update(_decode_esp(payload, src, dst, esp_decryptor))
        elif protocol == UDP_PROTOCOL and len(payload) >= 8:
            sport, dport = struct.unpack_from("!HH", payload)
            record.update(sport=sport, dport=dport)
            kind, data = classify_udp(sport, dport, payload[8:], ike_set, natt_set)
            if kind == "ike":
                record.update(decode_ike(data, ike_decryptor, timestamp))
                record["non_esp_marker"] = sport in natt_set or dport in natt_set
            elif kind == "esp":
                record.update(_decode_esp(data, src, dst, esp_decryptor))
                record["udp_encap"] = True
            else:
                record["kind"] = kind
        else:
            record["kind"] = "other"
            record["protocol"] = protocol
        yield record


def _decode_esp(data: bytes, src: str, dst: str, decryptor: EspDecryptor) -> dict[str, Any]:
    if len(data) < 8:
        return {"kind": "esp", "error": "shorter than SPI and sequence number"}
    spi, seq = struct.unpack_from("!II", data)
    record: dict[str, Any] = {"kind": "esp", "spi": f"{spi:08x}", "seq": seq, "length": len(data)}
    if decryptor:
        record.update(decryptor.decrypt(src, dst, data))
    else:
        record["decrypted"] = False
    return record


# ---------------------------------------------------------------------------- output


def json_record(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if not k.startswith("_")}


def render_ike_message(msg: IkeMessage, inner: IkeMessage | None, indent: str = "  ") -> list[str]:
    """Header and payloads of a message (inner payloads indented under the SK payload)."""
    header = msg.header
    flags = [f for f, on in (("I", header.initiator), ("R", header.response),
                             ("V", header.version)) if on]  # fmt: skip
    lines = [
        f"{indent}HDR SPIi {header.spi_i.hex()} SPIr {header.spi_r.hex()} "
        f"{_name(ExchangeType, int(header.exchange))} MID {header.message_id} "
        f"flags {''.join(flags) or '-'} length {header.length}"
    ]
    for payload in msg.payloads:
        lines.append(f"{indent}{payload_name(payload)}")
        lines += [f"{indent}  {line}" for line in describe_payload(payload)]
        if isinstance(payload, SkPayload | SkfPayload) and inner is not None:
            lines.append(f"{indent}  decrypted:" + ("" if inner.payloads else " (no payloads)"))
            for inner_payload in inner.payloads:
                lines.append(f"{indent}    {payload_name(inner_payload)}")
                lines += [f"{indent}      {line}" for line in describe_payload(inner_payload)]
    return lines


def _brief_names(names: list[Any]) -> str:
    parts = []
    for name in names:
        if isinstance(name, dict):
            for outer, inner in name.items():
                parts.append(f"{outer} {{{', '.join(inner)}}}")
        else:
            parts.append(str(name))
    return ", ".join(parts)


def render_brief(record: dict[str, Any]) -> str:
    """One line per frame, like tshark's summary: where, what, payloads or SPI/seq."""
    where = ""
    if "src" in record:
        sport = f":{record['sport']}" if "sport" in record else ""
        dport = f":{record['dport']}" if "dport" in record else ""
        where = f"{record['src']}{sport} -> {record['dst']}{dport}"
    head = f"{record['frame']:>5} {where:<45}"
    kind = record["kind"]
    if kind == "ike" and "exchange" in record:
        role = "response" if record["response"] else "request"
        text = f"IKE {record['exchange']} {role} #{record['message_id']}: "
        message, inner = record.get("_message"), record.get("_inner")
        if message is None:
            return head + text + _brief_names(record["payloads"])
        names = ["HDR"] + [short_name(p) for p in message.payloads]
        if inner is not None:
            names[-1] = f"{names[-1]} {{{', '.join(short_name(p) for p in inner.payloads)}}}"
        return head + text + ", ".join(names)
    if kind == "esp" and "spi" in record:
        text = f"ESP{' in UDP' if record.get('udp_encap') else ''} SPI 0x{record['spi']} "
        text += f"seq {record['seq']}"
        if record.get("decrypted"):
            text += f": {record['inner_summary']}"
        return head + text
    if kind == "keepalive":
        return head + "NAT-keepalive"
    detail = " (IP fragment)" if record.get("ip_fragment") else ""
    return head + (record.get("error") or f"{kind}{detail}")


def render_text(record: dict[str, Any]) -> str:
    where = ""
    if "src" in record:
        sport = f":{record['sport']}" if "sport" in record else ""
        dport = f":{record['dport']}" if "dport" in record else ""
        where = f" {record['src']}{sport} -> {record['dst']}{dport}"
    head = f"frame {record['frame']}{where}"
    kind = record["kind"]
    if kind == "ike":
        if "exchange" not in record:
            return f"{head} IKE: {record.get('error')}"
        role = "response" if record["response"] else "request"
        sender = "initiator" if record["initiator"] else "responder"
        lines = [f"{head} IKE {record['exchange']} #{record['message_id']} {role} from {sender}"]
        lines += render_ike_message(record["_message"], record.get("_inner"))
        if record.get("error"):
            lines.append(f"  (not decrypted: {record['error']})")
        return "\n".join(lines)
    if kind == "esp":
        encap = " (UDP-encapsulated)" if record.get("udp_encap") else ""
        line = f"{head} ESP{encap} SPI 0x{record.get('spi', '?')} seq {record.get('seq', '?')}"
        if record.get("decrypted"):
            line += f"\n  decrypted: next header {record['next_header']}, {record['inner_summary']}"
        elif record.get("error"):
            line += f"\n  (not decrypted: {record['error']})"
        return line
    if kind == "keepalive":
        return f"{head} NAT-keepalive (0xff, RFC 3948 sec. 2.3)"
    return f"{head} other"


# ---------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("capture", type=Path, help="pcap or pcapng file")
    parser.add_argument(
        "--ikev2-keys",
        type=Path,
        metavar="FILE",
        help="Wireshark ikev2_decryption_table (as --save-keys writes it)",
    )
    parser.add_argument(
        "--esp-keys",
        type=Path,
        metavar="FILE",
        help="Wireshark esp_sa table (as --save-keys writes it)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per frame")
    parser.add_argument("--all", action="store_true", help="also list frames that are not IPsec")
    parser.add_argument(
        "--brief", action="store_true", help="one line per frame (payload names, SPI/seq)"
    )
    parser.add_argument(
        "--ike-port",
        type=int,
        action="append",
        default=[],
        metavar="PORT",
        help="another UDP port carrying IKE without marker (500 always)",
    )
    parser.add_argument(
        "--natt-port",
        type=int,
        action="append",
        default=[],
        metavar="PORT",
        help="another UDP port carrying RFC 3948 traffic (4500 always)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        ike_keys = load_ikev2_table(args.ikev2_keys) if args.ikev2_keys else []
        esp_keys = load_esp_table(args.esp_keys) if args.esp_keys else []
    except (OSError, KeyTableError) as error:
        print(f"aioipsec decode: {error}", file=sys.stderr)
        return 2
    try:
        records = decode_capture(
            args.capture,
            ike_keys,
            esp_keys,
            ike_ports=[IKE_PORT, *args.ike_port],
            natt_ports=[NAT_T_PORT, *args.natt_port],
        )
        for record in records:
            if record["kind"] == "other" and not args.all:
                continue
            if args.json:
                print(json.dumps(json_record(record), sort_keys=False))
            elif args.brief:
                print(render_brief(record))
            else:
                print(render_text(record))
    except DecodeError as error:
        print(f"aioipsec decode: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="aioipsec decode",
        description="Decode IKEv2 (UDP 500, 4500 behind the non-ESP marker) and ESP (IP "
        "protocol 50, ESP in UDP) in a pcap/pcapng capture with aioipsec's own parser; "
        "decrypt with Wireshark's ikev2_decryption_table / esp_sa key tables.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
