"""IKEv2 messages: the IKE header, the payload chain and SK protection (RFC 7296 sec. 3.1-3.2,
sec. 3.14; RFC 5282 sec. 5.1 for the AEAD associated data).

Public API (what the engine calls)::

    msg = parse_message(datagram)            # IkeMessage; msg.raw is the exact datagram
    if msg.encrypted_payload is not None:    # SK: decrypt with the peer's direction cipher
        msg = decrypt_message(msg, cipher)   # inner payloads; msg.raw still the datagram
    msg.get(PayloadType.NONCE)               # first payload of a type (or None)
    msg.notifies(NotifyType.COOKIE)          # Notify payloads of a type (all when no type)
    data = serialize_message(header, payloads)               # plain (IKE_SA_INIT)
    data = serialize_message(header, payloads, cipher)       # inside one SK payload
    fragments = ikev2.fragments.serialize_fragments(...)      # RFC 7383, see fragments.py

``serialize_message`` fills in the header's Next Payload and Length itself: the caller
only sets SPIs, exchange type, flags and Message ID. The bytes it returns are exactly what
goes on the wire (keep them: the IKE_SA_INIT message is part of the AUTH signed octets,
RFC 7296 sec. 2.15; the received IKE_SA_INIT is ``msg.raw``).

Errors: everything raises :class:`ikev2.errors.ProtocolError` only (``IntegrityError``, a
subclass with no notify, for an SK payload that does not verify: drop silently).
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ikev2.enums import IKEV1_PAYLOAD_TYPES, ExchangeType, NotifyType, PayloadType
from ikev2.errors import ProtocolError
from ikev2.payloads import (
    KNOWN_PAYLOAD_TYPES,
    NotifyPayload,
    Payload,
    SkfPayload,
    SkPayload,
    UnknownPayload,
    as_enum,
    parse_payload_body,
)

if TYPE_CHECKING:
    from ikev2.crypto.sk import SkCipher

IKE_HEADER_SIZE = 28
GENERIC_HEADER_SIZE = 4
SKF_HEADER_SIZE = 8  # generic header + Fragment Number + Total Fragments (RFC 7383 sec. 2.5)
MAX_MESSAGE_SIZE = 0xFFFF  # the UDP payload limit; the Length field itself allows 2**32-1

# Header flag bits (sec. 3.1). The other five bits are reserved: sent as zero, ignored.
FLAG_RESPONSE = 0x20
FLAG_VERSION = 0x10
FLAG_INITIATOR = 0x08

# The critical bit of the generic payload header (sec. 3.2).
CRITICAL = 0x80


def _syntax(reason: str) -> ProtocolError:
    return ProtocolError(reason, NotifyType.INVALID_SYNTAX)


@dataclass(kw_only=True)
class IkeHeader:
    """The IKE header, RFC 7296 sec. 3.1.

    ::

                             1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                       IKE SA Initiator's SPI                  |
        |                                                               |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                       IKE SA Responder's SPI                  |
        |                                                               |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |  Next Payload | MjVer | MnVer | Exchange Type |     Flags     |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                          Message ID                           |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                            Length                             |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

    Flags: ``|X|X|R|V|I|X|X|X|`` -- ``response`` (R), ``version`` (V: "can speak a higher
    major version"), ``initiator`` (I: sent by the original initiator of the IKE SA).
    Checked by ``parse``: at least 28 octets, major version 2 (else INVALID_MAJOR_VERSION,
    sec. 2.5), initiator's SPI not zero (sec. 3.1: it "MUST NOT be zero"). A zero
    responder's SPI is legal in IKE_SA_INIT and its error replies: left to the engine.
    """

    spi_i: bytes
    spi_r: bytes = b"\x00" * 8
    next_payload: PayloadType | int = PayloadType.NO_NEXT_PAYLOAD
    major_version: int = 2
    minor_version: int = 0
    exchange: ExchangeType | int
    initiator: bool = False
    version: bool = False
    response: bool = False
    message_id: int = 0
    length: int = 0

    @classmethod
    def parse(cls, data: bytes | memoryview) -> IkeHeader:
        if len(data) < IKE_HEADER_SIZE:
            raise _syntax(f"IKE header: {len(data)} octets, 28 needed")
        spi_i = bytes(data[0:8])
        spi_r = bytes(data[8:16])
        next_payload, version, exchange, flags, message_id, length = struct.unpack_from(
            "!BBBBII", data, 16
        )
        major = version >> 4
        if major != 2:
            raise ProtocolError(f"IKE major version {major}", NotifyType.INVALID_MAJOR_VERSION)
        if not any(spi_i):
            raise _syntax("IKE header: initiator's SPI is zero")
        return cls(
            spi_i=spi_i,
            spi_r=spi_r,
            next_payload=as_enum(PayloadType, next_payload),
            major_version=major,
            minor_version=version & 0x0F,
            exchange=as_enum(ExchangeType, exchange),
            initiator=bool(flags & FLAG_INITIATOR),
            version=bool(flags & FLAG_VERSION),
            response=bool(flags & FLAG_RESPONSE),
            message_id=message_id,
            length=length,
        )

    @property
    def flags(self) -> int:
        return (
            (FLAG_RESPONSE if self.response else 0)
            | (FLAG_VERSION if self.version else 0)
            | (FLAG_INITIATOR if self.initiator else 0)
        )

    def serialize(self) -> bytes:
        if len(self.spi_i) != 8 or len(self.spi_r) != 8:
            raise ValueError("IKE SPIs are 8 octets")
        return (
            self.spi_i
            + self.spi_r
            + struct.pack(
                "!BBBBII",
                self.next_payload,
                (self.major_version << 4) | (self.minor_version & 0x0F),
                self.exchange,
                self.flags,
                self.message_id,
                self.length,
            )
        )


@dataclass
class IkeMessage:
    """A parsed IKE message.

    ``payloads``: the chain in wire order. Before decryption an encrypted message ends with
    its ``SkPayload`` / ``SkfPayload``; after :func:`decrypt_message` (or reassembly) it
    holds the inner payloads and ``protected`` is True.
    ``raw``: the exact datagram this message was parsed from (the AUTH signed octets of an
    IKE_SA_INIT message, sec. 2.15; the retransmission cache key).
    ``sk_offset``: where the IV of the SK/SKF payload starts in ``raw``: ``raw[:sk_offset]``
    is the associated data (IKE header up to and including the SK/SKF header). Kept by
    :func:`decrypt_message`, so a decrypted message still offers ``associated_data`` (the
    IntAuth "A" part of RFC 9242 sec. 3.3.2). None for a plain or reassembled message.
    """

    header: IkeHeader
    payloads: list[Payload] = field(default_factory=list)
    raw: bytes = b""
    protected: bool = False
    sk_offset: int | None = None

    # --- lookups for the engine ---------------------------------------------------------

    def get(self, payload_type: PayloadType | int) -> Payload | None:
        """The first payload of ``payload_type``, or None."""
        for payload in self.payloads:
            if payload_type == payload.TYPE:
                return payload
        return None

    def get_all(self, payload_type: PayloadType | int) -> list[Payload]:
        """Every payload of ``payload_type``, in message order."""
        return [p for p in self.payloads if payload_type == p.TYPE]

    def notifies(self, notify_type: NotifyType | int | None = None) -> list[NotifyPayload]:
        """Notify payloads of ``notify_type`` (all Notify payloads when None)."""
        return [
            p
            for p in self.payloads
            if isinstance(p, NotifyPayload)
            and (notify_type is None or p.notify_type == notify_type)
        ]

    def notify(self, notify_type: NotifyType | int) -> NotifyPayload | None:
        """The first Notify of ``notify_type``, or None."""
        found = self.notifies(notify_type)
        return found[0] if found else None

    def error_notifies(self) -> list[NotifyPayload]:
        """Notify payloads of error types (sec. 3.10.1: below 16384)."""
        return [p for p in self.notifies() if p.is_error]

    @property
    def encrypted_payload(self) -> SkPayload | SkfPayload | None:
        """The SK or SKF payload still to be decrypted (it is always the last payload)."""
        if self.payloads and isinstance(self.payloads[-1], SkPayload | SkfPayload):
            return self.payloads[-1]
        return None

    @property
    def is_fragment(self) -> bool:
        return isinstance(self.encrypted_payload, SkfPayload)

    @property
    def associated_data(self) -> bytes:
        """``raw[:sk_offset]``: the AAD / integrity-protected prefix of the SK payload."""
        if self.sk_offset is None:
            raise ValueError("message has no SK/SKF payload")
        return self.raw[: self.sk_offset]

    @property
    def encrypted_body(self) -> bytes:
        """``raw[sk_offset:]``: IV || ciphertext || ICV of the SK/SKF payload."""
        if self.sk_offset is None:
            raise ValueError("message has no SK/SKF payload")
        return self.raw[self.sk_offset :]


# --------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------


def parse_payload_chain(
    data: bytes | memoryview, first_type: int, *, inside_sk: bool = False
) -> tuple[list[Payload], int | None]:
    """Walk a payload chain (sec. 3.2) starting with a payload of ``first_type``.

    Returns ``(payloads, sk_offset)`` where ``sk_offset`` is the offset in ``data`` of the
    IV of an SK/SKF payload (None without one). Rules applied:

    * every Payload Length >= 4 and within the data; after the last payload (Next Payload 0
      or an SK/SKF payload) there must be nothing left;
    * SK / SKF must be the last payload (sec. 3.14), and may not appear inside an SK;
    * a type we do not implement (incl. IKEv1 types 1-13, which are never parsed as IKEv1:
      strongSwan CVE-2015-3991) is kept as :class:`UnknownPayload` when its critical bit is
      clear and raises UNSUPPORTED_CRITICAL_PAYLOAD (notify data: the type) when it is set;
    * the critical bit of a payload we implement is ignored (sec. 3.2).
    """
    view = memoryview(data)
    payloads: list[Payload] = []
    offset = 0
    current = first_type
    while current != PayloadType.NO_NEXT_PAYLOAD:
        if len(view) - offset < GENERIC_HEADER_SIZE:
            raise _syntax(f"payload {current}: truncated generic header")
        next_type, flags, length = struct.unpack_from("!BBH", view, offset)
        if length < GENERIC_HEADER_SIZE or offset + length > len(view):
            raise _syntax(f"payload {current}: length {length}, {len(view) - offset} left")
        body = view[offset + GENERIC_HEADER_SIZE : offset + length]
        if current in (PayloadType.SK, PayloadType.SKF):
            if inside_sk:
                raise _syntax("SK/SKF payload inside an SK payload")
            if offset + length != len(view):
                raise _syntax("SK/SKF payload is not the last payload")
            payloads.append(parse_payload_body(current, body, next_type))
            header_size = SKF_HEADER_SIZE if current == PayloadType.SKF else GENERIC_HEADER_SIZE
            return payloads, offset + header_size
        if current in KNOWN_PAYLOAD_TYPES and current not in IKEV1_PAYLOAD_TYPES:
            payloads.append(parse_payload_body(current, body))
        elif flags & CRITICAL:
            raise ProtocolError(
                f"unsupported critical payload type {current}",
                NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD,
                notify_data=bytes((current,)),
            )
        else:
            payloads.append(UnknownPayload(current, False, body.tobytes()))
        offset += length
        current = next_type
    if offset != len(view):
        raise _syntax(f"{len(view) - offset} octets after the last payload")
    return payloads, None


def parse_message(data: bytes | bytearray | memoryview) -> IkeMessage:
    """Parse one IKE message (the UDP payload, without the 4-octet non-ESP marker).

    The Length field must equal the datagram length. An SK/SKF payload is kept encrypted
    (``msg.encrypted_payload``); call :func:`decrypt_message` or a
    :class:`ikev2.fragments.Reassembler`.
    """
    raw = bytes(data)
    header = IkeHeader.parse(raw)
    if header.length != len(raw):
        raise _syntax(f"IKE header Length {header.length}, datagram {len(raw)} octets")
    payloads, sk_offset = parse_payload_chain(
        memoryview(raw)[IKE_HEADER_SIZE:], header.next_payload
    )
    return IkeMessage(
        header=header,
        payloads=payloads,
        raw=raw,
        sk_offset=None if sk_offset is None else IKE_HEADER_SIZE + sk_offset,
    )


def decrypt_message(msg: IkeMessage, cipher: SkCipher) -> IkeMessage:
    """Verify and decrypt the SK payload of ``msg``: a new message with the inner payloads.

    ``cipher`` is the *peer's* direction (SK_ei/SK_ai for messages from the initiator).
    Raises ``IntegrityError`` (drop silently, sec. 3.14) when the ICV does not verify and
    ``ProtocolError`` for a bad inner chain. Payloads in front of the SK payload are not
    authenticated and are dropped. For SKF fragments use ``ikev2.fragments.Reassembler``.
    """
    sk = msg.encrypted_payload
    if not isinstance(sk, SkPayload) or msg.sk_offset is None:
        raise _syntax("message has no SK payload")
    plaintext = cipher.open(msg.associated_data, msg.encrypted_body)
    inner, _ = parse_payload_chain(plaintext, sk.first_inner, inside_sk=True)
    return IkeMessage(
        header=msg.header, payloads=inner, raw=msg.raw, protected=True, sk_offset=msg.sk_offset
    )


# --------------------------------------------------------------------------------------
# Serialization
# --------------------------------------------------------------------------------------


def _payload_type(payload: Payload) -> int:
    return int(payload.TYPE)


def serialize_payload_chain(payloads: Sequence[Payload], last_next: int = 0) -> bytes:
    """Serialize payloads with their generic headers, chained by Next Payload (sec. 3.2).

    ``last_next`` is the Next Payload of the last one (0, or SK when an SK follows).
    """
    parts: list[bytes] = []
    for index, payload in enumerate(payloads):
        body = payload.serialize()
        if isinstance(payload, SkPayload | SkfPayload):
            # its Next Payload is the first inner payload's type (sec. 3.14); it is last
            next_type = int(payload.first_inner)
        elif index + 1 < len(payloads):
            next_type = _payload_type(payloads[index + 1])
        else:
            next_type = last_next
        critical = CRITICAL if isinstance(payload, UnknownPayload) and payload.critical else 0
        length = GENERIC_HEADER_SIZE + len(body)
        if length > 0xFFFF:
            raise ValueError(f"payload {payload.TYPE} too long: {length} octets")
        parts.append(struct.pack("!BBH", next_type, critical, length))
        parts.append(body)
    return b"".join(parts)


def serialize_message(
    header: IkeHeader,
    payloads: Sequence[Payload],
    cipher: SkCipher | None = None,
    *,
    iv: bytes | None = None,
) -> bytes:
    """The wire bytes of a message (sec. 3.1-3.2).

    Without ``cipher``: the payloads in clear (IKE_SA_INIT). With ``cipher`` (our own
    direction: SK_ei/SK_ai when we are the original initiator): all ``payloads`` go inside
    one SK payload, whose associated data / integrity input is the IKE header and the SK
    header with their final lengths (RFC 5282 sec. 5.1, RFC 7296 sec. 3.14). ``iv`` forces
    the IV (known-answer tests, ``--seed``); never reuse one under the same key.
    ``header.next_payload`` and ``header.length`` are computed here (the object passed in
    is not modified).
    """
    if cipher is None:
        chain = serialize_payload_chain(payloads)
        first = _payload_type(payloads[0]) if payloads else PayloadType.NO_NEXT_PAYLOAD
        final = dataclasses.replace(header, next_payload=first, length=IKE_HEADER_SIZE + len(chain))
        return final.serialize() + chain
    inner = serialize_payload_chain(payloads)
    first_inner = _payload_type(payloads[0]) if payloads else PayloadType.NO_NEXT_PAYLOAD
    sealed_length = cipher.sealed_length(len(inner))
    sk_length = GENERIC_HEADER_SIZE + sealed_length
    if sk_length > 0xFFFF:
        raise ValueError(f"SK payload too long: {sk_length} octets (fragment it)")
    final = dataclasses.replace(
        header, next_payload=PayloadType.SK, length=IKE_HEADER_SIZE + sk_length
    )
    aad = final.serialize() + struct.pack("!BBH", first_inner, 0, sk_length)
    return aad + cipher.seal(aad, inner, iv)


def encrypted_message_length(payloads: Iterable[Payload], cipher: SkCipher) -> int:
    """The length ``serialize_message(header, payloads, cipher)`` will have (for deciding
    whether to fragment, RFC 7383 sec. 2.5)."""
    inner = serialize_payload_chain(list(payloads))
    return IKE_HEADER_SIZE + GENERIC_HEADER_SIZE + cipher.sealed_length(len(inner))
