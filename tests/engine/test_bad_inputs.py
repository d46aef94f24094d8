"""The IKE classes of tests/data/reference/bad-inputs.md, sent to a real engine: each gets
its defined reaction (a notify or a silent drop) and the engine keeps working afterwards.

Hostile messages are built with the wire-format code and, where they must pass the
integrity check, encrypted with the attacking side's real keys (an authenticated peer
misbehaving), or corrupted in flight.
"""

from __future__ import annotations

import struct

from ikev2.config import DispatcherConfig
from ikev2.enums import (
    ExchangeType,
    KeId,
    NotifyType,
    PayloadType,
    ProtocolId,
    TsType,
)
from ikev2.events import (
    ChildSaEstablished,
    ChildSaRekeyed,
    IkeSaEstablished,
    IkeSaRekeyed,
    NegotiationFailed,
)
from ikev2.message import IkeHeader, parse_message, serialize_message
from ikev2.payloads import (
    DeletePayload,
    KePayload,
    NoncePayload,
    NotifyPayload,
    Proposal,
    SaPayload,
    TrafficSelector,
    TsPayload,
)
from ikev2.proposals import parse_proposals
from tests.engine.harness import ADDR_A, ADDR_B, Network, established_pair, make_pair

A = (ADDR_A, 500)
B = (ADDR_B, 500)


def replies(net: Network, side: str = "b") -> list:
    dispatcher = net.b if side == "b" else net.a
    return [parse_message(d.data) for d in dispatcher.datagrams_to_send(net.now)]


def notify_types(msg) -> list[int]:
    return [int(p.notify_type) for p in msg.payloads if isinstance(p, NotifyPayload)]


def init_request(
    spi: bytes,
    *,
    ke_group: int = KeId.CURVE25519,
    ke_data: bytes | None = None,
    extra: list | None = None,
    proposals: list[Proposal] | None = None,
) -> bytes:
    header = IkeHeader(spi_i=spi, exchange=ExchangeType.IKE_SA_INIT, initiator=True)
    payloads = [
        SaPayload(proposals=proposals or parse_proposals("aes256gcm16-prfsha256-x25519", 1)),
        KePayload(group=ke_group, data=ke_data if ke_data is not None else bytes(range(1, 33))),
        NoncePayload(nonce=bytes(32)),
        *(extra or []),
    ]
    return serialize_message(header, payloads)


def assert_still_works(net: Network) -> None:
    """A fresh IKE SA can still be set up from A to B (and the old ones stay usable)."""
    before = len(net.events("b", ChildSaEstablished))
    net.a.initiate("conn", "net", now=net.now)
    net.pump()
    assert len(net.events("b", ChildSaEstablished)) == before + 1


# --- IKE_SA_INIT (unauthenticated) -------------------------------------------------------


def test_garbage_and_bad_lengths_are_dropped() -> None:
    net = make_pair()
    good = init_request(b"\x11" * 8)
    for bad in (
        b"",
        b"\x00" * 27,
        good[:-1],  # message shorter than its Length field
        good + b"\x00",  # longer
        good[:28] + b"\x00\x00\x00\x01" + good[32:],  # a payload length of 1
        bytes(8) + good[8:],  # zero initiator SPI
    ):
        net.b.receive_datagram(bad, A, B, net.now)
        assert replies(net) == []
    assert net.b.counters["parse_error"] == 6
    assert_still_works(net)


def test_unknown_critical_payload_and_ikev1_payloads() -> None:
    net = make_pair()
    data = bytearray(init_request(b"\x12" * 8))
    # Append an unknown payload type 200 with the critical bit, chained after the nonce.
    body = b"\xde\xad"
    chain_end = len(data)
    data += struct.pack("!BBH", 0, 0x80, 4 + len(body)) + body
    # Patch the Nonce payload's Next Payload (the last payload) to 200.
    offset = 28
    while True:
        _, _, length = struct.unpack_from("!BBH", data, offset)
        if offset + length == chain_end:
            data[offset] = 200
            break
        offset += length
    struct.pack_into("!I", data, 24, len(data))
    net.b.receive_datagram(bytes(data), A, B, net.now)
    (reply,) = replies(net)
    assert reply.notify(NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD).data == bytes([200])
    # The same payload without the critical bit (and an IKEv1 type 5) is skipped.
    data[chain_end + 1] = 0
    data[offset] = 5
    net.b.receive_datagram(bytes(data), A, B, net.now)
    (reply,) = replies(net)
    assert reply.get(PayloadType.SA) is not None
    assert_still_works(net)


def test_unsupported_group_and_bad_key_exchange_values() -> None:
    net = make_pair()
    # strongSwan CVE-2014-9221: group 1025 in the KE payload -> INVALID_KE_PAYLOAD(x25519).
    net.b.receive_datagram(init_request(b"\x13" * 8, ke_group=1025), A, B, net.now)
    (reply,) = replies(net)
    assert reply.notify(NotifyType.INVALID_KE_PAYLOAD).data == struct.pack("!H", 31)
    # Wrong length for x25519, and the all-zero (low order) point: INVALID_SYNTAX.
    for spi, data in ((b"\x14" * 8, b"\x01" * 31), (b"\x15" * 8, bytes(32))):
        net.b.receive_datagram(init_request(spi, ke_data=data), A, B, net.now)
        (reply,) = replies(net)
        assert notify_types(reply) == [NotifyType.INVALID_SYNTAX]
    assert net.b.sas() == []  # nothing kept for refused requests
    assert_still_works(net)


def test_ike_proposal_refused_by_policy_is_explained() -> None:
    net = make_pair(b_proposals=["aes256gcm16-prfsha256-x25519", "aes128-sha1-modp1024"])
    weak = parse_proposals("aes128-sha1-modp1024", 1)
    net.b.receive_datagram(
        init_request(b"\x16" * 8, ke_group=KeId.MODP_1024, ke_data=b"\x02" * 128, proposals=weak),
        A,
        B,
        net.now,
    )
    (reply,) = replies(net)
    assert notify_types(reply) == [NotifyType.NO_PROPOSAL_CHOSEN]
    (failed,) = [e for e in iter(net.b.next_event, None) if isinstance(e, NegotiationFailed)]
    assert "refused by our policy" in failed.reason


def test_half_open_flood_bounded_with_cookies() -> None:
    net = make_pair()
    net.b.configs[0].remote_addrs = ["%any"]
    net.b.limits = DispatcherConfig(cookie_threshold=10, cookie_threshold_ip=3, block_threshold=5)
    cookies = 0
    for index in range(60):
        host = f"198.51.100.{index % 20}"
        net.b.receive_datagram(init_request(struct.pack("!Q", index + 1)), (host, 500), B, net.now)
        for reply in replies(net):
            cookies += NotifyType.COOKIE in notify_types(reply)
    # Half-open SAs stop growing at the cookie threshold; the rest were asked for cookies.
    assert len(net.b.sas()) == 10
    assert cookies == 50
    # A flood from one address is blocked beyond block_threshold even with valid cookies.
    net.b.limits = DispatcherConfig(
        cookie_threshold=1000, cookie_threshold_ip=1000, block_threshold=2
    )
    for index in range(5):
        net.b.receive_datagram(
            init_request(struct.pack("!Q", 1000 + index)), ("203.0.113.1", 500), B, net.now
        )
    assert len([sa for sa in net.b.sas() if sa.remote_addr[0] == "203.0.113.1"]) == 2
    # Half-open SAs die after half_open_timeout; legitimate peers get through (with cookie).
    net.run_until(net.now + 31.0)
    assert net.b.sas() == []
    assert_still_works(net)


# --- Encrypted exchanges -----------------------------------------------------------------


def test_informational_and_create_child_before_auth_are_ignored() -> None:
    """libreswan CVE-2019-12312 / strongSwan CVE-2014-2338."""
    net = make_pair()
    net.drop = lambda datagram, direction: (
        parse_message(datagram.data).header.exchange == (ExchangeType.IKE_AUTH)
    )
    ike_id = net.a.initiate("conn", "net", now=0.0)
    net.pump()
    sa_a = net.a.ike_sa(ike_id)
    (info_b,) = net.b.sas()
    sa_b = net.b.ike_sa(info_b.ike_sa_id)
    assert sa_b.state.value == "INIT_DONE"
    for exchange, payloads in (
        (ExchangeType.INFORMATIONAL, [DeletePayload(protocol=ProtocolId.IKE)]),
        (
            ExchangeType.CREATE_CHILD_SA,
            [
                SaPayload(proposals=parse_proposals("aes256gcm16-prfsha256-x25519", 1)),
                NoncePayload(nonce=bytes(32)),
                KePayload(group=31, data=bytes(range(1, 33))),
            ],
        ),
    ):
        for data in sa_a._encode(exchange, False, 1, payloads):
            net.b.receive_datagram(data, A, B, net.now)
        assert replies(net) == []
    assert sa_b.state.value == "INIT_DONE" and sa_b.alive
    net.drop = lambda datagram, direction: False
    net.run_until(5.0)  # A retransmits IKE_AUTH (Message ID 1 is still expected)
    assert net.events("b", IkeSaEstablished)


def test_corrupted_and_truncated_sk_dropped_then_retransmission_succeeds() -> None:
    for mangle in (
        lambda data: data[:-1] + bytes([data[-1] ^ 1]),  # ICV
        lambda data: data[:60] + bytes([data[60] ^ 0x80]) + data[61:],  # ciphertext
    ):
        net = make_pair()
        done: list[int] = []

        def tap(datagram, direction, mangle=mangle, done=done):
            msg = parse_message(datagram.data)
            if msg.header.exchange == ExchangeType.IKE_AUTH and not done:
                done.append(1)
                return mangle(datagram.data)
            return datagram.data

        net.tap = tap
        net.a.initiate("conn", "net", now=0.0)
        net.pump()
        assert not net.events("b", IkeSaEstablished)
        net.run_until(4.0)
        assert net.events("a", IkeSaEstablished)
    # Truncated SK payload (shorter than IV + ICV), with a consistent Length field.
    net, ike_id = established_pair()
    sa_a = net.a.ike_sa(ike_id)
    header = IkeHeader(
        spi_i=sa_a.spi_i,
        spi_r=sa_a.spi_r,
        exchange=ExchangeType.INFORMATIONAL,
        initiator=True,
        message_id=2,
    )
    truncated = header.serialize()[:16] + struct.pack(
        "!BBBBII", PayloadType.SK, 0x20, ExchangeType.INFORMATIONAL, 0x08, 2, 28 + 8
    )
    truncated += struct.pack("!BBH", 0, 0, 8) + b"\x00" * 4
    net.b.receive_datagram(truncated, A, B, net.now)
    assert replies(net) == []
    net.a.send_liveness(ike_id, net.now)
    net.pump()
    assert net.a.sas()[0].state == "ESTABLISHED"


def _authenticated_request(net: Network, ike_id: int, exchange, payloads) -> list:
    """Send ``payloads`` as A's next request (really encrypted) and return B's answer."""
    sa_a = net.a.ike_sa(ike_id)
    message_id = sa_a.next_request_id
    for data in sa_a._encode(exchange, False, message_id, payloads):
        net.b.receive_datagram(data, A, B, net.now)
    sa_a.next_request_id += 1  # keep A's window in step with B's
    answer = [parse_message(d.data) for d in net.b.datagrams_to_send(net.now)]
    from ikev2.message import decrypt_message

    assert sa_a.cipher_in is not None
    return [decrypt_message(m, sa_a.cipher_in) for m in answer]


def test_rekey_sa_with_protocol_ike_or_zero_and_bad_spis() -> None:
    """libreswan CVE-2023-38710 and SPI sizes that do not match the protocol."""
    net, ike_id = established_pair()
    (child,) = net.events("a", ChildSaEstablished)
    ts = [
        TsPayload(
            PayloadType.TSi,
            [
                TrafficSelector(
                    TsType.TS_IPV4_ADDR_RANGE, 0, 0, 65535, b"\x0a\x01\0\0", b"\x0a\x01\xff\xff"
                )
            ],
        ),
        TsPayload(
            PayloadType.TSr,
            [
                TrafficSelector(
                    TsType.TS_IPV4_ADDR_RANGE, 0, 0, 65535, b"\x0a\x02\0\0", b"\x0a\x02\xff\xff"
                )
            ],
        ),
    ]
    esp = parse_proposals("aes256gcm16", ProtocolId.ESP)
    esp[0].spi = b"\x01\x02\x03\x04"
    cases = [
        (
            NotifyPayload(NotifyType.REKEY_SA, ProtocolId.IKE, child.spi_in.to_bytes(4, "big")),
            NotifyType.INVALID_SYNTAX,
        ),
        (
            NotifyPayload(NotifyType.REKEY_SA, 0, child.spi_in.to_bytes(4, "big")),
            NotifyType.INVALID_SYNTAX,
        ),
        (
            NotifyPayload(NotifyType.REKEY_SA, ProtocolId.ESP, b"\x00\x00\x00\x00\x00\x00"),
            NotifyType.INVALID_SYNTAX,
        ),
        (
            NotifyPayload(NotifyType.REKEY_SA, ProtocolId.ESP, b"\x99\x99\x99\x99"),
            NotifyType.CHILD_SA_NOT_FOUND,
        ),
    ]
    for notify, expected in cases:
        (answer,) = _authenticated_request(
            net,
            ike_id,
            ExchangeType.CREATE_CHILD_SA,
            [notify, SaPayload(proposals=esp), NoncePayload(nonce=bytes(32)), *ts],
        )
        assert notify_types(answer) == [expected]
    # An ESP proposal with an 8-octet SPI, and one with a zero SPI.
    for spi in (b"\x01" * 8, b"\x00" * 4):
        bad = [Proposal(1, ProtocolId.ESP, spi, list(esp[0].transforms))]
        (answer,) = _authenticated_request(
            net,
            ike_id,
            ExchangeType.CREATE_CHILD_SA,
            [SaPayload(proposals=bad), NoncePayload(nonce=bytes(32)), *ts],
        )
        assert notify_types(answer) == [NotifyType.INVALID_SYNTAX]
    assert not net.events("b", ChildSaRekeyed)
    (info,) = net.b.sas()
    assert len(info.children) == 1
    net.a.ike_sa(ike_id)._outstanding = None
    net.a.rekey_child(ike_id, child.child_sa_id, net.now)
    net.pump()
    assert net.events("b", ChildSaRekeyed)


def test_malformed_traffic_selectors() -> None:
    """libreswan CVE-2023-23009: start > end, bad address length, unknown TS type."""
    net, ike_id = established_pair()
    esp = parse_proposals("aes256gcm16", ProtocolId.ESP)
    esp[0].spi = b"\x05\x06\x07\x08"
    good_r = TsPayload(
        PayloadType.TSr,
        [
            TrafficSelector(
                TsType.TS_IPV4_ADDR_RANGE, 0, 0, 65535, b"\x0a\x02\0\0", b"\x0a\x02\xff\xff"
            )
        ],
    )
    for selector, expected in (
        (
            TrafficSelector(
                TsType.TS_IPV4_ADDR_RANGE, 0, 0, 65535, b"\x0a\x01\xff\xff", b"\x0a\x01\0\0"
            ),
            NotifyType.INVALID_SYNTAX,
        ),
        (
            TrafficSelector(TsType.TS_FC_ADDR_RANGE, 0, 0, 0, b"\0\0\0", b"\0\0\1"),
            NotifyType.INVALID_SYNTAX,
        ),
    ):
        (answer,) = _authenticated_request(
            net,
            ike_id,
            ExchangeType.CREATE_CHILD_SA,
            [
                SaPayload(proposals=esp),
                NoncePayload(nonce=bytes(32)),
                TsPayload(PayloadType.TSi, [selector]),
                good_r,
            ],
        )
        assert notify_types(answer) == [expected]
    net.a.ike_sa(ike_id)._outstanding = None
    net.a.create_child(ike_id, "net", net.now)
    net.pump()
    assert len(net.events("b", ChildSaEstablished)) == 2


def test_ike_rekey_of_unestablished_or_replaced_sa() -> None:
    """Requests on an IKE SA that was already replaced and deleted are not processed."""
    net, ike_id = established_pair()
    old_a = net.a.ike_sa(ike_id)
    net.a.rekey_ike(ike_id, net.now)
    net.pump()
    assert net.events("a", IkeSaRekeyed)
    assert not old_a.alive
    # B dropped the old SA after the Delete: requests on it now meet an unknown SPI.
    proposals = parse_proposals("aes256gcm16-prfsha256-x25519", 1)
    proposals[0].spi = b"\x42" * 8
    for data in old_a._encode(
        ExchangeType.CREATE_CHILD_SA,
        False,
        old_a.next_request_id,
        [
            SaPayload(proposals=proposals),
            NoncePayload(nonce=bytes(32)),
            KePayload(group=31, data=bytes(range(1, 33))),
        ],
    ):
        net.b.receive_datagram(data, A, B, net.now)
    assert replies(net) == []
    assert net.b.counters["unknown_spi"] >= 1


def test_fragment_attacks_via_real_fragments() -> None:
    """Fragment 0, duplicates, changing totals (libreswan CVE-2026-12413): refused by
    reassembly; the genuine fragments still complete the exchange."""
    net = make_pair(fragment_size=160)
    injected: list[str] = []

    def tap(datagram, direction):
        msg = parse_message(datagram.data)
        if msg.is_fragment and msg.header.exchange == ExchangeType.IKE_AUTH and not injected:
            injected.append("x")
            raw = bytearray(datagram.data)
            zero = bytearray(raw)
            struct.pack_into("!H", zero, 32, 0)  # Fragment Number 0
            over = bytearray(raw)
            struct.pack_into("!HH", over, 32, 9, 3)  # number above total
            target = net.b if direction == "a->b" else net.a
            for bogus in (bytes(zero), bytes(over), bytes(raw), bytes(raw)):  # + duplicates
                target.receive_datagram(bogus, datagram.local_addr, datagram.remote_addr, net.now)
        return datagram.data

    net.tap = tap
    net.a.initiate("conn", "net", now=0.0)
    net.pump()
    assert injected
    assert net.events("a", ChildSaEstablished) and net.events("b", ChildSaEstablished)


def test_unknown_spi_and_stray_responses_ignored() -> None:
    net, ike_id = established_pair()
    sa_a = net.a.ike_sa(ike_id)
    # A response to a request we never sent (Message ID 9) is dropped.
    sa_b = net.b.ike_sa(net.b.sas()[0].ike_sa_id)
    for data in sa_b._encode(ExchangeType.INFORMATIONAL, True, 9, []):
        net.a.receive_datagram(data, B, A, net.now)
    assert net.a.datagrams_to_send(net.now) == []
    # Messages for SPIs nobody knows.
    header = IkeHeader(
        spi_i=b"\x77" * 8,
        spi_r=b"\x88" * 8,
        exchange=ExchangeType.INFORMATIONAL,
        initiator=True,
        message_id=1,
    )
    net.b.receive_datagram(serialize_message(header, []), A, B, net.now)
    assert replies(net) == []
    net.a.send_liveness(ike_id, net.now)
    net.pump()
    assert sa_a.established
