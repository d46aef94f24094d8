"""RFC 6023 childless IKE SAs (strongSwan's ``childless = allow | force | never``),
between two engines in memory; the messages on the wire are read from their headers."""

from __future__ import annotations

from typing import Any

from ikev2.dispatcher import Dispatcher
from ikev2.enums import ExchangeType, NotifyType
from ikev2.events import ChildSaEstablished, IkeSaEstablished, NegotiationFailed
from tests.engine.harness import (
    Network,
    make_pair,
    pair_configs,
    psk_lookup_for,
    seeded_rng,
)


def record_exchanges(net: Network) -> list[tuple[str, ExchangeType]]:
    """(direction, exchange type) of every IKE message delivered from now on."""
    seen: list[tuple[str, ExchangeType]] = []

    def tap(datagram: Any, direction: str) -> bytes:
        data = bytes(datagram.data)
        seen.append((direction, ExchangeType(data[18])))  # RFC 7296 sec. 3.1 header
        return data

    net.tap = tap
    return seen


def test_allow_on_both_sides_announces_support_and_keeps_the_child_in_ike_auth() -> None:
    net = make_pair()
    seen = record_exchanges(net)
    ike_id = net.a.initiate("conn", "net", now=net.now)
    net.pump()
    assert net.a.ike_sa(ike_id).peer.childless  # the responder answered in kind
    assert net.events("a", ChildSaEstablished)
    assert ("a->b", ExchangeType.CREATE_CHILD_SA) not in seen


def test_force_creates_the_first_child_with_create_child_sa() -> None:
    net = make_pair(a_childless="force")
    seen = record_exchanges(net)
    net.a.initiate("conn", "net", now=net.now)
    net.pump()
    assert net.events("a", IkeSaEstablished) and net.events("b", IkeSaEstablished)
    (a,) = net.events("a", ChildSaEstablished)
    (b,) = net.events("b", ChildSaEstablished)
    assert a.spi_in == b.spi_out and a.spi_out == b.spi_in
    requests = [exchange for direction, exchange in seen if direction == "a->b"]
    assert requests == [
        ExchangeType.IKE_SA_INIT,
        ExchangeType.IKE_AUTH,
        ExchangeType.CREATE_CHILD_SA,
    ]


def test_force_against_a_peer_without_support_fails_clearly() -> None:
    net = make_pair(a_childless="force", b_childless="never")
    net.a.initiate("conn", "net", now=net.now)
    net.pump()
    assert not net.events("a", IkeSaEstablished)
    (failure,) = net.events("a", NegotiationFailed)
    assert "CHILDLESS_IKEV2_SUPPORTED" in failure.reason and "force" in failure.reason


def test_a_force_responder_refuses_a_regular_ike_auth_with_invalid_syntax() -> None:
    """strongSwan's responder answers INVALID_SYNTAX and the IKE SA ends."""
    net = make_pair(b_childless="force")
    net.a.initiate("conn", "net", now=net.now)
    net.pump()
    (refused,) = net.events("b", NegotiationFailed)
    assert refused.notify == NotifyType.INVALID_SYNTAX
    assert "did not initiate a childless IKE SA" in refused.reason
    assert not net.events("a", IkeSaEstablished) and not net.events("b", IkeSaEstablished)


def _ike_only_pair(b_childless: str) -> Network:
    """A's connection has no children (an IKE SA only, as strongSwan allows)."""
    a_config, b_config = pair_configs(b_childless=b_childless)
    a_config.children = []
    a = Dispatcher([a_config], psk_lookup_for(), rng=seeded_rng(1))
    b = Dispatcher([b_config], psk_lookup_for(), rng=seeded_rng(1001))
    return Network(a, b)


def test_an_ike_sa_without_children_needs_the_peers_support() -> None:
    net = _ike_only_pair("allow")
    net.a.initiate("conn", now=net.now)
    net.pump()
    assert net.events("a", IkeSaEstablished) and net.events("b", IkeSaEstablished)
    assert not net.events("a", ChildSaEstablished)
    # A `never` responder announces nothing: the initiator does not try (RFC 6023 4.1).
    net = _ike_only_pair("never")
    net.a.initiate("conn", now=net.now)
    net.pump()
    (failure,) = net.events("a", NegotiationFailed)
    assert "CHILDLESS_IKEV2_SUPPORTED" in failure.reason
    assert not net.events("b", IkeSaEstablished)
