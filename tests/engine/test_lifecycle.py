"""Delete, rekey (Child and IKE, make-before-break), collisions, DPD and lifetimes, with
both engines real and a virtual clock."""

from __future__ import annotations

from ikev2.enums import ExchangeType, KeId
from ikev2.events import (
    ChildSaDeleted,
    ChildSaEstablished,
    ChildSaExpiring,
    ChildSaRekeyed,
    IkeSaDeleted,
    IkeSaEstablished,
    IkeSaRekeyed,
    PeerUnreachable,
)
from ikev2.message import parse_message
from tests.engine.harness import Network, established_pair


def installed_children(net: Network, side: str) -> dict[int, ChildSaEstablished]:
    """The Child SAs the data plane of ``side`` would hold now, by spi_in."""
    events = net.events_a if side == "a" else net.events_b
    table: dict[int, ChildSaEstablished] = {}
    for event in events:
        if isinstance(event, ChildSaEstablished):
            table[event.spi_in] = event
        elif isinstance(event, ChildSaRekeyed):
            table[event.new.spi_in] = event.new
        elif isinstance(event, ChildSaDeleted):
            table.pop(event.spi_in, None)
        elif isinstance(event, IkeSaDeleted):
            pass
    return table


def assert_consistent(net: Network) -> None:
    """Both data planes hold the same SA pairs with matching keys."""
    a = installed_children(net, "a")
    b = installed_children(net, "b")
    assert {(c.spi_in, c.spi_out) for c in a.values()} == {
        (c.spi_out, c.spi_in) for c in b.values()
    }
    for child in a.values():
        peer = b[child.spi_out]
        assert child.encr_key_out == peer.encr_key_in
        assert child.encr_key_in == peer.encr_key_out


def only_child_id(net: Network, side: str = "a") -> int:
    dispatcher = net.a if side == "a" else net.b
    (info,) = dispatcher.sas()
    (child,) = info.children
    return child["child_sa_id"]


def test_delete_ike_from_initiator_and_responder() -> None:
    for side in ("a", "b"):
        net, _ = established_pair()
        dispatcher = net.a if side == "a" else net.b
        dispatcher.terminate_ike(dispatcher.sas()[0].ike_sa_id, net.now)
        net.pump()
        for peer in ("a", "b"):
            assert len(net.events(peer, IkeSaDeleted)) == 1
            assert len(net.events(peer, ChildSaDeleted)) == 1
        other = "b" if side == "a" else "a"
        assert net.events(other, IkeSaDeleted)[0].reason == "deleted by peer"
        assert net.a.sas() == [] and net.b.sas() == []


def test_delete_child_both_directions_and_simultaneously() -> None:
    for who in ("a", "b", "both"):
        net, ike_id = established_pair()
        if who in ("a", "both"):
            net.a.terminate_child(ike_id, only_child_id(net, "a"), net.now)
        if who in ("b", "both"):
            (info,) = net.b.sas()
            net.b.terminate_child(info.ike_sa_id, only_child_id(net, "b"), net.now)
        net.pump()
        assert len(net.events("a", ChildSaDeleted)) == 1
        assert len(net.events("b", ChildSaDeleted)) == 1
        assert net.a.sas()[0].children == [] and net.b.sas()[0].children == []
        assert net.a.sas()[0].state == "ESTABLISHED"


def test_child_rekey_make_before_break() -> None:
    for who in ("a", "b"):
        net, _ = established_pair()
        (first,) = net.events("a", ChildSaEstablished)
        dispatcher = net.a if who == "a" else net.b
        info = dispatcher.sas()[0]
        dispatcher.rekey_child(info.ike_sa_id, info.children[0]["child_sa_id"], net.now)
        order: list[str] = []

        def watch(datagram, direction, order=order):
            msg = parse_message(datagram.data)
            order.append(f"{ExchangeType(msg.header.exchange).name}:{direction}")
            return datagram.data

        net.tap = watch
        net.pump()
        (rekeyed_a,) = net.events("a", ChildSaRekeyed)
        (rekeyed_b,) = net.events("b", ChildSaRekeyed)
        assert rekeyed_a.old_spi_in == first.spi_in
        assert rekeyed_a.new.spi_in not in (first.spi_in, first.spi_out)
        assert rekeyed_a.new.encr_key_in != first.encr_key_in
        # The old SA is deleted only after the new one is installed on both sides.
        assert order[0].startswith("CREATE_CHILD_SA") and order[2].startswith("INFORMATIONAL")
        (deleted_a,) = net.events("a", ChildSaDeleted)
        assert deleted_a.spi_in == first.spi_in
        assert rekeyed_b.new.spi_out == rekeyed_a.new.spi_in
        assert_consistent(net)
        assert len(installed_children(net, "a")) == 1


def test_child_rekey_with_pfs() -> None:
    net, ike_id = established_pair(esp=["aes128gcm16-ecp256"])
    net.a.rekey_child(ike_id, only_child_id(net), net.now)
    net.pump()
    (rekeyed,) = net.events("a", ChildSaRekeyed)
    assert rekeyed.new.encr_key_bits == 128
    assert net.a.ike_sa(ike_id).children[rekeyed.new.child_sa_id].ke_method == KeId.ECP_256
    assert_consistent(net)


def test_simultaneous_child_rekey_collision() -> None:
    """Sec. 2.8.1: both rekey the same Child SA; one new SA survives on both sides."""
    for seed in range(1, 7):
        net, ike_id = established_pair(seed=seed)
        (info_b,) = net.b.sas()
        net.a.rekey_child(ike_id, only_child_id(net, "a"), net.now)
        net.b.rekey_child(info_b.ike_sa_id, only_child_id(net, "b"), net.now)
        net.pump()
        a = installed_children(net, "a")
        b = installed_children(net, "b")
        assert len(a) == 1 and len(b) == 1, seed
        assert_consistent(net)
        assert len(net.a.sas()[0].children) == 1 and len(net.b.sas()[0].children) == 1


def test_ike_rekey_moves_children() -> None:
    for who in ("a", "b"):
        net, _ = established_pair()
        (first,) = net.events("a", IkeSaEstablished)
        dispatcher = net.a if who == "a" else net.b
        dispatcher.rekey_ike(dispatcher.sas()[0].ike_sa_id, net.now)
        net.pump()
        (rekeyed_a,) = net.events("a", IkeSaRekeyed)
        (rekeyed_b,) = net.events("b", IkeSaRekeyed)
        assert (rekeyed_a.spi_i, rekeyed_a.spi_r) == (rekeyed_b.spi_i, rekeyed_b.spi_r)
        assert rekeyed_a.old_spi_i == first.spi_i
        assert [e.reason for e in net.events("a", IkeSaDeleted)] == ["rekeyed"]
        assert not net.events("a", ChildSaDeleted)
        (info_a,) = net.a.sas()
        assert info_a.ike_sa_id == rekeyed_a.ike_sa_id and len(info_a.children) == 1
        # The new IKE SA works: rekey the Child SA through it, then delete everything.
        net.a.rekey_child(info_a.ike_sa_id, info_a.children[0]["child_sa_id"], net.now)
        net.pump()
        assert len(net.events("b", ChildSaRekeyed)) == 1
        assert_consistent(net)
        net.b.terminate_ike(net.b.sas()[0].ike_sa_id, net.now)
        net.pump()
        assert net.a.sas() == [] and net.b.sas() == []


def test_simultaneous_ike_rekey_collision() -> None:
    for seed in range(1, 7):
        net, ike_id = established_pair(seed=seed)
        net.a.rekey_ike(ike_id, net.now)
        net.b.rekey_ike(net.b.sas()[0].ike_sa_id, net.now)
        net.pump()
        (info_a,) = net.a.sas()
        (info_b,) = net.b.sas()
        assert (info_a.spi_i, info_a.spi_r) == (info_b.spi_i, info_b.spi_r), seed
        assert len(info_a.children) == 1 and len(info_b.children) == 1
        assert_consistent(net)
        net.run_until(net.now + 100)
        net.a.send_liveness(info_a.ike_sa_id, net.now)
        net.pump()
        assert not net.events("a", PeerUnreachable)


def test_rekey_crossing_delete() -> None:
    """A rekeys a Child SA while B deletes it: the deletion wins, nothing is left over."""
    net, ike_id = established_pair()
    (info_b,) = net.b.sas()
    net.a.rekey_child(ike_id, only_child_id(net, "a"), net.now)
    net.b.terminate_child(info_b.ike_sa_id, only_child_id(net, "b"), net.now)
    net.pump()
    assert_consistent(net)
    assert net.a.sas()[0].state == "ESTABLISHED"
    # Whatever survived is consistent, and the IKE SA still works afterwards.
    net.a.terminate_ike(ike_id, net.now)
    net.pump()
    assert net.a.sas() == [] and net.b.sas() == []


def test_dpd_detects_dead_peer_and_keeps_live_one() -> None:
    net, _ = established_pair(dpd_delay=30.0)
    net.run_until(200.0)
    assert not net.events("a", PeerUnreachable)
    assert net.a.sas()[0].state == "ESTABLISHED"
    net.drop = lambda datagram, direction: True  # the peer vanishes
    net.run_until(600.0)
    (gone,) = net.events("a", PeerUnreachable)
    assert gone.action == "clear"
    assert net.a.sas() == []
    (deleted,) = [e for e in net.events("a", ChildSaDeleted)]
    assert "peer unreachable" in deleted.reason


def test_dpd_restart_reinitiates() -> None:
    net, _ = established_pair(dpd_delay=10.0, a_dpd_action="restart")
    lost = {"on": True}
    net.drop = lambda datagram, direction: lost["on"] and direction == "a->b"
    net.run_until(200.0)
    (gone,) = net.events("a", PeerUnreachable)
    assert gone.action == "restart"
    lost["on"] = False
    net.run_until(400.0)
    assert len(net.events("a", IkeSaEstablished)) == 2
    assert len(installed_children(net, "a")) == 1


def test_lifetimes_rekey_with_jitter_and_expire() -> None:
    net, _ = established_pair(
        rekey_time=600.0, child_rekey_time=100.0, child_rand_time=20.0, dpd_delay=0.0
    )
    # rekey_time 100 s minus up to rand_time 20 s of jitter, on whichever side fires first.
    net.run_until(79.9)
    assert not net.events("a", ChildSaRekeyed)
    net.run_until(100.1)
    assert len(net.events("a", ChildSaRekeyed)) == 1
    expiring = net.events("a", ChildSaExpiring) + net.events("b", ChildSaExpiring)
    assert expiring and expiring[0].cause == "time"
    net.run_until(700.0)
    assert net.events("a", IkeSaRekeyed)
    assert_consistent(net)
    assert len(installed_children(net, "a")) == 1


def test_child_hard_lifetime_without_rekey() -> None:
    net, _ = established_pair(child_rekey_time=0.0, child_life_time=50.0)
    net.run_until(49.0)
    assert not net.events("a", ChildSaDeleted)
    net.run_until(51.0)
    assert len(net.events("a", ChildSaDeleted)) == 1
    assert len(net.events("b", ChildSaDeleted)) == 1


def test_data_plane_byte_limit_triggers_rekey() -> None:
    net, _ = established_pair(rekey_bytes=1000)
    (child,) = net.events("a", ChildSaEstablished)
    net.a.child_sa_limit_reached(child.spi_in, "bytes", False, net.now)
    net.pump()
    (expiring,) = net.events("a", ChildSaExpiring)
    assert expiring.cause == "bytes"
    assert len(net.events("a", ChildSaRekeyed)) == 1
    assert_consistent(net)


def test_create_additional_child_and_reauth() -> None:
    net, ike_id = established_pair()
    net.a.create_child(ike_id, "net", net.now)
    net.pump()
    assert len(installed_children(net, "a")) == 2
    assert_consistent(net)


def test_reauthentication_make_before_break() -> None:
    net, ike_id = established_pair(a_reauth_time=300.0, rekey_time=0.0, rand_time=0.0)
    net.run_until(301.0)
    assert len(net.events("a", IkeSaEstablished)) == 2
    (info_a,) = net.a.sas()
    assert info_a.ike_sa_id != ike_id and len(info_a.children) == 1
    assert_consistent(net)


def test_close_action_start_brings_it_back() -> None:
    net, _ = established_pair(a_close_action="start")
    net.b.terminate_ike(net.b.sas()[0].ike_sa_id, net.now)
    net.pump()
    assert len(net.events("a", IkeSaEstablished)) == 2
    assert len(installed_children(net, "a")) == 1
    assert_consistent(net)


def test_simultaneous_ike_delete() -> None:
    net, ike_id = established_pair()
    net.a.terminate_ike(ike_id, net.now)
    net.b.terminate_ike(net.b.sas()[0].ike_sa_id, net.now)
    net.run_until(net.now + 200.0)
    assert net.a.sas() == [] and net.b.sas() == []
    assert len(net.events("a", IkeSaDeleted)) == 1 and len(net.events("b", IkeSaDeleted)) == 1
    assert not net.events("a", PeerUnreachable) and not net.events("b", PeerUnreachable)


def test_ike_rekey_crossing_ike_delete() -> None:
    net, ike_id = established_pair()
    net.a.rekey_ike(ike_id, net.now)
    net.b.terminate_ike(net.b.sas()[0].ike_sa_id, net.now)
    net.run_until(net.now + 200.0)
    # The delete wins on both sides; nothing half-alive remains.
    assert net.a.sas() == [] and net.b.sas() == []
    assert installed_children(net, "a") == {} and installed_children(net, "b") == {}


def test_child_delete_crossing_ike_rekey() -> None:
    net, ike_id = established_pair()
    (info_b,) = net.b.sas()
    net.a.rekey_ike(ike_id, net.now)
    net.b.terminate_child(info_b.ike_sa_id, only_child_id(net, "b"), net.now)
    net.run_until(net.now + 200.0)
    assert_consistent(net)
    (info_a,) = net.a.sas()
    (info_b,) = net.b.sas()
    assert (info_a.spi_i, info_a.spi_r) == (info_b.spi_i, info_b.spi_r)
    assert info_a.state == info_b.state == "ESTABLISHED"
