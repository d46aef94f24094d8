"""Property tests (hypothesis): for any input the parsers either accept it or raise
ProtocolError (h11's rule), and every payload round-trips exactly."""

from __future__ import annotations

import os
import struct

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ikev2.crypto.sk import make_sk_cipher
from ikev2.enums import (
    EncrId,
    ExchangeType,
    NotifyType,
    PayloadType,
    ProtocolId,
    TransformType,
    TsType,
)
from ikev2.errors import ProtocolError
from ikev2.fragments import Reassembler, serialize_fragments
from ikev2.message import (
    IkeHeader,
    decrypt_message,
    parse_message,
    serialize_message,
)
from ikev2.payloads import (
    KNOWN_PAYLOAD_TYPES,
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
    TrafficSelector,
    Transform,
    TransformAttribute,
    TsPayload,
    UnknownPayload,
    VendorIdPayload,
    parse_payload_body,
)

# 300 examples per test keeps the suite fast; AIOIPSEC_FUZZ_EXAMPLES=20000 for a long run.
FUZZ = settings(
    max_examples=int(os.environ.get("AIOIPSEC_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

u8 = st.integers(0, 255)
u16 = st.integers(0, 0xFFFF)
small_bytes = st.binary(max_size=40)
nonzero = lambda n: st.binary(min_size=n, max_size=n).filter(any)  # noqa: E731


# --- strategies for valid payloads -------------------------------------------------------

attributes = st.builds(
    TransformAttribute,
    type=st.integers(1, 0x7FFF).filter(lambda t: t != 14),
    value=small_bytes,
    tv=st.just(False),
) | st.builds(
    TransformAttribute,
    type=st.integers(1, 0x7FFF).filter(lambda t: t != 14),
    value=st.binary(min_size=2, max_size=2),
    tv=st.just(True),
)
transforms = st.builds(
    Transform,
    type=st.sampled_from(list(TransformType)) | u8,
    id=u16,
    key_length=st.none() | u16,
    other_attributes=st.lists(attributes, max_size=2),
    key_length_position=st.just(0),
)


@st.composite
def proposals(draw, number: int = 1) -> Proposal:
    protocol = draw(st.sampled_from([ProtocolId.IKE, ProtocolId.AH, ProtocolId.ESP]))
    spi = draw(st.just(b"") | nonzero(8)) if protocol == ProtocolId.IKE else draw(nonzero(4))
    return Proposal(number, protocol, spi, draw(st.lists(transforms, max_size=5)))


@st.composite
def sa_payloads(draw) -> SaPayload:
    count = draw(st.integers(1, 3))
    if count == 1:
        return SaPayload([draw(proposals(draw(st.integers(1, 255))))])
    return SaPayload([draw(proposals(i)) for i in range(1, count + 1)])


@st.composite
def selectors(draw) -> TrafficSelector:
    ts_type = draw(st.sampled_from(list(TsType)[:2]))
    size = 4 if ts_type == TsType.TS_IPV4_ADDR_RANGE else 16
    a, b = sorted(draw(st.lists(st.binary(min_size=size, max_size=size), min_size=2, max_size=2)))
    ports = draw(st.just((65535, 0)) | st.lists(u16, min_size=2, max_size=2).map(sorted))
    return TrafficSelector(ts_type, draw(u8), ports[0], ports[1], a, b)


@st.composite
def notifies(draw) -> NotifyPayload:
    protocol = draw(st.sampled_from(list(ProtocolId)))
    if protocol == ProtocolId.RESERVED:
        spi = b""
    elif protocol == ProtocolId.IKE:
        spi = draw(st.just(b"") | nonzero(8))
    else:
        spi = draw(st.just(b"") | nonzero(4))
    return NotifyPayload(
        draw(st.sampled_from(list(NotifyType)) | u16), protocol, spi, draw(small_bytes)
    )


@st.composite
def deletes(draw) -> DeletePayload:
    protocol = draw(st.sampled_from([ProtocolId.IKE, ProtocolId.AH, ProtocolId.ESP]))
    if protocol == ProtocolId.IKE:
        return DeletePayload(protocol)
    return DeletePayload(protocol, draw(st.lists(nonzero(4), max_size=4)))


@st.composite
def eaps(draw) -> EapPayload:
    rest = draw(small_bytes)
    return EapPayload(bytes((draw(u8), draw(u8))) + struct.pack("!H", 4 + len(rest)) + rest)


payloads = st.one_of(
    sa_payloads(),
    st.builds(KePayload, group=u16, data=small_bytes),
    st.builds(
        IdPayload,
        payload_type=st.sampled_from([PayloadType.IDi, PayloadType.IDr]),
        id_type=st.sampled_from([2, 3, 9, 11, 13, 200]),
        data=small_bytes,
    ),
    st.builds(CertPayload, encoding=u8, data=small_bytes),
    st.builds(CertReqPayload, encoding=u8, data=small_bytes),
    st.builds(AuthPayload, method=u8, data=small_bytes),
    st.builds(NoncePayload, nonce=st.binary(min_size=16, max_size=256)),
    notifies(),
    deletes(),
    st.builds(VendorIdPayload, vendor_id=small_bytes),
    st.builds(
        TsPayload,
        payload_type=st.sampled_from([PayloadType.TSi, PayloadType.TSr]),
        selectors=st.lists(selectors(), max_size=3),
    ),
    st.builds(
        CpPayload,
        cfg_type=u8,
        attributes=st.lists(
            st.builds(CpAttribute, type=st.integers(0, 0x7FFF), value=small_bytes), max_size=3
        ),
    ),
    eaps(),
)


@FUZZ
@given(payloads)
def test_payload_round_trip(payload) -> None:
    body = payload.serialize()
    parsed = parse_payload_body(payload.TYPE, body)
    assert parsed == payload
    assert parsed.serialize() == body


@FUZZ
@given(st.lists(payloads, max_size=6), st.booleans())
def test_message_round_trip(chain, response) -> None:
    header = IkeHeader(
        spi_i=b"\x01" * 8, exchange=ExchangeType.IKE_SA_INIT, response=response, message_id=0
    )
    wire = serialize_message(header, chain)
    msg = parse_message(wire)
    assert msg.payloads == chain
    assert serialize_message(msg.header, msg.payloads) == wire


# --- random and mutated input: only ProtocolError may escape ----------------------------


@FUZZ
@given(st.sampled_from(sorted(KNOWN_PAYLOAD_TYPES)), st.binary(max_size=300))
def test_payload_parsers_random_bytes(payload_type, body) -> None:
    try:
        parsed = parse_payload_body(payload_type, body)
    except ProtocolError:
        return
    # accepted input re-parses to the same object
    assert (
        parse_payload_body(payload_type, parsed.serialize(), getattr(parsed, "first_inner", 0))
        == parsed
    )


def random_header_then(body: bytes, next_payload: int) -> bytes:
    return (
        b"\x01" * 16
        + struct.pack("!BBBBII", next_payload, 0x20, 34, 0x08, 0, 28 + len(body))
        + body
    )


@FUZZ
@given(st.binary(max_size=400))
def test_parse_message_random_bytes(data) -> None:
    try:
        parse_message(data)
    except ProtocolError:
        pass


@FUZZ
@given(st.sampled_from([*sorted(KNOWN_PAYLOAD_TYPES), 1, 13, 49, 200]), st.binary(max_size=400))
def test_parse_message_random_chain(first, body) -> None:
    # a valid header so that the fuzzing reaches the payload chain
    try:
        parse_message(random_header_then(body, first))
    except ProtocolError:
        pass


def seed_messages() -> list[bytes]:
    from tests.test_message import init_request

    cipher = make_sk_cipher(EncrId.ENCR_AES_GCM_16, 128, None, bytes(20), None)
    header = IkeHeader(spi_i=b"\x01" * 8, spi_r=b"\x02" * 8, exchange=ExchangeType.IKE_AUTH)
    from tests.test_fragments import auth_payloads

    return [
        init_request(),
        serialize_message(header, auth_payloads(200), cipher),
        *serialize_fragments(header, auth_payloads(200), cipher, 200)[:2],
        serialize_message(
            header,
            [
                TsPayload(
                    PayloadType.TSi,
                    [TrafficSelector(7, 6, 0, 65535, bytes(4), b"\xff" * 4)],
                ),
                DeletePayload(ProtocolId.ESP, [b"\x01\x02\x03\x04"]),
                CpPayload(1, [CpAttribute(1), CpAttribute(3, bytes(4))]),
                EapPayload(bytes.fromhex("020100060100")),
                UnknownPayload(99, False, b"x"),
            ],
        ),
    ]


SEEDS = seed_messages()


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "length16", "byte", "insert"]))
        if not data:
            break
        position = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[position:]
        elif kind == "length16" and position + 2 <= len(data):
            struct.pack_into("!H", data, position, draw(u16))
        elif kind == "byte":
            data[position] = draw(u8)
        else:
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
    if draw(st.booleans()) and len(data) >= 28:
        struct.pack_into("!I", data, 24, len(data))  # keep the header length consistent
    return bytes(data)


@FUZZ
@given(mutated())
def test_parse_message_mutations(data) -> None:
    try:
        msg = parse_message(data)
    except ProtocolError:
        return
    if msg.encrypted_payload is None:
        assert parse_message(serialize_message(msg.header, msg.payloads)).payloads == msg.payloads


@FUZZ
@given(mutated())
def test_decrypt_and_reassemble_mutations(data) -> None:
    cipher = make_sk_cipher(EncrId.ENCR_AES_GCM_16, 128, None, bytes(20), None)
    try:
        msg = parse_message(data)
        if msg.is_fragment:
            Reassembler().add(msg, cipher, 0.0)
        elif msg.encrypted_payload is not None:
            decrypt_message(msg, cipher)
    except ProtocolError:
        pass


# --- reassembly under arbitrary arrival orders, duplicates and re-fragmentation ----------


def _fragment_sets():
    from tests.test_fragments import auth_payloads, header

    cipher = make_sk_cipher(EncrId.ENCR_AES_GCM_16, 128, None, bytes(20), None)
    coarse = serialize_fragments(header(), auth_payloads(1500), cipher, 700)
    fine = serialize_fragments(header(), auth_payloads(1500), cipher, 300)
    return [parse_message(d) for d in coarse], [parse_message(d) for d in fine]


COARSE, FINE = _fragment_sets()


@st.composite
def arrival_orders(draw) -> list[tuple[bool, int, float]]:
    """Every fine fragment once, in any order, with duplicates and coarse fragments (a
    lower or higher Total Fragments) mixed in, and time steps that sometimes time out."""
    arrivals = [(True, i, draw(st.floats(0, 3))) for i in draw(st.permutations(range(len(FINE))))]
    for _ in range(draw(st.integers(0, 8))):
        extra = (draw(st.booleans()), draw(st.integers(0, len(FINE) - 1)), draw(st.floats(0, 40)))
        arrivals.insert(draw(st.integers(0, len(arrivals))), extra)
    return arrivals


@FUZZ
@given(arrival_orders(), st.integers(500, 5000) | st.just(65535))
def test_reassembly_any_order_is_bounded_and_correct(arrivals, max_bytes) -> None:
    from tests.test_fragments import auth_payloads

    cipher = make_sk_cipher(EncrId.ENCR_AES_GCM_16, 128, None, bytes(20), None)
    reassembler = Reassembler(max_bytes=max_bytes, timeout=30.0)
    now = 0.0
    for use_fine, index, step in arrivals:
        fragments = FINE if use_fine else COARSE
        now += step
        try:
            whole = reassembler.add(fragments[index % len(fragments)], cipher, now)
        except ProtocolError as error:
            assert error.notify is None  # refusals of fragments are always silent drops
            continue
        assert reassembler.pending_octets <= max_bytes
        if whole is not None:
            event("message completed")
            assert whole.payloads == auth_payloads(1500)


@FUZZ
@given(
    st.binary(min_size=8, max_size=8).filter(any),
    st.binary(min_size=8, max_size=8),
    u8,
    st.integers(0, 15),
    u8,
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
)
def test_header_round_trip(spi_i, spi_r, next_payload, minor, exchange, i, v, r, mid, length):
    header = IkeHeader(
        spi_i=spi_i,
        spi_r=spi_r,
        next_payload=next_payload,
        minor_version=minor,
        exchange=exchange,
        initiator=i,
        version=v,
        response=r,
        message_id=mid,
        length=length,
    )
    raw = header.serialize()
    assert len(raw) == 28
    assert IkeHeader.parse(raw) == header
    assert IkeHeader.parse(raw).serialize() == raw
