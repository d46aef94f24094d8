"""strongSwan's ``unique`` between two engines in memory: what a second IKE SA between
the same identities does to the first (RFC 7296 sec. 2.4 for INITIAL_CONTACT)."""

from __future__ import annotations

from ikev2.dispatcher import Dispatcher
from tests.engine.harness import Network, make_pair, pair_configs, psk_lookup_for, seeded_rng


def _established(net: Network, side: str) -> list[int]:
    dispatcher = net.a if side == "a" else net.b
    return sorted(info.ike_sa_id for info in dispatcher.sas() if info.state == "ESTABLISHED")


def _twice(**kwargs: object) -> tuple[Network, int, int]:
    """A initiates, then initiates again (no INITIAL_CONTACT the second time: an SA to
    that peer exists). Returns the network and B's two IKE SA ids, oldest first."""
    net = make_pair(**kwargs)
    net.a.initiate("conn", "net", now=net.now)
    net.pump()
    (first,) = _established(net, "b")
    net.a.initiate("conn", "net", now=net.now)
    net.pump()
    second = max(info.ike_sa_id for info in net.b.sas())
    return net, first, second


def test_no_keeps_both_without_initial_contact() -> None:
    net, first, second = _twice()
    assert _established(net, "b") == [first, second]


def test_replace_deletes_the_older_ike_sa_on_both_sides() -> None:
    net, _, second = _twice(b_unique="replace")
    assert _established(net, "b") == [second]
    assert len(_established(net, "a")) == 1  # A got the DELETE for the old one


def test_keep_deletes_the_new_ike_sa() -> None:
    net, first, _ = _twice(b_unique="keep")
    assert _established(net, "b") == [first]
    assert len(_established(net, "a")) == 1


def _rebooted_initiator(b_unique: str) -> tuple[Network, list[int]]:
    """A's daemon restarts (a new Dispatcher, INITIAL_CONTACT) while B holds the old SA."""
    net = make_pair(b_unique=b_unique)
    net.a.initiate("conn", "net", now=net.now)
    net.pump()
    old = _established(net, "b")
    a_config, _ = pair_configs()
    net.a = Dispatcher([a_config], psk_lookup_for(), rng=seeded_rng(99))
    net.a.initiate("conn", "net", now=net.now)
    net.pump()
    return net, old


def test_initial_contact_replaces_under_no_but_not_under_never() -> None:
    net, old = _rebooted_initiator("no")
    assert len(_established(net, "b")) == 1 and _established(net, "b") != old
    net, old = _rebooted_initiator("never")
    assert len(_established(net, "b")) == 2
