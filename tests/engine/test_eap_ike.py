"""EAP in IKE_AUTH (RFC 7296 sec. 2.16) between two real Dispatchers: EAP-MSCHAPv2 with a
gateway authenticating by PSK, EAP-TLS with certificates from strongSwan's pki tool, the
MSK-keyed AUTH both ways, a wrong password, and leases bound to the EAP identity."""

from __future__ import annotations

import time

import pytest

from aioipsec.pools import PoolManager, parse_pool
from ikev2.config import AuthConfig, AuthMethodName
from ikev2.dispatcher import Dispatcher
from ikev2.events import (
    AuthenticationFailed,
    ChildSaEstablished,
    IkeSaDeleted,
    IkeSaEstablished,
    VirtualIpsAssigned,
    VirtualIpsReleased,
)
from tests.conftest_pki import Pki, pki_fixture  # noqa: F401  (the pki fixture)
from tests.engine.harness import PSK, Network, make_config, psk_lookup_for, seeded_rng

GATEWAY = "192.0.2.1"
CLIENT = "192.0.2.10"
PASSWORDS = {"carol": "Ar3etTnp"}


def gateway(
    auth: AuthMethodName = "eap-mschapv2", pools: PoolManager | None = None, **kwargs
) -> Dispatcher:
    config = make_config(
        "rw", local=GATEWAY, remote="%any", local_id="moon.example.org", remote_id="%any",
        local_ts=["10.2.0.0/16"], remote_ts=["dynamic"],
        pools=["rw_pool"] if pools is not None else [],
    )  # fmt: skip
    config.remote = AuthConfig(auth=auth, id="%any", **kwargs.pop("remote", {}))
    if "local" in kwargs:
        config.local = kwargs.pop("local")
    return Dispatcher(
        [config], psk_lookup_for(PSK), rng=seeded_rng(99), config_provider=pools,
        eap_lookup=PASSWORDS.get, wall_time_offset=time.time(),
    )  # fmt: skip


def client(
    password: str = "Ar3etTnp", auth: AuthMethodName = "eap-mschapv2", **kwargs
) -> Dispatcher:
    config = make_config(
        "home", local=CLIENT, remote=GATEWAY, local_id="carol@example.org",
        remote_id="moon.example.org", local_ts=["dynamic"], remote_ts=["10.2.0.0/16"],
        vips=kwargs.pop("vips", []),
    )  # fmt: skip
    config.local = kwargs.pop(
        "local", AuthConfig(auth=auth, id="carol@example.org", eap_id="carol")
    )
    if "remote" in kwargs:
        config.remote = kwargs.pop("remote")
    return Dispatcher(
        [config], psk_lookup_for(PSK), rng=seeded_rng(1),
        eap_lookup=lambda identity: password, wall_time_offset=time.time(),
    )  # fmt: skip


def connect(net: Network) -> None:
    net.a.initiate("home", "net", now=net.now)
    net.pump()


def test_eap_mschapv2_establishes_with_the_msk() -> None:
    net = Network(client(), gateway())
    connect(net)
    assert net.events("a", IkeSaEstablished) and net.events("b", IkeSaEstablished)
    (child_a,) = net.events("a", ChildSaEstablished)
    (child_b,) = net.events("b", ChildSaEstablished)
    assert child_a.spi_in == child_b.spi_out
    assert net.events("b", IkeSaEstablished)[0].remote_id == "carol@example.org"


def test_lease_bound_to_the_eap_identity() -> None:
    pools = PoolManager([parse_pool("rw_pool", {"addrs": "10.3.0.0/28"})])
    net = Network(client(vips=["0.0.0.0"]), gateway(pools=pools))
    connect(net)
    (leased,) = net.events("b", VirtualIpsAssigned)
    assert leased.identity == "carol" and leased.addresses == ("10.3.0.1",)
    assert pools.listing()[0]["leases"][0]["identity"] == "carol"


def test_the_eap_identitys_lease_goes_offline_when_the_ike_sa_ends() -> None:
    """The lease is released under the name it was taken under (the EAP identity), not the
    IKE identity: released under the wrong name it stayed online for ever."""
    pools = PoolManager([parse_pool("rw_pool", {"addrs": "10.3.0.0/28"})])
    net = Network(client(vips=["0.0.0.0"]), gateway(pools=pools))
    connect(net)
    (established,) = net.events("a", IkeSaEstablished)
    net.a.terminate_ike(established.ike_sa_id, now=net.now)
    net.pump()
    (released,) = net.events("b", VirtualIpsReleased)
    assert released.identity == "carol" and released.addresses == ("10.3.0.1",)
    assert (pools.listing()[0]["online"], pools.listing()[0]["offline"]) == (0, 1)


def test_wrong_password_fails_both_sides_and_takes_no_lease() -> None:
    pools = PoolManager([parse_pool("rw_pool", {"addrs": "10.3.0.0/28"})])
    net = Network(client(password="wrong", vips=["0.0.0.0"]), gateway(pools=pools))
    connect(net)
    (refused,) = net.events("b", AuthenticationFailed)
    assert refused.check == "eap" and "wrong MS-CHAPv2 password for 'carol'" in refused.reason
    assert net.events("a", AuthenticationFailed)
    assert not net.events("a", IkeSaEstablished) and not net.events("b", IkeSaEstablished)
    assert net.events("a", IkeSaDeleted) and net.events("b", IkeSaDeleted)
    assert pools.listing()[0]["online"] == 0 and pools.listing()[0]["offline"] == 0


def test_gateway_expecting_eap_refuses_a_psk_client() -> None:
    psk_client = client(local=AuthConfig(auth="psk", id="carol@example.org"))
    net = Network(psk_client, gateway())
    connect(net)
    (refused,) = net.events("b", AuthenticationFailed)
    assert refused.check == "method-mismatch" and "expects eap-mschapv2" in refused.reason


def test_eap_tls_both_roles(pki: Pki) -> None:
    moon, sun, ca = pki["rsa"], pki["ecdsa256"], pki["ca"].cert
    gw_local = AuthConfig(auth="pubkey", id="moon.example.org", certs=[moon.cert],
                          private_key=moon.key)  # fmt: skip
    gw = gateway(auth="eap-tls", local=gw_local, remote={"cacerts": [ca]})
    rw = client(
        local=AuthConfig(auth="eap-tls", id="sun.example.org", certs=[sun.cert],
                         private_key=sun.key),
        remote=AuthConfig(auth="pubkey", id="moon.example.org", cacerts=[ca]),
    )  # fmt: skip
    net = Network(rw, gw)
    connect(net)
    assert not net.events("b", AuthenticationFailed), net.events("b", AuthenticationFailed)
    assert net.events("a", ChildSaEstablished) and net.events("b", ChildSaEstablished)


@pytest.mark.parametrize("auth", ["eap-mschapv2", "eap"])
def test_client_without_a_password_does_not_start(auth: AuthMethodName) -> None:
    rw = client(auth=auth)
    rw.ctx.eap_lookup = lambda identity: None
    net = Network(rw, gateway())
    connect(net)
    assert net.events("a", IkeSaDeleted) or net.events("a", AuthenticationFailed)
    assert not net.events("b", IkeSaEstablished)
