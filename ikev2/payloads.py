"""IKEv2 payloads (RFC 7296 sec. 3.2-3.16, RFC 7383 sec. 2.5) as dataclasses.

CONTRACT (fields fixed by the lead; parse/serialize filled in next to the RFC diagrams):
every payload class has

    TYPE: ClassVar[PayloadType]          (IdPayload / TsPayload: their ``payload_type``)
    @classmethod parse(cls, body: bytes | memoryview) -> Self   # body = after the 4-byte
                                                               # generic payload header
    serialize(self) -> bytes                                   # body only

and the generic header (next payload, critical bit, length) is handled by ikev2.message.

Validation policy (for every parser here):

* Every length is checked: a length field that disagrees with the data, a count that
  disagrees with the contents, a truncated structure or trailing bytes raise
  :class:`ikev2.errors.ProtocolError` with ``INVALID_SYNTAX``. No other exception escapes.
* RESERVED fields and reserved flag bits are *ignored on receipt* and *sent as zero*
  (RFC 7296 sec. 3.2: "MUST be sent as zero; MUST be ignored on receipt"). The exact round
  trip ``serialize(parse(b)) == b`` therefore holds for every valid ``b`` whose reserved
  fields are zero (the canonical encoding); ``parse(serialize(x)) == x`` holds for every x.
* Values of registries (transform IDs, notify types, ID types, ...) that we do not know are
  kept as plain ints: they are a matter of policy (the engine), not of syntax. Exceptions,
  where the structure itself depends on the value: Traffic Selector types (the address size
  depends on it) and protocol IDs that fix an SPI size.
* Semantic checks (a KE value's length for its group, which notify may carry which data)
  belong to the code that understands them (key exchange, engine), not to this module.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import ClassVar, Self, get_args

from ikev2.enums import (
    AuthMethod,
    CertEncoding,
    CfgType,
    IdType,
    KeId,
    NotifyType,
    PayloadType,
    ProtocolId,
    TransformAttributeType,
    TransformType,
    TsType,
)
from ikev2.errors import ProtocolError

Buffer = bytes | bytearray | memoryview


def _syntax(reason: str) -> ProtocolError:
    return ProtocolError(reason, NotifyType.INVALID_SYNTAX)


def as_enum(enum_type: type[IntEnum], value: int) -> int:
    """``enum_type(value)`` when the registry knows it, else the plain int (kept as is)."""
    try:
        return enum_type(value)
    except ValueError:
        return value


def _min_length(body: Buffer, length: int, what: str) -> None:
    if len(body) < length:
        raise _syntax(f"{what}: {len(body)} octets, at least {length} needed")


# Expected SPI sizes per protocol (RFC 7296 sec. 3.3.1): IKE_SA_INIT proposals carry no
# SPI, an IKE SA rekey carries the new 8-octet SPI; AH and ESP SPIs are 4 octets.
_PROPOSAL_SPI_SIZES = {ProtocolId.IKE: (0, 8), ProtocolId.AH: (4,), ProtocolId.ESP: (4,)}


# --------------------------------------------------------------------------------------
# Security Association payload: proposals, transforms, attributes (sec. 3.3)
# --------------------------------------------------------------------------------------


@dataclass
class TransformAttribute:
    """A transform attribute other than Key Length (RFC 7296 sec. 3.3.5), kept verbatim.

    ::

                             1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |A|       Attribute Type        |    AF=0  Attribute Length     |
        |F|                             |    AF=1  Attribute Value      |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                   AF=0  Attribute Value                       |
        |                   AF=1  Not Transmitted                       |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

    ``tv`` is the AF bit (Type/Value: ``value`` is exactly 2 octets). Kept so that the
    proposal selection can refuse a transform with an attribute it does not understand
    (sec. 3.3.6) and so that serialization is exact.
    """

    type: int
    value: bytes
    tv: bool = False

    def serialize(self) -> bytes:
        if self.tv:
            if len(self.value) != 2:
                raise ValueError("a TV attribute value is exactly 2 octets")
            return struct.pack("!H", 0x8000 | self.type) + self.value
        return struct.pack("!HH", self.type & 0x7FFF, len(self.value)) + self.value


@dataclass
class Transform:
    """RFC 7296 sec. 3.3.2. ``key_length`` is the Key Length attribute (sec. 3.3.5) in bits.

    ::

                             1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        | Last Substruc |   RESERVED    |        Transform Length       |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |Transform Type |   RESERVED    |          Transform ID         |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                                                               |
        ~                      Transform Attributes                     ~
        |                                                               |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

    ``Last Substruc`` is 0 for the last transform of a proposal, 3 otherwise. The Key
    Length attribute must be in TV format (sec. 3.3.5) and appear at most once.
    ``other_attributes`` keeps any other attribute (unknown to RFC 7296) verbatim;
    ``key_length_position`` remembers where Key Length stood among them (not compared:
    it only exists so that re-serialising a parsed transform is byte-exact).
    """

    type: TransformType | int
    id: int
    key_length: int | None = None
    other_attributes: list[TransformAttribute] = field(default_factory=list)
    key_length_position: int = field(default=0, repr=False, compare=False)

    @classmethod
    def parse(cls, data: Buffer) -> tuple[Self, bool, int]:
        """Parse one transform substructure at the start of ``data``.

        Returns ``(transform, more_follow, consumed_octets)``.
        """
        _min_length(data, 8, "transform")
        last, _reserved, length, ttype, _reserved2, tid = struct.unpack_from("!BBHBBH", data)
        if last not in (0, 3):
            raise _syntax(f"transform: Last Substruc {last} (must be 0 or 3)")
        if length < 8 or length > len(data):
            raise _syntax(f"transform: length {length} with {len(data)} octets available")
        attributes = memoryview(data)[8:length]
        key_length: int | None = None
        position = 0
        others: list[TransformAttribute] = []
        offset = 0
        while offset < len(attributes):
            if len(attributes) - offset < 4:
                raise _syntax("transform attribute: truncated header")
            word, second = struct.unpack_from("!HH", attributes, offset)
            attr_type = word & 0x7FFF
            if word & 0x8000:  # AF=1: Type/Value, the value is in the header
                value = attributes[offset + 2 : offset + 4].tobytes()
                offset += 4
                if attr_type == TransformAttributeType.KEY_LENGTH:
                    if key_length is not None:
                        raise _syntax("transform: Key Length attribute repeated")
                    key_length = second
                    position = len(others)
                else:
                    others.append(TransformAttribute(attr_type, value, tv=True))
            else:
                end = offset + 4 + second
                if end > len(attributes):
                    raise _syntax(f"transform attribute: length {second} exceeds transform")
                if attr_type == TransformAttributeType.KEY_LENGTH:
                    raise _syntax("transform: Key Length attribute must be TV (sec. 3.3.5)")
                others.append(TransformAttribute(attr_type, attributes[offset + 4 : end].tobytes()))
                offset = end
        transform = cls(
            type=as_enum(TransformType, ttype),
            id=tid,
            key_length=key_length,
            other_attributes=others,
            key_length_position=position,
        )
        return transform, last == 3, length

    def serialize(self, last: bool = True) -> bytes:
        attributes = [a.serialize() for a in self.other_attributes]
        if self.key_length is not None:
            position = min(self.key_length_position, len(attributes))
            key_type = 0x8000 | TransformAttributeType.KEY_LENGTH
            key_attr = struct.pack("!HH", key_type, self.key_length)
            attributes.insert(position, key_attr)
        body = b"".join(attributes)
        header = struct.pack("!BBHBBH", 0 if last else 3, 0, 8 + len(body), self.type, 0, self.id)
        return header + body


@dataclass
class Proposal:
    """RFC 7296 sec. 3.3.1. ``spi``: empty in IKE_SA_INIT, 8 bytes for IKE rekey, 4 for ESP/AH.

    ::

                             1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        | Last Substruc |   RESERVED    |         Proposal Length       |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        | Proposal Num  |  Protocol ID  |    SPI Size   |Num  Transforms|
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        ~                        SPI (variable)                         ~
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                                                               |
        ~                        <Transforms>                           ~
        |                                                               |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

    Checked on parse: Last Substruc 0 or 2, the length covers exactly SPI + transforms,
    Num Transforms equals the transforms found (and their Last Substruc chain agrees),
    the SPI size fits the protocol (IKE: 0 or 8, AH/ESP: 4; protocol 0 is refused; an
    unknown protocol keeps whatever SPI it carries and is left to the policy), and a
    non-empty SPI is not all zeros (SPI 0 is reserved: RFC 4303 sec. 2.1, RFC 7296 sec. 3.1).
    """

    number: int
    protocol: ProtocolId | int
    spi: bytes = b""
    transforms: list[Transform] = field(default_factory=list)

    @classmethod
    def parse(cls, data: Buffer) -> tuple[Self, bool, int]:
        """Parse one proposal at the start of ``data``: ``(proposal, more_follow, consumed)``."""
        _min_length(data, 8, "proposal")
        last, _reserved, length, number, protocol, spi_size, count = struct.unpack_from(
            "!BBHBBBB", data
        )
        if last not in (0, 2):
            raise _syntax(f"proposal: Last Substruc {last} (must be 0 or 2)")
        if length < 8 + spi_size or length > len(data):
            raise _syntax(f"proposal: length {length} with {len(data)} octets available")
        if protocol == ProtocolId.RESERVED:
            raise _syntax("proposal: protocol ID 0")
        allowed = _PROPOSAL_SPI_SIZES.get(protocol)
        if allowed is not None and spi_size not in allowed:
            raise _syntax(f"proposal: SPI size {spi_size} for protocol {protocol}")
        view = memoryview(data)[:length]
        spi = view[8 : 8 + spi_size].tobytes()
        if spi and not any(spi):
            raise _syntax("proposal: SPI is zero")
        transforms: list[Transform] = []
        offset = 8 + spi_size
        more = offset < length
        while offset < length:
            if not more:
                raise _syntax("proposal: data after the last transform")
            transform, more, consumed = Transform.parse(view[offset:])
            transforms.append(transform)
            offset += consumed
        if more and transforms:
            raise _syntax("proposal: last transform announces another one")
        if len(transforms) != count:
            raise _syntax(f"proposal: Num Transforms {count}, {len(transforms)} present")
        return (
            cls(
                number=number,
                protocol=as_enum(ProtocolId, protocol),
                spi=spi,
                transforms=transforms,
            ),
            last == 2,
            length,
        )

    def serialize(self, last: bool = True) -> bytes:
        transforms = b"".join(
            t.serialize(last=i == len(self.transforms) - 1) for i, t in enumerate(self.transforms)
        )
        length = 8 + len(self.spi) + len(transforms)
        header = struct.pack(
            "!BBHBBBB",
            0 if last else 2,
            0,
            length,
            self.number,
            self.protocol,
            len(self.spi),
            len(self.transforms),
        )
        return header + self.spi + transforms

    def transforms_of(self, transform_type: TransformType | int) -> list[Transform]:
        """The transforms of one type, in proposal order."""
        return [t for t in self.transforms if t.type == transform_type]


@dataclass
class SaPayload:
    """Security Association payload, RFC 7296 sec. 3.3.

    ::

                             1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        | Next Payload  |C|  RESERVED   |         Payload Length        |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                                                               |
        ~                          <Proposals>                          ~
        |                                                               |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

    At least one proposal; "the first Proposal MUST have a Proposal Num of one, and each
    subsequent Proposal MUST have a Proposal Num one more than the previous" (sec. 3.3.1)
    -- except that a response carries the single chosen proposal with its original number,
    so numbering is checked as "1, 2, 3..." only when there is more than one proposal.
    """

    TYPE: ClassVar[PayloadType] = PayloadType.SA
    proposals: list[Proposal] = field(default_factory=list)

    @classmethod
    def parse(cls, body: Buffer) -> Self:
        view = memoryview(body)
        if not view:
            raise _syntax("SA payload without proposals")
        proposals: list[Proposal] = []
        offset = 0
        more = True
        while offset < len(view):
            if not more:
                raise _syntax("SA payload: data after the last proposal")
            proposal, more, consumed = Proposal.parse(view[offset:])
            proposals.append(proposal)
            offset += consumed
        if more:
            raise _syntax("SA payload: last proposal announces another one")
        if len(proposals) > 1:
            for expected, proposal in enumerate(proposals, start=1):
                if proposal.number != expected:
                    raise _syntax(
                        f"SA payload: proposal number {proposal.number}, expected {expected}"
                    )
        return cls(proposals=proposals)

    def serialize(self) -> bytes:
        return b"".join(
            p.serialize(last=i == len(self.proposals) - 1) for i, p in enumerate(self.proposals)
        )


# --------------------------------------------------------------------------------------
# Simple "type + reserved + data" payloads
# --------------------------------------------------------------------------------------


@dataclass
class KePayload:
    """Key Exchange payload, RFC 7296 sec. 3.4 (RFC 9370: Key Exchange Method).

    ::

                             1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        | Next Payload  |C|  RESERVED   |         Payload Length        |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |   Diffie-Hellman Group Num    |           RESERVED            |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                                                               |
        ~                       Key Exchange Data                       ~
        |                                                               |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

    The data length for the group is checked by ``ikev2.crypto.keyexchange``, not here.
    """

    TYPE: ClassVar[PayloadType] = PayloadType.KE
    group: KeId | int
    data: bytes

    @classmethod
    def parse(cls, body: Buffer) -> Self:
        _min_length(body, 4, "KE payload")
        (group,) = struct.unpack_from("!H", body)
        return cls(group=as_enum(KeId, group), data=bytes(body[4:]))

    def serialize(self) -> bytes:
        return struct.pack("!HH", self.group, 0) + self.data


# Fixed address sizes of the ID types that are addresses (RFC 7296 sec. 3.5).
_ID_ADDRESS_SIZES: dict[int, int] = {IdType.ID_IPV4_ADDR: 4, IdType.ID_IPV6_ADDR: 16}


@dataclass
class IdPayload:
    """IDi or IDr (RFC 7296 sec. 3.5). ``TYPE`` depends on the role: use ``payload_type``.

    ::

                             1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        | Next Payload  |C|  RESERVED   |         Payload Length        |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |   ID Type     |                 RESERVED                      |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                                                               |
        ~                   Identification Data                         ~
        |                                                               |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

    ID_IPV4_ADDR / ID_IPV6_ADDR data must be 4 / 16 octets. ``body_for_auth()`` is the
    "RestOfIDPayload" that RFC 7296 sec. 2.15 feeds into the AUTH computation.
    """

    payload_type: PayloadType  # PayloadType.IDi or PayloadType.IDr
    id_type: IdType | int
    data: bytes

    @property
    def TYPE(self) -> PayloadType:
        return self.payload_type

    @classmethod
    def parse(cls, body: Buffer, payload_type: PayloadType = PayloadType.IDi) -> Self:
        _min_length(body, 4, "ID payload")
        id_type = body[0]
        data = bytes(body[4:])
        expected = _ID_ADDRESS_SIZES.get(id_type)
        if expected is not None and len(data) != expected:
            raise _syntax(f"ID payload: {len(data)}-octet address for ID type {id_type}")
        return cls(payload_type=payload_type, id_type=as_enum(IdType, id_type), data=data)

    def serialize(self) -> bytes:
        return bytes((self.id_type, 0, 0, 0)) + self.data

    def body_for_auth(self) -> bytes:
        """The ID payload body (ID Type, RESERVED, data): RestOfInitIDPayload, sec. 2.15."""
        return self.serialize()


@dataclass
class CertPayload:
    """Certificate payload, RFC 7296 sec. 3.6.

    ::

                             1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        | Next Payload  |C|  RESERVED   |         Payload Length        |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        | Cert Encoding |                                               |
        +-+-+-+-+-+-+-+-+                                               |
        ~                       Certificate Data                        ~
        |                                                               |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    """

    TYPE: ClassVar[PayloadType] = PayloadType.CERT
    encoding: CertEncoding | int
    data: bytes

    @classmethod
    def parse(cls, body: Buffer) -> Self:
        _min_length(body, 1, "CERT payload")
        return cls(encoding=as_enum(CertEncoding, body[0]), data=bytes(body[1:]))

    def serialize(self) -> bytes:
        return bytes((self.encoding,)) + self.data


@dataclass
class CertReqPayload:
    """Certificate Request payload, RFC 7296 sec. 3.7.

    ::

                             1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        | Next Payload  |C|  RESERVED   |         Payload Length        |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        | Cert Encoding |                                               |
        +-+-+-+-+-+-+-+-+                                               |
        ~                    Certification Authority                    ~
        |                                                               |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

    The data of an X.509 CERTREQ is not checked to be a multiple of 20 here (some peers
    send an empty one): ``ca_hashes()`` splits it and refuses a ragged tail.
    """

    TYPE: ClassVar[PayloadType] = PayloadType.CERTREQ
    encoding: CertEncoding | int
    data: bytes  # for X.509: concatenated SHA-1 hashes of CA public keys (20 bytes each)

    @classmethod
    def parse(cls, body: Buffer) -> Self:
        _min_length(body, 1, "CERTREQ payload")
        return cls(encoding=as_enum(CertEncoding, body[0]), data=bytes(body[1:]))

    def serialize(self) -> bytes:
        return bytes((self.encoding,)) + self.data

    def ca_hashes(self) -> list[bytes]:
        """The 20-octet SHA-1 SubjectPublicKeyInfo hashes (sec. 3.7); ProtocolError if ragged."""
        if len(self.data) % 20:
            raise _syntax(f"CERTREQ: {len(self.data)} octets is not a list of SHA-1 hashes")
        return [self.data[i : i + 20] for i in range(0, len(self.data), 20)]


@dataclass
class AuthPayload:
    """Authentication payload, RFC 7296 sec. 3.8.

    ::

                             1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        | Next Payload  |C|  RESERVED   |         Payload Length        |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        | Auth Method   |                RESERVED                       |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                                                               |
        ~                      Authentication Data                      ~
        |                                                               |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    """

    TYPE: ClassVar[PayloadType] = PayloadType.AUTH
    method: AuthMethod | int
    data: bytes

    @classmethod
    def parse(cls, body: Buffer) -> Self:
        _min_length(body, 4, "AUTH payload")
        return cls(method=as_enum(AuthMethod, body[0]), data=bytes(body[4:]))

    def serialize(self) -> bytes:
        return bytes((self.method, 0, 0, 0)) + self.data


NONCE_MIN_SIZE = 16  # RFC 7296 sec. 3.9: "between 16 and 256 octets"
NONCE_MAX_SIZE = 256


@dataclass
class NoncePayload:
    """Nonce payload, RFC 7296 sec. 3.9 (16..256 octets).

    ::

                             1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        | Next Payload  |C|  RESERVED   |         Payload Length        |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                                                               |
        ~                            Nonce Data                         ~
        |                                                               |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    """

    TYPE: ClassVar[PayloadType] = PayloadType.NONCE
    nonce: bytes  # 16..256 octets (sec. 3.9)

    @classmethod
    def parse(cls, body: Buffer) -> Self:
        if not NONCE_MIN_SIZE <= len(body) <= NONCE_MAX_SIZE:
            raise _syntax(f"Nonce: {len(body)} octets (must be 16..256)")
        return cls(nonce=bytes(body))

    def serialize(self) -> bytes:
        return self.nonce


@dataclass
class NotifyPayload:
    """Notify payload, RFC 7296 sec. 3.10.

    ::

                             1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        | Next Payload  |C|  RESERVED   |         Payload Length        |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |  Protocol ID  |   SPI Size    |      Notify Message Type      |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                                                               |
        ~                Security Parameter Index (SPI)                 ~
        |                                                               |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                                                               |
        ~                       Notification Data                       ~
        |                                                               |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

    Checked: SPI Size fits in the payload; with an SPI, the protocol must be IKE (8, some
    implementations name the IKE SA this way), AH or ESP (4), and the SPI must not be zero.
    "If the SPI field is empty, this field MUST be sent as zero and MUST be ignored on
    receipt": the protocol of an SPI-less notify is kept as received, never refused.
    """

    TYPE: ClassVar[PayloadType] = PayloadType.NOTIFY
    notify_type: NotifyType | int
    protocol: ProtocolId | int = ProtocolId.RESERVED
    spi: bytes = b""
    data: bytes = b""

    @classmethod
    def parse(cls, body: Buffer) -> Self:
        _min_length(body, 4, "Notify payload")
        protocol, spi_size, notify_type = struct.unpack_from("!BBH", body)
        if 4 + spi_size > len(body):
            raise _syntax(f"Notify: SPI size {spi_size} exceeds the payload")
        if spi_size:
            if spi_size not in {
                ProtocolId.IKE: (8,),
                ProtocolId.AH: (4,),
                ProtocolId.ESP: (4,),
            }.get(protocol, ()):
                raise _syntax(f"Notify: SPI size {spi_size} for protocol {protocol}")
            if not any(body[4 : 4 + spi_size]):
                raise _syntax("Notify: SPI is zero")
        return cls(
            notify_type=as_enum(NotifyType, notify_type),
            protocol=as_enum(ProtocolId, protocol),
            spi=bytes(body[4 : 4 + spi_size]),
            data=bytes(body[4 + spi_size :]),
        )

    def serialize(self) -> bytes:
        return struct.pack("!BBH", self.protocol, len(self.spi), self.notify_type) + (
            self.spi + self.data
        )

    @property
    def is_error(self) -> bool:
        """RFC 7296 sec. 3.10.1: types below 16384 are errors."""
        return self.notify_type < 16384


@dataclass
class DeletePayload:
    """Delete payload, RFC 7296 sec. 3.11.

    ::

                             1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        | Next Payload  |C|  RESERVED   |         Payload Length        |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        | Protocol ID   |   SPI Size    |          Num of SPIs          |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                                                               |
        ~               Security Parameter Index(es) (SPI)              ~
        |                                                               |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

    "SPI Size ... MUST be zero for IKE (SPI is in message header) or four for AH and ESP";
    Num of SPIs must be 0 for IKE and match the payload length exactly; other protocols
    (including 0) are refused; zero SPIs are refused.
    """

    TYPE: ClassVar[PayloadType] = PayloadType.DELETE
    protocol: ProtocolId | int
    spis: list[bytes] = field(default_factory=list)  # empty for IKE (sec. 3.11)

    @classmethod
    def parse(cls, body: Buffer) -> Self:
        _min_length(body, 4, "Delete payload")
        protocol, spi_size, count = struct.unpack_from("!BBH", body)
        if protocol == ProtocolId.IKE:
            if spi_size != 0 or count != 0:
                raise _syntax(f"Delete(IKE): SPI size {spi_size}, {count} SPIs (must be 0, 0)")
        elif protocol in (ProtocolId.AH, ProtocolId.ESP):
            if spi_size != 4:
                raise _syntax(f"Delete: SPI size {spi_size} for protocol {protocol}")
        else:
            raise _syntax(f"Delete: protocol ID {protocol}")
        if len(body) != 4 + spi_size * count:
            raise _syntax(f"Delete: {count} SPIs of {spi_size} octets in {len(body) - 4}")
        spis = [bytes(body[4 + i * spi_size : 8 + i * spi_size]) for i in range(count)]
        if any(not any(spi) for spi in spis):
            raise _syntax("Delete: SPI is zero")
        return cls(protocol=as_enum(ProtocolId, protocol), spis=spis)

    def serialize(self) -> bytes:
        spi_size = len(self.spis[0]) if self.spis else (0 if self.protocol == ProtocolId.IKE else 4)
        return struct.pack("!BBH", self.protocol, spi_size, len(self.spis)) + b"".join(self.spis)


@dataclass
class VendorIdPayload:
    """Vendor ID payload, RFC 7296 sec. 3.12.

    ::

                             1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        | Next Payload  |C|  RESERVED   |         Payload Length        |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                                                               |
        ~                        Vendor ID (VID)                        ~
        |                                                               |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    """

    TYPE: ClassVar[PayloadType] = PayloadType.VENDOR_ID
    vendor_id: bytes

    @classmethod
    def parse(cls, body: Buffer) -> Self:
        return cls(vendor_id=bytes(body))

    def serialize(self) -> bytes:
        return self.vendor_id


# --------------------------------------------------------------------------------------
# Traffic selectors (sec. 3.13)
# --------------------------------------------------------------------------------------

# Selector length and address size per TS type (sec. 3.13.1). TS_FC_ADDR_RANGE (RFC 4595)
# has a different layout and is not supported: it is refused like an unknown type.
_TS_ADDRESS_SIZES = {TsType.TS_IPV4_ADDR_RANGE: 4, TsType.TS_IPV6_ADDR_RANGE: 16}

# RFC 7296 sec. 3.13.1: "start port 65535 and end port 0" is how OPAQUE ports are sent.
OPAQUE_PORTS = (65535, 0)


@dataclass
class TrafficSelector:
    """RFC 7296 sec. 3.13.1. Addresses as packed bytes (4 or 16), ports inclusive.

    ::

                             1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |   TS Type     |IP Protocol ID*|       Selector Length         |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |           Start Port*         |           End Port*           |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                                                               |
        ~                         Starting Address*                     ~
        |                                                               |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                                                               |
        ~                         Ending Address*                       ~
        |                                                               |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

    Checked: TS type IPv4 (length 16) or IPv6 (length 40), anything else refused (the
    layout depends on it); Start Address <= End Address; Start Port <= End Port unless the
    pair is the OPAQUE encoding (65535, 0).
    """

    ts_type: TsType | int
    ip_protocol: int  # 0 = any
    start_port: int
    end_port: int
    start_address: bytes
    end_address: bytes

    @classmethod
    def parse(cls, data: Buffer) -> tuple[Self, int]:
        """Parse one selector at the start of ``data``: ``(selector, consumed_octets)``."""
        _min_length(data, 4, "traffic selector")
        ts_type, ip_protocol, length = struct.unpack_from("!BBH", data)
        address_size = _TS_ADDRESS_SIZES.get(ts_type)
        if address_size is None:
            raise _syntax(f"traffic selector: unsupported TS type {ts_type}")
        if length != 8 + 2 * address_size:
            raise _syntax(f"traffic selector: length {length} for TS type {ts_type}")
        _min_length(data, length, "traffic selector")
        start_port, end_port = struct.unpack_from("!HH", data, 4)
        start = bytes(data[8 : 8 + address_size])
        end = bytes(data[8 + address_size : length])
        if start > end:
            raise _syntax("traffic selector: start address > end address")
        if start_port > end_port and (start_port, end_port) != OPAQUE_PORTS:
            raise _syntax(f"traffic selector: start port {start_port} > end port {end_port}")
        selector = cls(
            ts_type=TsType(ts_type),
            ip_protocol=ip_protocol,
            start_port=start_port,
            end_port=end_port,
            start_address=start,
            end_address=end,
        )
        return selector, length

    def serialize(self) -> bytes:
        length = 8 + len(self.start_address) + len(self.end_address)
        return (
            struct.pack(
                "!BBHHH", self.ts_type, self.ip_protocol, length, self.start_port, self.end_port
            )
            + self.start_address
            + self.end_address
        )


@dataclass
class TsPayload:
    """TSi or TSr (RFC 7296 sec. 3.13).

    ::

                             1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        | Next Payload  |C|  RESERVED   |         Payload Length        |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        | Number of TSs |                 RESERVED                      |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                                                               |
        ~                       <Traffic Selectors>                     ~
        |                                                               |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

    Number of TSs must equal the selectors present and they must fill the payload exactly.
    """

    payload_type: PayloadType  # PayloadType.TSi or PayloadType.TSr
    selectors: list[TrafficSelector] = field(default_factory=list)

    @property
    def TYPE(self) -> PayloadType:
        return self.payload_type

    @classmethod
    def parse(cls, body: Buffer, payload_type: PayloadType = PayloadType.TSi) -> Self:
        _min_length(body, 4, "TS payload")
        count = body[0]
        view = memoryview(body)
        selectors: list[TrafficSelector] = []
        offset = 4
        while offset < len(view):
            if len(selectors) == count:
                raise _syntax(f"TS payload: data after {count} selectors")
            selector, consumed = TrafficSelector.parse(view[offset:])
            selectors.append(selector)
            offset += consumed
        if len(selectors) != count:
            raise _syntax(f"TS payload: Number of TSs {count}, {len(selectors)} present")
        return cls(payload_type=payload_type, selectors=selectors)

    def serialize(self) -> bytes:
        return bytes((len(self.selectors), 0, 0, 0)) + b"".join(
            s.serialize() for s in self.selectors
        )


# --------------------------------------------------------------------------------------
# Configuration, EAP (sec. 3.15, 3.16)
# --------------------------------------------------------------------------------------


@dataclass
class CpAttribute:
    """Configuration attribute, RFC 7296 sec. 3.15.1.

    ::

                             1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |R|         Attribute Type      |            Length             |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                                                               |
        ~                             Value                             ~
        |                                                               |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

    The R bit is reserved (ignored on receipt, sent as zero).
    """

    type: int  # CpAttributeType value (unknown values kept)
    value: bytes = b""

    def serialize(self) -> bytes:
        return struct.pack("!HH", self.type & 0x7FFF, len(self.value)) + self.value


@dataclass
class CpPayload:
    """Configuration payload, RFC 7296 sec. 3.15.

    ::

                             1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        | Next Payload  |C| RESERVED    |         Payload Length        |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |   CFG Type    |                    RESERVED                   |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                                                               |
        ~                   Configuration Attributes                    ~
        |                                                               |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    """

    TYPE: ClassVar[PayloadType] = PayloadType.CP
    cfg_type: CfgType | int
    attributes: list[CpAttribute] = field(default_factory=list)

    @classmethod
    def parse(cls, body: Buffer) -> Self:
        _min_length(body, 4, "CP payload")
        view = memoryview(body)
        attributes: list[CpAttribute] = []
        offset = 4
        while offset < len(view):
            if len(view) - offset < 4:
                raise _syntax("CP attribute: truncated header")
            word, length = struct.unpack_from("!HH", view, offset)
            end = offset + 4 + length
            if end > len(view):
                raise _syntax(f"CP attribute: length {length} exceeds the payload")
            attributes.append(CpAttribute(word & 0x7FFF, view[offset + 4 : end].tobytes()))
            offset = end
        return cls(cfg_type=as_enum(CfgType, view[0]), attributes=attributes)

    def serialize(self) -> bytes:
        return bytes((self.cfg_type, 0, 0, 0)) + b"".join(a.serialize() for a in self.attributes)


@dataclass
class EapPayload:
    """EAP payload, RFC 7296 sec. 3.16: one EAP message (RFC 3748 sec. 4).

    ::

                             1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        | Next Payload  |C|  RESERVED   |         Payload Length        |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                                                               |
        ~                       EAP Message                             ~
        |                                                               |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

    The EAP header (Code, Identifier, Length) must be present and its Length must equal
    the payload data.
    """

    TYPE: ClassVar[PayloadType] = PayloadType.EAP
    message: bytes  # the whole EAP message (code, identifier, length, type, data)

    @classmethod
    def parse(cls, body: Buffer) -> Self:
        _min_length(body, 4, "EAP payload")
        (length,) = struct.unpack_from("!H", body, 2)
        if length != len(body):
            raise _syntax(f"EAP: Length {length} in a {len(body)}-octet payload")
        return cls(message=bytes(body))

    def serialize(self) -> bytes:
        return self.message


# --------------------------------------------------------------------------------------
# Encrypted payloads (sec. 3.14, RFC 7383 sec. 2.5) and unknown payloads
# --------------------------------------------------------------------------------------


@dataclass
class SkPayload:
    """RFC 7296 sec. 3.14: ``first_inner`` is the Next Payload of the header (the type of
    the first payload inside); ``body`` is IV || ciphertext || ICV, still encrypted.

    ::

                             1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        | Next Payload  |C|  RESERVED   |         Payload Length        |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                     Initialization Vector                     |
        |         (length is block size for encryption algorithm)       |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        ~                    Encrypted IKE Payloads                     ~
        +               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |               |             Padding (0-255 octets)            |
        +-+-+-+-+-+-+-+-+                               +-+-+-+-+-+-+-+-+
        |                                               |  Pad Length   |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        ~                    Integrity Checksum Data                    ~
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

    The body's inner structure is checked by ``ikev2.crypto.sk`` when it is opened.
    """

    TYPE: ClassVar[PayloadType] = PayloadType.SK
    first_inner: PayloadType | int
    body: bytes

    @classmethod
    def parse(cls, body: Buffer, first_inner: int = PayloadType.NO_NEXT_PAYLOAD) -> Self:
        if not body:
            raise _syntax("SK payload is empty")
        return cls(first_inner=as_enum(PayloadType, first_inner), body=bytes(body))

    def serialize(self) -> bytes:
        return self.body


@dataclass
class SkfPayload:
    """RFC 7383 sec. 2.5: one fragment. ``first_inner`` is non-zero only in fragment 1.

    ::

                             1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        | Next Payload  |C|  RESERVED   |         Payload Length        |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |        Fragment Number        |        Total Fragments        |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                     Initialization Vector                     |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        ~                      Encrypted content                        ~
        +               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |               |             Padding (0-255 octets)            |
        +-+-+-+-+-+-+-+-+                               +-+-+-+-+-+-+-+-+
        |                                               |  Pad Length   |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        ~                    Integrity Checksum Data                    ~
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

    Checked on parse (sec. 2.6): 1 <= Fragment Number <= Total Fragments (fragment 0 and a
    number beyond the total are invalid), and some encrypted content present.
    """

    TYPE: ClassVar[PayloadType] = PayloadType.SKF
    first_inner: PayloadType | int
    fragment_number: int
    total_fragments: int
    body: bytes

    @classmethod
    def parse(cls, body: Buffer, first_inner: int = PayloadType.NO_NEXT_PAYLOAD) -> Self:
        _min_length(body, 5, "SKF payload")
        number, total = struct.unpack_from("!HH", body)
        if number == 0 or total == 0 or number > total:
            raise _syntax(f"SKF: fragment {number} of {total}")
        return cls(
            first_inner=as_enum(PayloadType, first_inner),
            fragment_number=number,
            total_fragments=total,
            body=bytes(body[4:]),
        )

    def serialize(self) -> bytes:
        return struct.pack("!HH", self.fragment_number, self.total_fragments) + self.body


@dataclass
class UnknownPayload:
    """A payload type we do not implement, kept as bytes (skipped unless critical)."""

    payload_type: int
    critical: bool
    body: bytes

    @property
    def TYPE(self) -> int:
        return self.payload_type

    def serialize(self) -> bytes:
        return self.body


# The payload classes whose parse() takes only the body.
SimplePayload = (
    SaPayload
    | KePayload
    | CertPayload
    | CertReqPayload
    | AuthPayload
    | NoncePayload
    | NotifyPayload
    | DeletePayload
    | VendorIdPayload
    | CpPayload
    | EapPayload
)
# Every payload; the parse() of the others also takes the payload type or the first inner one.
Payload = SimplePayload | IdPayload | TsPayload | SkPayload | SkfPayload | UnknownPayload

# The simple payload classes by payload type.
SIMPLE_PAYLOAD_CLASSES: dict[int, type[SimplePayload]] = {
    cls.TYPE: cls for cls in get_args(SimplePayload)
}


def parse_payload_body(payload_type: int, body: Buffer, next_payload: int = 0) -> Payload:
    """Parse the body of a known payload type (not SK/SKF-aware of position; see message).

    ``next_payload`` is only used by SK and SKF, whose generic header's Next Payload is
    the type of the first inner payload. Unknown types raise ``KeyError``: the caller
    (``ikev2.message``) decides between skipping and UNSUPPORTED_CRITICAL_PAYLOAD.
    """
    cls = SIMPLE_PAYLOAD_CLASSES.get(payload_type)
    if cls is not None:
        return cls.parse(body)
    if payload_type in (PayloadType.IDi, PayloadType.IDr):
        return IdPayload.parse(body, PayloadType(payload_type))
    if payload_type in (PayloadType.TSi, PayloadType.TSr):
        return TsPayload.parse(body, PayloadType(payload_type))
    if payload_type == PayloadType.SK:
        return SkPayload.parse(body, next_payload)
    if payload_type == PayloadType.SKF:
        return SkfPayload.parse(body, next_payload)
    raise KeyError(payload_type)


KNOWN_PAYLOAD_TYPES = frozenset(
    set(SIMPLE_PAYLOAD_CLASSES)
    | {
        PayloadType.IDi,
        PayloadType.IDr,
        PayloadType.TSi,
        PayloadType.TSr,
        PayloadType.SK,
        PayloadType.SKF,
    }
)
