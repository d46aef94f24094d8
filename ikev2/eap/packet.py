"""EAP packets (RFC 3748 sec. 4, 5), as carried in IKEv2's EAP payload (RFC 7296 sec. 3.16).

The IKE payload (``ikev2.payloads.EapPayload``) checks only that the EAP Length matches the
payload; this module decodes the EAP header and the method type. A malformed EAP packet
raises :class:`EapError`, a ProtocolError whose notify is AUTHENTICATION_FAILED: inside
IKE_AUTH a broken EAP conversation ends the authentication (RFC 7296 sec. 2.16), it is not
an IKE syntax error.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Self

from ikev2.enums import EapCode, EapType, NotifyType
from ikev2.errors import ProtocolError
from ikev2.payloads import as_enum

# RFC 3748 sec. 5.1: the identity "SHOULD NOT" be null-terminated; RADIUS carries it in
# User-Name (at most 253 octets, RFC 2865 sec. 5.1), so longer ones are refused.
MAX_IDENTITY_LENGTH = 253


class EapError(ProtocolError):
    """An EAP conversation failed: wrong packet, wrong order, wrong credentials."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, NotifyType.AUTHENTICATION_FAILED)


@dataclass
class EapPacket:
    """One EAP packet, RFC 3748 sec. 4 (Request/Response) and 4.2 (Success/Failure).

    ::

         0                   1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |     Code      |  Identifier   |            Length             |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |     Type      |  Type-Data ...
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-

    Success and Failure are the four header octets only (sec. 4.2). Type 254 (Expanded,
    sec. 5.7) carries a 3-octet Vendor-Id and a 4-octet Vendor-Type before its data; they
    stay in ``data`` (no expanded method is implemented). Length must equal the octets
    given (a shorter packet is truncated, a longer one has trailing bytes: both refused).
    """

    code: EapCode | int
    identifier: int
    type: EapType | int | None = None  # None for Success / Failure
    data: bytes = b""

    @classmethod
    def parse(cls, message: bytes) -> Self:
        if len(message) < 4:
            raise EapError(f"EAP packet of {len(message)} octets (4 at least)")
        code, identifier, length = struct.unpack_from("!BBH", message)
        if length != len(message):
            raise EapError(f"EAP Length {length} in a {len(message)}-octet packet")
        if code in (EapCode.SUCCESS, EapCode.FAILURE):
            if length != 4:
                raise EapError(f"EAP {EapCode(code).name} with {length - 4} data octets")
            return cls(EapCode(code), identifier)
        if code not in (EapCode.REQUEST, EapCode.RESPONSE):
            raise EapError(f"EAP code {code} (RFC 3748 sec. 4: 1-4)")
        if length < 5:
            raise EapError(f"EAP {EapCode(code).name} without a Type")
        return cls(EapCode(code), identifier, as_enum(EapType, message[4]), bytes(message[5:]))

    def serialize(self) -> bytes:
        body = b"" if self.type is None else bytes((self.type,)) + self.data
        return struct.pack("!BBH", self.code, self.identifier, 4 + len(body)) + body

    @property
    def is_request(self) -> bool:
        return self.code == EapCode.REQUEST

    def describe(self) -> str:
        """For logs: never the Type-Data (it may hold an MS-CHAPv2 response)."""
        code = EapCode(self.code).name if self.code in EapCode._value2member_map_ else self.code
        kind = ""
        if self.type is not None:
            kind = " " + (
                EapType(self.type).name
                if self.type in EapType._value2member_map_
                else f"type {self.type}"
            )
        return f"EAP {code}{kind} id {self.identifier}"


def parse_response(message: bytes, identifier: int) -> EapPacket:
    """The peer's next EAP message: a Response (RFC 3748 sec. 4.1) whose Identifier is that
    of the authenticator's outstanding Request (sec. 4.1: a Response to anything else is
    out of order or a repeat), or EapError saying which."""
    packet = EapPacket.parse(message)
    if packet.code != EapCode.RESPONSE:
        raise EapError(f"{packet.describe()} from the peer (only Responses are allowed)")
    if packet.identifier != identifier:
        raise EapError(
            f"{packet.describe()}: expected Identifier {identifier} (out of order or repeated)"
        )
    return packet


def check_identity(raw: bytes) -> str:
    """An EAP-Identity (RFC 3748 sec. 5.1) as a printable string, or EapError.

    Refused: longer than :data:`MAX_IDENTITY_LENGTH`, not UTF-8, or holding control
    characters (they would forge log lines and never name a real user).
    """
    if len(raw) > MAX_IDENTITY_LENGTH:
        raise EapError(f"EAP identity of {len(raw)} octets (at most {MAX_IDENTITY_LENGTH})")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise EapError("EAP identity is not UTF-8") from None
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in text):
        raise EapError(
            f"EAP identity {text.encode('unicode_escape').decode()!r} holds control characters"
        )
    if not text:
        raise EapError("empty EAP identity")
    return text


def identity_request(identifier: int) -> EapPacket:
    """Request/Identity (sec. 5.1); no prompt text."""
    return EapPacket(EapCode.REQUEST, identifier, EapType.IDENTITY)


def identity_response(identifier: int, identity: str) -> EapPacket:
    return EapPacket(EapCode.RESPONSE, identifier, EapType.IDENTITY, identity.encode("utf-8"))


def nak(identifier: int, wanted: list[int]) -> EapPacket:
    """Legacy Nak (sec. 5.3.1): the method types the peer would accept (0: none)."""
    return EapPacket(EapCode.RESPONSE, identifier, EapType.NAK, bytes(wanted or [0]))
