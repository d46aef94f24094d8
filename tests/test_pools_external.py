"""pools = radius (aioipsec.pools.PoolManager.offer_radius): the address of the peer's RADIUS
Access-Accept, strongSwan's eap-radius provider; pools = dhcp (offer_dhcp): the DHCP server's,
asked for with AddressPending. The end-to-end checks are tests/radius/test_freeradius.py and
tests/dhcp/test_pools_dhcp.py."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest

from aioipsec.pools import ExternalLease, PoolManager, parse_pool
from ikev2.cp import AddressPending, cp_request
from ikev2.enums import NotifyType
from ikev2.errors import ProtocolError

ANY4 = IPv4Address("0.0.0.0")
ANY6 = IPv6Address("::")
FRAMED = IPv4Address("10.9.0.7")


def manager() -> PoolManager:
    return PoolManager([parse_pool("rw_pool", {"addrs": "10.3.0.0/30", "dns": "10.2.0.53"})])


def test_the_access_accept_address_and_dns_are_assigned_and_released() -> None:
    m = manager()
    m.offer_radius("grace", ExternalLease((FRAMED,), (IPv4Address("10.2.0.99"),)))
    reply = m.assign(["radius"], "grace", cp_request([ANY4], dns=True), now=0)
    assert reply.ip4_addresses == [FRAMED]
    assert [str(a) for a in reply.dns_servers] == ["10.2.0.99"]
    assert "assigned 10.9.0.7 from pool radius to grace" in m.take_log()
    (listed,) = m.listing()[1:]
    assert listed["leases"] == [{"address": "10.9.0.7", "identity": "grace", "status": "online"}]
    m.release("grace", [FRAMED], now=1)
    assert [p["name"] for p in m.listing()] == ["rw_pool"]
    # Released: the next IKE SA needs a new Access-Accept.
    with pytest.raises(ProtocolError):
        m.assign(["radius"], "grace", cp_request([ANY4]), now=2)


def test_no_framed_address_is_internal_address_failure_saying_why() -> None:
    m = manager()
    m.offer_radius("carol", ExternalLease())
    with pytest.raises(ProtocolError) as raised:
        m.assign(["radius"], "carol", cp_request([ANY4]), now=0)
    assert raised.value.notify == NotifyType.INTERNAL_ADDRESS_FAILURE
    assert "carried no Framed-IP-Address" in raised.value.reason
    with pytest.raises(ProtocolError) as raised:
        m.assign(["radius"], "dave", cp_request([ANY4]), now=0)
    assert "no RADIUS Access-Accept for dave" in raised.value.reason


def test_a_pool_named_after_radius_serves_who_got_no_address() -> None:
    m = manager()
    m.offer_radius("carol", ExternalLease(dns=(IPv4Address("10.2.0.99"),)))
    reply = m.assign(["radius", "rw_pool"], "carol", cp_request([ANY4]), now=0)
    assert reply.ip4_addresses == [IPv4Address("10.3.0.1")]
    assert any("trying pool(s) rw_pool" in line for line in m.take_log())


def test_the_family_asked_for_is_the_one_given() -> None:
    m = PoolManager()
    v6 = IPv6Address("fd00::7")
    m.offer_radius("grace", ExternalLease((FRAMED, v6)))
    reply = m.assign(["radius"], "grace", cp_request([ANY4, ANY6]), now=0)
    assert reply.virtual_ips == [FRAMED, v6]


def test_pools_dhcp_asks_first_then_assigns_and_releases() -> None:
    m = manager()
    with pytest.raises(AddressPending) as pending:
        m.assign(["dhcp"], "carol", cp_request([ANY4]), now=0)
    assert pending.value.pool == "dhcp" and pending.value.identity == "carol"
    assert m.listing()[0]["online"] == 0  # nothing taken meanwhile
    m.offer_dhcp("carol", ExternalLease((FRAMED,), (IPv4Address("10.2.0.53"),)))
    reply = m.assign(["dhcp"], "carol", cp_request([ANY4], dns=True), now=1)
    assert reply.ip4_addresses == [FRAMED]
    assert [str(a) for a in reply.dns_servers] == ["10.2.0.53"]
    # The engine releases under the IKE identity (an EAP peer's lease has its EAP identity).
    m.release("carol@example.org", [FRAMED], now=2)
    assert m.take_dhcp_releases() == [("carol", FRAMED)]


def test_pools_dhcp_without_an_answer_says_why() -> None:
    m = manager()
    m.offer_dhcp("carol", ExternalLease(source="no DHCP OFFER for 'carol' from 10.1.255.255"))
    with pytest.raises(ProtocolError) as raised:
        m.assign(["dhcp"], "carol", cp_request([ANY4]), now=0)
    assert raised.value.notify == NotifyType.INTERNAL_ADDRESS_FAILURE
    assert "pool dhcp: no DHCP OFFER" in raised.value.reason
