"""IKEv2 payloads (RFC 7296 sec. 3.2-3.16, RFC 7383 sec. 2.5) as dataclasses.

CONTRACT (fields fixed by the lead; parse/serialize are filled in by the wire-format work):
every payload class has

    TYPE: ClassVar[PayloadType]
    @classmethod parse(cls, body: bytes | memoryview) -> Self   # body = after the 4-byte
                                                               # generic payload header
    serialize(self) -> bytes                                   # body only

and the generic header (next payload, critical bit, length) is handled by ikev2.message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ikev2.enums import (
    AuthMethod,
    CertEncoding,
    CfgType,
    IdType,
    KeId,
    NotifyType,
    PayloadType,
    ProtocolId,
    TransformType,
    TsType,
)


@dataclass
class Transform:
    """RFC 7296 sec. 3.3.2. ``key_length`` is the Key Length attribute (sec. 3.3.5) in bits."""

    type: TransformType | int
    id: int
    key_length: int | None = None


@dataclass
class Proposal:
    """RFC 7296 sec. 3.3.1. ``spi``: empty in IKE_SA_INIT, 8 bytes for IKE rekey, 4 for ESP/AH."""

    number: int
    protocol: ProtocolId | int
    spi: bytes = b""
    transforms: list[Transform] = field(default_factory=list)


@dataclass
class SaPayload:
    TYPE: ClassVar[PayloadType] = PayloadType.SA
    proposals: list[Proposal] = field(default_factory=list)


@dataclass
class KePayload:
    TYPE: ClassVar[PayloadType] = PayloadType.KE
    group: KeId | int
    data: bytes


@dataclass
class IdPayload:
    """IDi or IDr (RFC 7296 sec. 3.5). ``TYPE`` depends on the role: use ``payload_type``."""

    payload_type: PayloadType  # PayloadType.IDi or PayloadType.IDr
    id_type: IdType | int
    data: bytes


@dataclass
class CertPayload:
    TYPE: ClassVar[PayloadType] = PayloadType.CERT
    encoding: CertEncoding | int
    data: bytes


@dataclass
class CertReqPayload:
    TYPE: ClassVar[PayloadType] = PayloadType.CERTREQ
    encoding: CertEncoding | int
    data: bytes  # for X.509: concatenated SHA-1 hashes of CA public keys (20 bytes each)


@dataclass
class AuthPayload:
    TYPE: ClassVar[PayloadType] = PayloadType.AUTH
    method: AuthMethod | int
    data: bytes


@dataclass
class NoncePayload:
    TYPE: ClassVar[PayloadType] = PayloadType.NONCE
    nonce: bytes  # 16..256 octets (sec. 3.9)


@dataclass
class NotifyPayload:
    TYPE: ClassVar[PayloadType] = PayloadType.NOTIFY
    notify_type: NotifyType | int
    protocol: ProtocolId | int = ProtocolId.RESERVED
    spi: bytes = b""
    data: bytes = b""


@dataclass
class DeletePayload:
    TYPE: ClassVar[PayloadType] = PayloadType.DELETE
    protocol: ProtocolId | int
    spis: list[bytes] = field(default_factory=list)  # empty for IKE (sec. 3.11)


@dataclass
class VendorIdPayload:
    TYPE: ClassVar[PayloadType] = PayloadType.VENDOR_ID
    vendor_id: bytes


@dataclass
class TrafficSelector:
    """RFC 7296 sec. 3.13.1. Addresses as packed bytes (4 or 16), ports inclusive."""

    ts_type: TsType | int
    ip_protocol: int  # 0 = any
    start_port: int
    end_port: int
    start_address: bytes
    end_address: bytes


@dataclass
class TsPayload:
    """TSi or TSr (RFC 7296 sec. 3.13)."""

    payload_type: PayloadType  # PayloadType.TSi or PayloadType.TSr
    selectors: list[TrafficSelector] = field(default_factory=list)


@dataclass
class CpAttribute:
    type: int  # CpAttributeType value (unknown values kept)
    value: bytes = b""


@dataclass
class CpPayload:
    TYPE: ClassVar[PayloadType] = PayloadType.CP
    cfg_type: CfgType | int
    attributes: list[CpAttribute] = field(default_factory=list)


@dataclass
class EapPayload:
    TYPE: ClassVar[PayloadType] = PayloadType.EAP
    message: bytes  # the whole EAP message (code, identifier, length, type, data)


@dataclass
class SkPayload:
    """RFC 7296 sec. 3.14: ``first_inner`` is the Next Payload of the header (the type of
    the first payload inside); ``body`` is IV || ciphertext || ICV, still encrypted."""

    TYPE: ClassVar[PayloadType] = PayloadType.SK
    first_inner: PayloadType | int
    body: bytes


@dataclass
class SkfPayload:
    """RFC 7383 sec. 2.5: one fragment. ``first_inner`` is non-zero only in fragment 1."""

    TYPE: ClassVar[PayloadType] = PayloadType.SKF
    first_inner: PayloadType | int
    fragment_number: int
    total_fragments: int
    body: bytes


@dataclass
class UnknownPayload:
    """A payload type we do not implement, kept as bytes (skipped unless critical)."""

    payload_type: int
    critical: bool
    body: bytes
