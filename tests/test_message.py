"""IKE header and payload chain (RFC 7296 sec. 3.1-3.2): parse/serialize and the message-level
bad inputs of tests/data/reference/bad-inputs.md."""

from __future__ import annotations

import struct

import pytest

from ikev2.enums import ExchangeType, IdType, KeId, NotifyType, PayloadType, ProtocolId
from ikev2.errors import ProtocolError
from ikev2.message import (
    IkeHeader,
    IkeMessage,
    parse_message,
    parse_payload_chain,
    serialize_message,
    serialize_payload_chain,
)
from ikev2.payloads import (
    IdPayload,
    KePayload,
    NoncePayload,
    NotifyPayload,
    SaPayload,
    SkPayload,
    UnknownPayload,
)
from tests.test_payloads import ike_proposal

SPI_I = bytes.fromhex("0011223344556677")


def init_request_payloads() -> list:
    return [
        SaPayload([ike_proposal()]),
        KePayload(KeId.CURVE25519, bytes(32)),
        NoncePayload(bytes(range(32))),
        NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP, data=bytes(20)),
        NotifyPayload(NotifyType.NAT_DETECTION_DESTINATION_IP, data=bytes(20)),
        NotifyPayload(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED),
    ]


def init_request() -> bytes:
    header = IkeHeader(spi_i=SPI_I, exchange=ExchangeType.IKE_SA_INIT, initiator=True)
    return serialize_message(header, init_request_payloads())


def test_header_layout() -> None:
    header = IkeHeader(
        spi_i=SPI_I,
        spi_r=bytes(range(8)),
        next_payload=PayloadType.SA,
        exchange=ExchangeType.IKE_AUTH,
        initiator=True,
        response=True,
        version=True,
        message_id=0x01020304,
        length=28,
    )
    raw = header.serialize()
    assert raw == SPI_I + bytes(range(8)) + bytes.fromhex("21202338010203040000001c")
    assert IkeHeader.parse(raw) == header


def test_round_trip_and_lookups() -> None:
    wire = init_request()
    msg = parse_message(wire)
    assert msg.raw == wire
    assert msg.header.length == len(wire)
    assert msg.header.next_payload == PayloadType.SA
    assert msg.payloads == init_request_payloads()
    assert msg.get(PayloadType.NONCE) == NoncePayload(bytes(range(32)))
    assert msg.get(PayloadType.CERT) is None
    assert len(msg.notifies()) == 3
    assert msg.notify(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED) is not None
    assert msg.notifies(NotifyType.COOKIE) == []
    assert msg.error_notifies() == []
    assert serialize_message(msg.header, msg.payloads) == wire


def test_reserved_header_bits_ignored() -> None:
    wire = bytearray(init_request())
    wire[17] |= 0x01  # minor version 1: accepted (sec. 2.5), kept
    wire[19] |= 0x07 | 0xC0  # reserved flag bits
    msg = parse_message(bytes(wire))
    assert msg.header.minor_version == 1
    assert msg.header.initiator and not msg.header.response


@pytest.mark.parametrize("delta", [-1, 1, 100])
def test_length_field_must_equal_datagram(delta: int) -> None:
    wire = init_request()
    with pytest.raises(ProtocolError) as info:
        parse_message(wire[:24] + struct.pack("!I", len(wire) + delta) + wire[28:])
    assert info.value.notify == NotifyType.INVALID_SYNTAX
    with pytest.raises(ProtocolError):
        parse_message(wire + b"\x00")
    with pytest.raises(ProtocolError):
        parse_message(wire[:-1])


def test_short_datagram() -> None:
    for size in (0, 1, 27):
        with pytest.raises(ProtocolError):
            parse_message(init_request()[:size])


@pytest.mark.parametrize("version", [0x10, 0x30, 0xF0])
def test_major_version(version: int) -> None:
    wire = bytearray(init_request())
    wire[17] = version
    with pytest.raises(ProtocolError) as info:
        parse_message(bytes(wire))
    assert info.value.notify == NotifyType.INVALID_MAJOR_VERSION


def test_zero_initiator_spi_rejected() -> None:
    wire = bytes(8) + init_request()[8:]
    with pytest.raises(ProtocolError):
        parse_message(wire)


def with_extra_payload(payload_type: int, critical: bool, body: bytes = b"abc") -> bytes:
    """An IKE_SA_INIT with one more payload of ``payload_type`` at the end."""
    header = IkeHeader(spi_i=SPI_I, exchange=ExchangeType.IKE_SA_INIT, initiator=True)
    payloads = [*init_request_payloads(), UnknownPayload(payload_type, critical, body)]
    return serialize_message(header, payloads)


@pytest.mark.parametrize("payload_type", [1, 5, 13, 49, 54, 200, 255])
def test_unknown_critical_payload(payload_type: int) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_message(with_extra_payload(payload_type, critical=True))
    assert info.value.notify == NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD
    assert info.value.notify_data == bytes([payload_type])


@pytest.mark.parametrize("payload_type", [1, 8, 13, 49, 200])
def test_unknown_non_critical_payload_kept(payload_type: int) -> None:
    # IKEv1 types 1..13 are just unknown payloads (strongSwan CVE-2015-3991).
    wire = with_extra_payload(payload_type, critical=False)
    msg = parse_message(wire)
    assert msg.payloads[-1] == UnknownPayload(payload_type, False, b"abc")
    assert serialize_message(msg.header, msg.payloads) == wire


def test_critical_bit_on_known_payload_ignored() -> None:
    wire = bytearray(init_request())
    wire[28 + 1] = 0x80  # critical bit on the SA payload
    assert parse_message(bytes(wire)).payloads == init_request_payloads()


@pytest.mark.parametrize("bad_length", [0, 3, 0xFFFF])
def test_payload_length_out_of_range(bad_length: int) -> None:
    wire = bytearray(init_request())
    struct.pack_into("!H", wire, 28 + 2, bad_length)
    with pytest.raises(ProtocolError) as info:
        parse_message(bytes(wire))
    assert info.value.notify == NotifyType.INVALID_SYNTAX


def test_trailing_bytes_after_last_payload() -> None:
    header = IkeHeader(spi_i=SPI_I, exchange=ExchangeType.IKE_SA_INIT)
    wire = bytearray(serialize_message(header, [NoncePayload(bytes(16))]) + bytes(4))
    struct.pack_into("!I", wire, 24, len(wire))
    with pytest.raises(ProtocolError):
        parse_message(bytes(wire))


def test_sk_must_be_last() -> None:
    chain = serialize_payload_chain([SkPayload(PayloadType.NONCE, bytes(40))], PayloadType.NONCE)
    chain += serialize_payload_chain([NoncePayload(bytes(16))])
    with pytest.raises(ProtocolError):
        parse_payload_chain(chain, PayloadType.SK)


def test_sk_inside_sk_refused() -> None:
    chain = serialize_payload_chain([SkPayload(PayloadType.NONCE, bytes(40))])
    assert parse_payload_chain(chain, PayloadType.SK)[1] == 4
    with pytest.raises(ProtocolError):
        parse_payload_chain(chain, PayloadType.SK, inside_sk=True)


def test_sk_message_structure() -> None:
    header = IkeHeader(spi_i=SPI_I, spi_r=b"\x01" * 8, exchange=ExchangeType.IKE_AUTH)
    body = bytes(range(48))
    wire = (
        header.serialize()[:16]
        + bytes.fromhex("2e20230000000001")
        + struct.pack("!I", 28 + 4 + len(body))
    )
    wire += struct.pack("!BBH", PayloadType.IDi, 0, 4 + len(body)) + body
    msg = parse_message(wire)
    assert msg.encrypted_payload == SkPayload(PayloadType.IDi, body)
    assert msg.associated_data == wire[:32]
    assert msg.encrypted_body == body
    assert not msg.is_fragment


def test_ids_in_chain_keep_their_role() -> None:
    chain = serialize_payload_chain(
        [IdPayload(PayloadType.IDi, IdType.ID_FQDN, b"a"), IdPayload(PayloadType.IDr, 2, b"b")]
    )
    payloads, _ = parse_payload_chain(chain, PayloadType.IDi)
    assert [p.TYPE for p in payloads] == [PayloadType.IDi, PayloadType.IDr]


def test_message_get_all() -> None:
    msg = IkeMessage(
        header=IkeHeader(spi_i=SPI_I, exchange=ExchangeType.INFORMATIONAL),
        payloads=[NotifyPayload(NotifyType.COOKIE, data=b"1"), NotifyPayload(1, ProtocolId.IKE)],
    )
    assert len(msg.get_all(PayloadType.NOTIFY)) == 2
    assert msg.error_notifies() == [NotifyPayload(1, ProtocolId.IKE)]


def test_worked_example_ike_sa_init_request() -> None:
    # The IKE_SA_INIT request of the PSK AUTH worked example (tests/data/reference/vectors/
    # ikev2_worked_example_psk_auth.txt, C2): parsed, and re-serialized byte for byte (it is
    # part of the AUTH signed octets, RFC 7296 sec. 2.15).
    from tests.test_sk import read_vector_file

    vector = read_vector_file("ikev2_worked_example_psk_auth.txt")
    example = next(v for k, v in vector.items() if k.startswith("C2"))
    raw = bytes.fromhex(example["IKE_SA_INIT_request"])
    msg = parse_message(raw)
    assert msg.header.spi_i == bytes.fromhex(example["SPIi"])
    assert msg.header.initiator and msg.header.exchange == ExchangeType.IKE_SA_INIT
    assert [p.TYPE for p in msg.payloads] == [PayloadType.SA, PayloadType.KE, PayloadType.NONCE]
    assert msg.get(PayloadType.NONCE).nonce == bytes.fromhex(example["Ni"])
    assert msg.get(PayloadType.KE).group == KeId.MODP_1024
    assert serialize_message(msg.header, msg.payloads) == raw == msg.raw
