"""Address pools (aioipsec.pools): swanctl's pools section and strongSwan mem_pool leases."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Interface, ip_address

import pytest

from aioipsec.config.swanctl import parse_settings_file, parse_settings_text, section_to_data
from aioipsec.pools import (
    MemPool,
    PoolManager,
    PoolProblem,
    format_pools,
    parse_addrs,
    parse_pool,
    parse_vips,
)
from ikev2.cp import ConfigAttributes, cp_request
from ikev2.enums import CfgType, CpAttributeType, NotifyType
from ikev2.errors import ProtocolError
from ikev2.payloads import CpAttribute
from tests.config import corpus

T = CpAttributeType
# The one place that knows where the corpus lives (and that it may be absent).
CORPUS = corpus.CORPUS
ANY4 = IPv4Address("0.0.0.0")
ANY6 = IPv6Address("::")


def pool(name: str = "rw_pool", **table: object) -> MemPool:
    table.setdefault("addrs", "10.3.0.0/29")
    return MemPool(parse_pool(name, table))


# --- addrs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, first, last, size",
    [
        ("10.3.0.0/28", "10.3.0.1", "10.3.0.14", 14),  # network and broadcast left out
        ("10.3.0.3/32", "10.3.0.3", "10.3.0.3", 1),
        ("10.3.0.2/31", "10.3.0.2", "10.3.0.3", 2),
        ("10.3.0.1", "10.3.0.1", "10.3.0.1", 1),
        ("10.3.0.10-10.3.0.12", "10.3.0.10", "10.3.0.12", 3),
        ("fec3::/120", "fec3::1", "fec3::fe", 254),
        ("10.1.0.128/26", "10.1.0.129", "10.1.0.190", 62),
    ],
)
def test_addrs_forms(text: str, first: str, last: str, size: int) -> None:
    settings = parse_pool("p", {"addrs": text})
    assert (str(settings.first), str(settings.last), settings.size) == (first, last, size)
    assert parse_addrs(text)[:2] == (ip_address(first), ip_address(last))


@pytest.mark.parametrize(
    "table, key, words",
    [
        ({}, None, "no addrs"),
        ({"addrs": "10.3.0.0/33"}, "addrs", "not a subnet"),
        ({"addrs": "10.3.0.9-10.3.0.1"}, "addrs", "ends"),
        ({"addrs": "10.3.0.1-fe80::1"}, "addrs", "different families"),
        ({"addrs": ["10.3.0.0/24", "10.4.0.0/24"]}, "addrs", "one subnet"),
        ({"addrs": "10.3.0.0/24", "dns": "not-an-address"}, "dns", "dns = 'not-an-address'"),
        ({"addrs": "10.3.0.0/24", "nbns": "fec3::53"}, "nbns", "no IPv6 nbns"),
        ({"addrs": "10.3.0.0/24", "colour": "blue"}, "colour", "unknown key"),
        ({"addrs": "10.3.0.0/24", "server": "10.3.0.1"}, "server", "not supported"),
        ({"addrs": "10.3.0.0/24", "5": "hello"}, "5", "INTERNAL_ADDRESS_EXPIRY"),
        ({"addrs": "10.3.0.0/24", "1": "10.3.0.9"}, "1", "not an attribute"),
        ({"addrs": "10.3.0.0/24", "25": "bad domain"}, "25", "not allowed"),
        ({"addrs": "10.3.0.0/24", "dns": "10.0.0.1,,10.0.0.2"}, "dns", "empty item"),
    ],
)
def test_bad_pools(table: dict[str, object], key: str | None, words: str) -> None:
    with pytest.raises(PoolProblem) as caught:
        parse_pool("p", table)
    assert caught.value.key == key
    assert words in caught.value.reason


def test_pool_attributes_swanctl_and_toml_alike() -> None:
    text = """
    pools {
        rw_pool {
            addrs = 10.3.0.0/24
            dns = 10.3.0.53, fec3::53
            nbns = 10.3.0.54
            subnet = 10.1.0.0/16
            split_include = 192.168.5.0/24
            split_exclude = 192.168.5.7/32
            25 = corp.example.com
            20 = 10.3.0.99
        }
    }
    """
    data, _ = section_to_data(parse_settings_text(text))
    from_conf = parse_pool("rw_pool", data["pools"]["rw_pool"])
    toml_table = {
        "addrs": "10.3.0.0/24",
        "dns": ["10.3.0.53", "fec3::53"],
        "nbns": ["10.3.0.54"],
        "subnet": ["10.1.0.0/16"],
        "split_include": ["192.168.5.0/24"],
        "split_exclude": ["192.168.5.7/32"],
        "25": "corp.example.com",
        "20": "10.3.0.99",
    }
    from_toml = parse_pool("rw_pool", toml_table)
    assert from_conf.attributes == from_toml.attributes
    assert from_conf.warnings and "split_exclude" in from_conf.warnings[0]
    decoded = ConfigAttributes.from_payload(
        ConfigAttributes(CfgType.CFG_REPLY, other=from_conf.attributes).to_payload()
    )
    assert decoded.ip4_dns == [IPv4Address("10.3.0.53")]
    assert decoded.ip6_dns == [IPv6Address("fec3::53")]
    assert decoded.ip4_nbns == [IPv4Address("10.3.0.54")]
    assert decoded.ip4_subnets == [IPv4Network("10.1.0.0/16"), IPv4Network("192.168.5.0/24")]
    assert decoded.dns_domains == ["corp.example.com"]
    assert decoded.other == [CpAttribute(T.P_CSCF_IP4_ADDRESS, bytes([10, 3, 0, 99]))]


def test_vips() -> None:
    assert parse_vips("0.0.0.0, ::") == [ANY4, ANY6]
    assert parse_vips(["10.3.0.5"]) == [IPv4Address("10.3.0.5")]
    with pytest.raises(ValueError, match="not an address"):
        parse_vips("%config")


# --- leases ----------------------------------------------------------------------------


def test_same_identity_gets_its_address_back() -> None:
    p = pool()  # 10.3.0.1 - 10.3.0.6
    carol = p.acquire("carol@strongswan.org", None, now=0)
    dave = p.acquire("dave@strongswan.org", None, now=0)
    assert (carol, dave) == (IPv4Address("10.3.0.1"), IPv4Address("10.3.0.2"))
    assert p.release("carol@strongswan.org", carol, now=10)
    assert (p.online, p.offline) == (1, 1)
    # a newcomer does not get carol's offline address while free ones remain
    assert p.acquire("eve@strongswan.org", None, now=11) == IPv4Address("10.3.0.3")
    # carol reconnects, asking for any address: she gets hers back
    assert p.acquire("carol@strongswan.org", None, now=12) == carol
    assert (p.online, p.offline) == (3, 0)


def test_requested_address() -> None:
    p = pool()
    # a client asking for its previous address (after a gateway restart) gets it
    assert p.acquire("carol", IPv4Address("10.3.0.5"), now=0) == IPv4Address("10.3.0.5")
    # another identity cannot take it
    assert p.acquire("dave", IPv4Address("10.3.0.5"), now=0) == IPv4Address("10.3.0.1")
    # outside the pool: ignored, an address of the pool is given
    assert p.acquire("eve", IPv4Address("192.0.2.1"), now=0) == IPv4Address("10.3.0.2")


def test_two_sas_of_one_identity_share_a_lease() -> None:
    p = pool()
    first = p.acquire("carol", None, now=0)
    # reauthentication (make-before-break) asks for the address it has
    assert p.acquire("carol", first, now=1) == first
    p.release("carol", first, now=2)
    assert (p.online, p.offline) == (1, 0)  # the new IKE SA still holds it
    p.release("carol", first, now=3)
    assert (p.online, p.offline) == (0, 1)
    assert not p.release("carol", first, now=4)  # already offline
    assert not p.release("dave", first, now=4)  # not dave's


def test_exhaustion_and_reassignment_after_timeout() -> None:
    p = MemPool(parse_pool("tiny", {"addrs": "10.3.0.1-10.3.0.2"}), reassign_after=60)
    a = p.acquire("a", None, now=0)
    b = p.acquire("b", None, now=0)
    assert p.acquire("c", None, now=0) is None  # exhausted
    p.release("a", a, now=100)
    assert p.acquire("c", None, now=130) is None  # a's lease is still reserved for a
    assert p.acquire("c", None, now=160) == a  # 60 s later it is reassigned
    assert [(str(x.address), x.identity, x.online) for x in p.leases()] == [
        ("10.3.0.1", "c", True),
        ("10.3.0.2", "b", True),
    ]
    p.release("c", a, now=170)
    assert p.acquire("a", None, now=171) is None  # now it is reserved for c
    assert p.acquire("a", None, now=230) == a
    assert b == IPv4Address("10.3.0.2")


# --- the manager (the engine's ConfigProvider) -----------------------------------------


def manager() -> PoolManager:
    return PoolManager(
        [
            parse_pool("v4", {"addrs": "10.3.0.0/30", "dns": "10.3.0.53", "25": "corp.example"}),
            parse_pool("v6", {"addrs": "fec3::/126", "dns": "fec3::53"}),
        ]
    )


def test_assign_both_families() -> None:
    m = manager()
    reply = m.assign(["v4", "v6"], "carol", cp_request([ANY4, ANY6]), now=0)
    assert reply.cfg_type == CfgType.CFG_REPLY
    assert reply.ip4_addresses == [IPv4Address("10.3.0.1")]
    assert reply.ip6_addresses == [IPv6Interface("fec3::1/128")]
    assert reply.ip4_dns == [IPv4Address("10.3.0.53")]
    assert reply.ip6_dns == [IPv6Address("fec3::53")]
    assert reply.dns_domains == ["corp.example"]
    assert "assigned 10.3.0.1 from pool v4 to carol" in m.take_log()
    m.release("carol", reply.virtual_ips, now=5)
    again = m.assign(["v4", "v6"], "carol", cp_request([ANY4, ANY6]), now=6)
    assert again.virtual_ips == reply.virtual_ips


def test_assign_only_ipv4_pool_for_ipv4_request() -> None:
    reply = manager().assign(["v4", "v6"], "carol", cp_request([ANY4]), now=0)
    assert reply.ip6_addresses == [] and reply.ip6_dns == []


def test_exhaustion_is_internal_address_failure_naming_the_pool() -> None:
    m = manager()  # v4 has 10.3.0.1 and 10.3.0.2
    m.assign(["v4"], "a", cp_request([ANY4]), now=0)
    m.assign(["v4"], "b", cp_request([ANY4]), now=0)
    with pytest.raises(ProtocolError) as caught:
        m.assign(["v4"], "c", cp_request([ANY4]), now=0)
    assert caught.value.notify == NotifyType.INTERNAL_ADDRESS_FAILURE
    assert "pool v4 (10.3.0.0/30: 2 online, 0 offline) exhausted" in caught.value.reason
    assert [x["online"] for x in m.listing()] == [2, 0]


def test_partial_failure_takes_no_lease() -> None:
    m = PoolManager([parse_pool("v4", {"addrs": "10.3.0.1"})])
    m.assign(["v4"], "a", cp_request([ANY4]), now=0)
    with pytest.raises(ProtocolError, match="no pool of this family"):
        m.assign(["v4"], "b", cp_request([ANY4, ANY6]), now=0)
    assert m.listing()[0]["online"] == 1


def test_unknown_pool_name() -> None:
    with pytest.raises(ProtocolError, match="not defined") as caught:
        manager().assign(["nope"], "a", cp_request([ANY4]), now=0)
    assert caught.value.notify == NotifyType.INTERNAL_ADDRESS_FAILURE


def test_supported_attributes_query() -> None:
    request = cp_request([ANY4])
    request.requested.append(T.SUPPORTED_ATTRIBUTES)
    reply = manager().assign(["v4"], "a", request, now=0)
    assert reply.supported_attributes == [
        T.INTERNAL_IP4_ADDRESS,
        T.INTERNAL_IP6_ADDRESS,
        T.INTERNAL_IP4_DNS,
        T.INTERNAL_DNS_DOMAIN,
    ]


def test_listing_like_swanctl() -> None:
    m = manager()
    m.assign(["v4"], "carol@strongswan.org", cp_request([ANY4]), now=0)
    reply = m.assign(["v4"], "dave@strongswan.org", cp_request([ANY4]), now=0)
    m.release("dave@strongswan.org", reply.virtual_ips, now=1)
    text = format_pools(m.listing())
    assert text.splitlines() == [
        f"{'v4':<20} {'10.3.0.0':<39} 1 / 1 / 2",
        f"  {'10.3.0.1':<39} online   'carol@strongswan.org'",
        f"  {'10.3.0.2':<39} offline  'dave@strongswan.org'",
        f"{'v6':<20} {'fec3::':<39} 0 / 0 / 2",
    ]
    m.replace([parse_pool("v4", {"addrs": "10.3.0.0/30"})])  # reload: same addrs
    assert m.listing()[0]["online"] == 1 and len(m.pools) == 1


# --- strongSwan's own configurations ---------------------------------------------------


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/reference/swanctl-corpus is absent")
def test_every_corpus_pool_parses() -> None:
    count = 0
    for path in sorted(CORPUS.glob("*/*/*/swanctl.conf")):
        data, _ = section_to_data(parse_settings_file(path))
        for name, table in (data.get("pools") or {}).items():
            settings = parse_pool(name, table)
            assert settings.size >= 1
            count += 1
    assert count >= 40
