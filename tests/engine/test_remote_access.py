"""Remote access in the engine (issue 14, RFC 7296 sec. 2.19): a client with vips and a
gateway with pools, both real Dispatchers in memory; the gateway's pools are the daemon's
PoolManager, called by the engine through ikev2.cp.ConfigProvider."""

from __future__ import annotations

from ipaddress import IPv4Address

from aioipsec.pools import PoolManager, parse_pool
from ikev2.dispatcher import Dispatcher
from ikev2.enums import NotifyType
from ikev2.events import (
    ChildSaEstablished,
    IkeSaDeleted,
    IkeSaEstablished,
    NegotiationFailed,
    VirtualIpsAssigned,
    VirtualIpsReleased,
)
from tests.engine.harness import PSK, Network, make_config, psk_lookup_for, seeded_rng

GATEWAY = "192.0.2.1"


def gateway(pools: PoolManager) -> Dispatcher:
    config = make_config(
        "rw",
        local=GATEWAY,
        remote="%any",
        local_id="moon.example.org",
        remote_id="%any",
        local_ts=["10.2.0.0/16"],
        remote_ts=["dynamic"],
        pools=["rw_pool"],
    )
    return Dispatcher([config], psk_lookup_for(PSK), rng=seeded_rng(99), config_provider=pools)


def client(address: str, identity: str, seed: int) -> Dispatcher:
    config = make_config(
        "home",
        local=address,
        remote=GATEWAY,
        local_id=identity,
        remote_id="moon.example.org",
        local_ts=["dynamic"],
        remote_ts=["10.2.0.0/16"],
        vips=["0.0.0.0"],
    )
    return Dispatcher([config], psk_lookup_for(PSK), rng=seeded_rng(seed))


def pools(addrs: str = "10.3.0.0/28") -> PoolManager:
    return PoolManager([parse_pool("rw_pool", {"addrs": addrs, "dns": "10.2.0.53"})])


def connect(net: Network) -> int:
    ike_id = net.a.initiate("home", "net", now=net.now)
    net.pump()
    return ike_id


def test_client_gets_an_address_and_a_narrowed_child() -> None:
    manager = pools()
    net = Network(client("192.0.2.10", "carol@example.org", 1), gateway(manager))
    connect(net)
    (mine,) = net.events("a", VirtualIpsAssigned)
    assert mine.local and mine.addresses == ("10.3.0.1",) and mine.dns == ("10.2.0.53",)
    (leased,) = net.events("b", VirtualIpsAssigned)
    assert not leased.local and leased.identity == "carol@example.org"
    assert leased.addresses == ("10.3.0.1",)
    (child_a,) = net.events("a", ChildSaEstablished)
    (child_b,) = net.events("b", ChildSaEstablished)
    # the client proposed 0.0.0.0/0 as its side; the gateway narrowed it to the lease
    assert [str(ts) for ts in child_a.local_ts] == ["10.3.0.1"]
    assert [str(ts) for ts in child_b.remote_ts] == ["10.3.0.1"]
    assert [str(ts) for ts in child_b.local_ts] == ["10.2.0.0/16"]
    listing = manager.listing()[0]
    assert (listing["online"], listing["leases"][0]["identity"]) == (1, "carol@example.org")


def test_delete_releases_and_reconnect_gets_the_same_address() -> None:
    manager = pools()
    net = Network(client("192.0.2.10", "carol@example.org", 1), gateway(manager))
    ike_id = connect(net)
    net.a.terminate_ike(ike_id, now=net.now)
    net.pump()
    assert net.events("a", IkeSaDeleted) and net.events("b", IkeSaDeleted)
    (released,) = net.events("b", VirtualIpsReleased)
    assert released.addresses == ("10.3.0.1",) and not released.local
    assert net.events("a", VirtualIpsReleased)[0].local
    assert (manager.listing()[0]["online"], manager.listing()[0]["offline"]) == (0, 1)
    # a newcomer meanwhile gets another address; carol, back, gets hers
    other = Network(client("192.0.2.11", "dave@example.org", 2), net.b)
    connect(other)
    assert other.events("a", VirtualIpsAssigned)[0].addresses == ("10.3.0.2",)
    again = Network(client("192.0.2.10", "carol@example.org", 3), net.b)
    connect(again)
    assert again.events("a", VirtualIpsAssigned)[0].addresses == ("10.3.0.1",)


def test_two_clients_get_different_addresses() -> None:
    manager = pools()
    gw = gateway(manager)
    first = Network(client("192.0.2.10", "carol@example.org", 1), gw)
    connect(first)
    second = Network(client("192.0.2.11", "dave@example.org", 2), gw)
    connect(second)
    assert first.events("a", VirtualIpsAssigned)[0].addresses == ("10.3.0.1",)
    assert second.events("a", VirtualIpsAssigned)[0].addresses == ("10.3.0.2",)
    assert manager.listing()[0]["online"] == 2


def test_exhausted_pool_internal_address_failure_and_no_lease() -> None:
    manager = pools("10.3.0.1")  # one address
    gw = gateway(manager)
    connect(Network(client("192.0.2.10", "carol@example.org", 1), gw))
    net = Network(client("192.0.2.11", "dave@example.org", 2), gw)
    connect(net)
    (failure,) = net.events("b", NegotiationFailed)
    assert failure.notify == NotifyType.INTERNAL_ADDRESS_FAILURE
    assert "pool rw_pool (10.3.0.1: 1 online, 0 offline) exhausted" in failure.reason
    # the client learns it, gets no Child SA, and both IKE SAs are gone again
    assert not net.events("a", ChildSaEstablished) and not net.events("a", VirtualIpsAssigned)
    assert net.events("a", NegotiationFailed)
    assert net.events("a", IkeSaDeleted) and net.events("b", IkeSaDeleted)
    listing = manager.listing()[0]
    assert (listing["online"], listing["offline"]) == (1, 0)  # only carol's
    assert [lease["identity"] for lease in listing["leases"]] == ["carol@example.org"]


def test_gateway_without_pools_sends_no_reply_and_the_client_gives_up() -> None:
    config = make_config(
        "rw", local=GATEWAY, remote="%any", local_id="moon.example.org", remote_id="%any",
        local_ts=["10.2.0.0/16"], remote_ts=["0.0.0.0/0"],
    )  # fmt: skip
    gw = Dispatcher([config], psk_lookup_for(PSK), rng=seeded_rng(5))
    net = Network(client("192.0.2.10", "carol@example.org", 1), gw)
    connect(net)
    (failure,) = net.events("a", NegotiationFailed)
    assert failure.notify == NotifyType.FAILED_CP_REQUIRED
    assert "no CFG_REPLY" in failure.reason
    assert net.events("a", IkeSaEstablished) and net.events("a", IkeSaDeleted)
    assert IPv4Address("0.0.0.0")


def test_reauthentication_keeps_the_virtual_ip() -> None:
    manager = pools()
    rw = client("192.0.2.10", "carol@example.org", 1)
    rw.configs[0].reauth_time = 100.0
    rw.configs[0].rekey_time = 0.0
    net = Network(rw, gateway(manager))
    connect(net)
    net.run_until(200.0)
    assigned = net.events("a", VirtualIpsAssigned)
    assert len(assigned) >= 2 and {a.addresses for a in assigned} == {("10.3.0.1",)}
    assert len(net.events("a", IkeSaEstablished)) >= 2
    # the new IKE SA asked for its address and the gateway gave the same lease back
    listing = manager.listing()[0]
    assert [lease["address"] for lease in listing["leases"]] == ["10.3.0.1"]
    assert listing["online"] == 1


def test_a_restarted_client_asks_for_its_old_address() -> None:
    """dpd_action = restart against a gateway that lost its state (a fresh one with empty
    pools): the new IKE_AUTH asks for the address the client had, and a pool that has it
    free gives it back (without asking, carol would get the fresh pool's first address)."""
    first_gateway = gateway(pools())
    connect(Network(client("192.0.2.11", "dave@example.org", 2), first_gateway))
    rw = client("192.0.2.10", "carol@example.org", 1)
    rw.configs[0].dpd_delay = 10.0
    rw.configs[0].children[0].dpd_action = "restart"
    net = Network(rw, first_gateway, check_data_plane=False)
    connect(net)
    assert net.events("a", VirtualIpsAssigned)[-1].addresses == ("10.3.0.2",)
    net.b = gateway(pools())  # the gateway restarted: no IKE SA, no lease
    net.run_until(300.0)
    assert len(net.events("a", IkeSaEstablished)) == 2
    assert net.events("a", VirtualIpsAssigned)[-1].addresses == ("10.3.0.2",)


def test_both_families() -> None:
    manager = PoolManager(
        [
            parse_pool("rw_pool", {"addrs": "10.3.0.0/28"}),
            parse_pool("rw_pool6", {"addrs": "fec3::/120", "dns": "fec3::53"}),
        ]
    )
    gw = gateway(manager)
    gw.configs[0].pools = ["rw_pool", "rw_pool6"]
    gw.configs[0].children[0].local_ts = ["10.2.0.0/16", "fd02::/64"]
    rw = client("192.0.2.10", "carol@example.org", 1)
    rw.configs[0].vips = ["0.0.0.0", "::"]
    rw.configs[0].children[0].remote_ts = ["10.2.0.0/16", "fd02::/64"]
    net = Network(rw, gw)
    connect(net)
    (mine,) = net.events("a", VirtualIpsAssigned)
    assert mine.addresses == ("10.3.0.1", "fec3::1") and mine.dns == ("fec3::53",)
    (child,) = net.events("a", ChildSaEstablished)
    assert sorted(str(ts) for ts in child.local_ts) == ["10.3.0.1", "fec3::1"]


def test_malformed_cfg_request_is_refused_without_a_lease(monkeypatch) -> None:
    """A CFG_REQUEST whose INTERNAL_IP4_ADDRESS has 3 octets (the client engine is made to
    send it): INVALID_SYNTAX naming the attribute, no lease, both IKE SAs gone."""
    from ikev2.enums import CfgType
    from ikev2.payloads import CpAttribute, CpPayload
    from ikev2.tasks import ike_auth

    bad = CpPayload(CfgType.CFG_REQUEST, [CpAttribute(1, b"\x0a\x03\x00")])
    monkeypatch.setattr(ike_auth, "client_request", lambda sa: bad)
    manager = pools()
    net = Network(client("192.0.2.10", "carol@example.org", 1), gateway(manager))
    connect(net)
    (failure,) = net.events("b", NegotiationFailed)
    assert failure.notify == NotifyType.INVALID_SYNTAX
    assert "INTERNAL_IP4_ADDRESS" in failure.reason and "3 octets" in failure.reason
    assert manager.listing()[0]["online"] == 0 and manager.listing()[0]["offline"] == 0
    assert net.events("a", IkeSaDeleted) and net.events("b", IkeSaDeleted)
