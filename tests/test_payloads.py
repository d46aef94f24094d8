"""Payload bodies (RFC 7296 sec. 3.3-3.16): exact round trips and the validation rules."""

from __future__ import annotations

import pytest

from ikev2.enums import (
    AuthMethod,
    CertEncoding,
    CfgType,
    CpAttributeType,
    EncrId,
    IdType,
    IntegId,
    KeId,
    NotifyType,
    PayloadType,
    PrfId,
    ProtocolId,
    TransformType,
    TsType,
)
from ikev2.errors import ProtocolError
from ikev2.payloads import (
    AuthPayload,
    CertPayload,
    CertReqPayload,
    CpAttribute,
    CpPayload,
    DeletePayload,
    EapPayload,
    IdPayload,
    KePayload,
    NoncePayload,
    NotifyPayload,
    Proposal,
    SaPayload,
    SkfPayload,
    SkPayload,
    TrafficSelector,
    Transform,
    TransformAttribute,
    TsPayload,
    VendorIdPayload,
    parse_payload_body,
)


def ike_proposal(number: int = 1, spi: bytes = b"") -> Proposal:
    return Proposal(
        number=number,
        protocol=ProtocolId.IKE,
        spi=spi,
        transforms=[
            Transform(TransformType.ENCR, EncrId.ENCR_AES_GCM_16, key_length=256),
            Transform(TransformType.PRF, PrfId.PRF_HMAC_SHA2_256),
            Transform(TransformType.KE, KeId.CURVE25519),
        ],
    )


def esp_proposal(number: int = 1) -> Proposal:
    return Proposal(
        number=number,
        protocol=ProtocolId.ESP,
        spi=bytes.fromhex("c0ffee01"),
        transforms=[
            Transform(TransformType.ENCR, EncrId.ENCR_AES_CBC, key_length=128),
            Transform(TransformType.INTEG, IntegId.AUTH_HMAC_SHA2_256_128),
            Transform(TransformType.ESN, 0),
        ],
    )


def ipv4_selector(start: str = "10.0.0.0", end: str = "10.0.0.255") -> TrafficSelector:
    return TrafficSelector(
        TsType.TS_IPV4_ADDR_RANGE,
        0,
        0,
        65535,
        bytes(int(x) for x in start.split(".")),
        bytes(int(x) for x in end.split(".")),
    )


EXAMPLES = [
    SaPayload([ike_proposal(1), ike_proposal(2)]),
    SaPayload([esp_proposal(3)]),  # a response carries the chosen proposal's number
    SaPayload([ike_proposal(1, spi=bytes.fromhex("0102030405060708"))]),
    KePayload(KeId.ECP_256, bytes(range(64))),
    KePayload(1025, b"\x01"),  # unknown group: kept, the key exchange refuses it
    IdPayload(PayloadType.IDi, IdType.ID_FQDN, b"moon.strongswan.org"),
    IdPayload(PayloadType.IDr, IdType.ID_IPV4_ADDR, bytes([192, 0, 2, 1])),
    IdPayload(PayloadType.IDr, IdType.ID_IPV6_ADDR, bytes(15) + b"\x01"),
    IdPayload(PayloadType.IDi, IdType.ID_NULL, b""),
    CertPayload(CertEncoding.X509_CERT_SIGNATURE, b"\x30\x82\x01\x00" + bytes(10)),
    CertReqPayload(CertEncoding.X509_CERT_SIGNATURE, bytes(40)),
    AuthPayload(AuthMethod.SHARED_KEY_MESSAGE_INTEGRITY_CODE, bytes(32)),
    NoncePayload(bytes(16)),
    NoncePayload(bytes(256)),
    NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP, data=bytes(20)),
    NotifyPayload(NotifyType.REKEY_SA, ProtocolId.ESP, spi=b"\x00\x00\x10\x01"),
    NotifyPayload(NotifyType.INVALID_KE_PAYLOAD, data=b"\x00\x13"),
    NotifyPayload(40000),  # unknown status type kept as int
    DeletePayload(ProtocolId.IKE),
    DeletePayload(ProtocolId.ESP, [b"\x00\x00\x00\x01", b"\xff\xff\xff\xff"]),
    VendorIdPayload(b"strongSwan"),
    TsPayload(PayloadType.TSi, [ipv4_selector(), ipv4_selector("0.0.0.0", "255.255.255.255")]),
    TsPayload(
        PayloadType.TSr,
        [TrafficSelector(TsType.TS_IPV6_ADDR_RANGE, 58, 65535, 0, bytes(16), b"\xff" * 16)],
    ),
    CpPayload(
        CfgType.CFG_REQUEST,
        [
            CpAttribute(CpAttributeType.INTERNAL_IP4_ADDRESS),
            CpAttribute(CpAttributeType.INTERNAL_IP4_DNS),
        ],
    ),
    CpPayload(CfgType.CFG_REPLY, [CpAttribute(CpAttributeType.INTERNAL_IP4_ADDRESS, bytes(4))]),
    EapPayload(bytes.fromhex("0201000a01") + b"hello"),
    SkfPayload(PayloadType.IDi, 1, 3, bytes(40)),
]


@pytest.mark.parametrize("payload", EXAMPLES, ids=lambda p: type(p).__name__)
def test_round_trip(payload) -> None:
    body = payload.serialize()
    parsed = parse_payload_body(payload.TYPE, body, getattr(payload, "first_inner", 0))
    assert parsed == payload
    assert parsed.serialize() == body


def test_sk_round_trip() -> None:
    sk = SkPayload(PayloadType.IDi, bytes(48))
    assert SkPayload.parse(sk.serialize(), PayloadType.IDi) == sk


def test_transform_with_unknown_attributes_round_trips_exactly() -> None:
    # Key Length after an unknown TLV attribute: re-serialisation keeps the order.
    body = bytes.fromhex("000000180100001400630004deadbeef800e010080210007")
    transform, more, consumed = Transform.parse(body)
    assert (more, consumed) == (False, 24)
    assert transform.key_length == 256
    assert transform.other_attributes == [
        TransformAttribute(0x63, bytes.fromhex("deadbeef")),
        TransformAttribute(0x21, b"\x00\x07", tv=True),
    ]
    assert transform.serialize() == body


def test_sa_payload_bytes_from_rfc_layout() -> None:
    # Hand-assembled from the sec. 3.3 diagrams: one IKE proposal, AES-CBC-128 + SHA1 PRF.
    body = bytes.fromhex(
        "0000001c"
        "01010002"  # last proposal, len 28, #1, IKE, SPI size 0, 2 transforms
        "0300000c"
        "0100000c"
        "800e0080"  # more, len 12, ENCR AES_CBC, key length 128
        "00000008"
        "02000002"  # last, len 8, PRF HMAC_SHA1
    )
    sa = SaPayload.parse(body)
    assert sa.proposals[0].transforms == [
        Transform(TransformType.ENCR, EncrId.ENCR_AES_CBC, 128),
        Transform(TransformType.PRF, PrfId.PRF_HMAC_SHA1),
    ]
    assert sa.serialize() == body


def test_reserved_fields_ignored_on_receipt() -> None:
    # RFC 7296 sec. 3.2: RESERVED "MUST be ignored on receipt"; we send zeros.
    parsed = KePayload.parse(bytes.fromhex("0013ffff") + bytes(64))
    assert parsed == KePayload(KeId.ECP_256, bytes(64))
    assert parsed.serialize()[:4] == bytes.fromhex("00130000")
    assert CpPayload.parse(bytes.fromhex("01ffffff80010000")).attributes == [CpAttribute(1)]


BAD_BODIES = {
    "SA empty": (PayloadType.SA, b""),
    "proposal length beyond payload": (PayloadType.SA, bytes.fromhex("0000003001010000")),
    "proposal length short": (PayloadType.SA, bytes.fromhex("0000000401010000")),
    "proposal protocol 0": (PayloadType.SA, bytes.fromhex("0000000801000000")),
    "IKE proposal SPI size 4": (PayloadType.SA, bytes.fromhex("0000000c0101040001020304")),
    "ESP proposal SPI size 0": (PayloadType.SA, bytes.fromhex("0000000801030000")),
    "ESP proposal SPI zero": (PayloadType.SA, bytes.fromhex("0000000c0103040000000000")),
    "num transforms mismatch": (
        PayloadType.SA,
        bytes.fromhex("00000010010100020000000802000002"),
    ),
    "transform length beyond proposal": (
        PayloadType.SA,
        bytes.fromhex("00000010010100010000001002000002"),
    ),
    "transform length short": (
        PayloadType.SA,
        bytes.fromhex("00000010010100010000000402000002"),
    ),
    "attribute length beyond transform": (
        PayloadType.SA,
        bytes.fromhex("00000014010100010000000c020000020063ffff"),
    ),
    "truncated attribute": (
        PayloadType.SA,
        bytes.fromhex("00000012010100010000000a02000002800e"),
    ),
    "key length as TLV": (
        PayloadType.SA,
        bytes.fromhex("00000016010100010000000e0100000c000e00020080"),
    ),
    "last transform says more": (
        PayloadType.SA,
        bytes.fromhex("00000010010100010300000802000002"),
    ),
    "last proposal says more": (
        PayloadType.SA,
        bytes.fromhex("02000010010100010000000802000002"),
    ),
    "proposals misnumbered": (
        PayloadType.SA,
        bytes.fromhex("02000008010100000000000803010000"),
    ),
    "KE short": (PayloadType.KE, b"\x00\x13\x00"),
    "ID IPv4 of 5 octets": (PayloadType.IDi, bytes.fromhex("01000000") + bytes(5)),
    "ID short": (PayloadType.IDr, b"\x02\x00"),
    "AUTH short": (PayloadType.AUTH, b"\x02"),
    "CERT empty": (PayloadType.CERT, b""),
    "nonce 15": (PayloadType.NONCE, bytes(15)),
    "nonce 257": (PayloadType.NONCE, bytes(257)),
    "notify short": (PayloadType.NOTIFY, b"\x00\x00\x40"),
    "notify SPI size beyond payload": (PayloadType.NOTIFY, bytes.fromhex("030440090102")),
    "notify ESP SPI size 8": (PayloadType.NOTIFY, bytes.fromhex("03084009") + bytes(range(1, 9))),
    "notify SPI with protocol 0": (PayloadType.NOTIFY, bytes.fromhex("0004400901020304")),
    "notify zero SPI": (PayloadType.NOTIFY, bytes.fromhex("0304400900000000")),
    "delete IKE with SPI size": (PayloadType.DELETE, bytes.fromhex("01080001") + bytes(8)),
    "delete ESP SPI size 8": (PayloadType.DELETE, bytes.fromhex("03080001") + bytes(8)),
    "delete count too big": (PayloadType.DELETE, bytes.fromhex("0304000201020304")),
    "delete count too small": (PayloadType.DELETE, bytes.fromhex("030400010102030405060708")),
    "delete protocol 0": (PayloadType.DELETE, bytes.fromhex("00000000")),
    "delete zero SPI": (PayloadType.DELETE, bytes.fromhex("0304000100000000")),
    "TS start > end address": (
        PayloadType.TSi,
        bytes.fromhex("01000000070000100000ffff0a0000010a000000"),
    ),
    "TS start > end port": (
        PayloadType.TSi,
        bytes.fromhex("010000000700001001f401f30a0000000a000001"),
    ),
    "TS bad length": (
        PayloadType.TSi,
        bytes.fromhex("01000000070000140000ffff0a0000000a00000100000000"),
    ),
    "TS IPv6 with IPv4 length": (
        PayloadType.TSr,
        bytes.fromhex("01000000080000100000ffff0a0000000a000001"),
    ),
    "TS unknown type": (
        PayloadType.TSr,
        bytes.fromhex("010000000d0000100000ffff0a0000000a000001"),
    ),
    "TS count too big": (
        PayloadType.TSi,
        bytes.fromhex("02000000070000100000ffff0a0000000a000001"),
    ),
    "TS count too small": (
        PayloadType.TSi,
        bytes.fromhex("00000000070000100000ffff0a0000000a000001"),
    ),
    "TS truncated": (PayloadType.TSi, bytes.fromhex("01000000070000100000ffff0a00")),
    "CP attribute beyond payload": (PayloadType.CP, bytes.fromhex("0100000000010004")),
    "CP truncated attribute": (PayloadType.CP, bytes.fromhex("010000000001")),
    "EAP length mismatch": (PayloadType.EAP, bytes.fromhex("0201000b01") + b"hello"),
    "EAP short": (PayloadType.EAP, b"\x02\x01"),
    "SKF fragment 0": (PayloadType.SKF, bytes.fromhex("00000002") + bytes(20)),
    "SKF number > total": (PayloadType.SKF, bytes.fromhex("00030002") + bytes(20)),
    "SKF total 0": (PayloadType.SKF, bytes.fromhex("00010000") + bytes(20)),
    "SK empty": (PayloadType.SK, b""),
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_invalid_bodies_raise_invalid_syntax(case: str) -> None:
    payload_type, body = BAD_BODIES[case]
    with pytest.raises(ProtocolError) as info:
        parse_payload_body(payload_type, body)
    assert info.value.notify == NotifyType.INVALID_SYNTAX


def test_opaque_ports_accepted() -> None:
    # sec. 3.13.1: start 65535 / end 0 is the OPAQUE encoding, not a reversed range.
    body = bytes.fromhex("0100000007010010ffff00000a0000000a000001")
    ts = TsPayload.parse(body, PayloadType.TSi)
    assert (ts.selectors[0].start_port, ts.selectors[0].end_port) == (65535, 0)


def test_certreq_ca_hashes() -> None:
    assert CertReqPayload(CertEncoding.X509_CERT_SIGNATURE, bytes(40)).ca_hashes() == [
        bytes(20),
        bytes(20),
    ]
    with pytest.raises(ProtocolError):
        CertReqPayload(CertEncoding.X509_CERT_SIGNATURE, bytes(21)).ca_hashes()


def test_id_and_ts_type_follow_their_role() -> None:
    assert PayloadType.IDr == IdPayload(PayloadType.IDr, IdType.ID_FQDN, b"x").TYPE
    assert PayloadType.TSr == TsPayload(PayloadType.TSr).TYPE
    assert IdPayload.parse(b"\x02\x00\x00\x00x", PayloadType.IDr).payload_type == PayloadType.IDr
