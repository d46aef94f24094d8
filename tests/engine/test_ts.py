"""Traffic selector parsing and narrowing (RFC 7296 sec. 2.9)."""

from __future__ import annotations

import ipaddress

import pytest

from ikev2.enums import PayloadType, TsType
from ikev2.errors import ProtocolError
from ikev2.payloads import TrafficSelector, TsPayload
from ikev2.ts import Ts, from_payload, intersect, is_subset, narrow, parse_ts, parse_ts_list


def net(text: str, protocol: int = 0, low: int = 0, high: int = 65535) -> Ts:
    network = ipaddress.ip_network(text)
    return Ts(
        network.version,
        int(network.network_address),
        int(network.broadcast_address),
        protocol,
        low,
        high,
    )


def test_parse_forms() -> None:
    assert parse_ts("10.1.0.0/16") == [net("10.1.0.0/16")]
    assert parse_ts("dynamic", "192.0.2.1") == [net("192.0.2.1/32")]
    assert parse_ts("dynamic") == []
    assert parse_ts("10.0.0.0/8[tcp/22]") == [net("10.0.0.0/8", 6, 22, 22)]
    assert parse_ts("::/0[udp/1000-2000]") == [net("::/0", 17, 1000, 2000)]
    (ranged,) = parse_ts("10.0.0.5-10.0.0.9")
    assert (ranged.start, ranged.end) == (
        int(ipaddress.ip_address("10.0.0.5")),
        int(ipaddress.ip_address("10.0.0.9")),
    )
    assert len(parse_ts_list(["10.0.0.0/8, 192.168.0.0/16"], None)) == 2
    with pytest.raises(ValueError):
        parse_ts("10.0.0.9-10.0.0.5")


def test_narrowing_to_responder_policy() -> None:
    # Initiator proposes everything; responder allows one subnet: result is that subnet.
    proposed = [net("0.0.0.0/0")]
    allowed = [net("10.1.0.0/16")]
    assert narrow(proposed, allowed) == [net("10.1.0.0/16")]
    # Port and protocol restrictions intersect too.
    assert narrow([net("10.0.0.0/8", 6)], [net("10.1.0.0/16", 0, 80, 80)]) == [
        net("10.1.0.0/16", 6, 80, 80)
    ]
    # Nothing in common: TS_UNACCEPTABLE territory.
    assert narrow([net("10.0.0.0/8")], [net("192.168.0.0/16")]) == []
    assert intersect(net("10.0.0.0/8", 6), net("10.0.0.0/8", 17)) is None
    assert intersect(net("10.0.0.0/8"), net("::/0")) is None


def test_subset_check_for_initiator() -> None:
    assert is_subset([net("10.1.0.0/16")], [net("10.0.0.0/8")])
    assert not is_subset([net("10.0.0.0/8")], [net("10.1.0.0/16")])


def test_payload_round_trip_and_bad_selectors() -> None:
    selectors = [net("10.1.0.0/16"), net("2001:db8::/32", 17, 53, 53)]
    payload = TsPayload(PayloadType.TSi, [ts.to_payload() for ts in selectors])
    assert from_payload(payload) == selectors
    backwards = TrafficSelector(
        TsType.TS_IPV4_ADDR_RANGE, 0, 0, 65535, b"\x0a\0\0\x09", b"\x0a\0\0\x01"
    )
    with pytest.raises(ProtocolError):
        from_payload(TsPayload(PayloadType.TSi, [backwards]))
    short = TrafficSelector(TsType.TS_IPV4_ADDR_RANGE, 0, 0, 65535, b"\x0a\0\0", b"\x0a\0\0\x01")
    with pytest.raises(ProtocolError):
        from_payload(TsPayload(PayloadType.TSi, [short]))
    # Unknown TS types (Fibre Channel) are skipped, not a crash.
    fc = TrafficSelector(TsType.TS_FC_ADDR_RANGE, 0, 0, 0, b"\0\0\0", b"\0\0\1")
    assert from_payload(TsPayload(PayloadType.TSi, [fc])) == []


def test_format() -> None:
    assert str(net("10.1.0.0/16")) == "10.1.0.0/16"
    assert str(net("10.1.0.1/32", 6, 80, 80)) == "10.1.0.1[tcp/80]"
