"""Configuration payload attributes (ikev2.cp): RFC 7296 sec. 3.15, RFC 8598.

Oracle: scapy.contrib.ikev2, an implementation we did not write, builds CP payloads that we
decode into the values scapy was given, and dissects ours into the same fields. Round trips
(typed -> wire -> typed) are checked with hypothesis; malformed values of known attributes
raise the one typed error, naming the attribute.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Interface, IPv6Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ikev2.cp import ConfigAttributes, check_domain, cp_request
from ikev2.enums import CfgType, CpAttributeType, NotifyType, PayloadType
from ikev2.errors import ProtocolError
from ikev2.payloads import CpAttribute, CpPayload, parse_payload_body

T = CpAttributeType

scapy_ikev2 = pytest.importorskip("scapy.contrib.ikev2")
from scapy.contrib.ikev2 import ConfigurationAttribute as ScapyAttr  # noqa: E402
from scapy.contrib.ikev2 import IKEv2_CP  # noqa: E402


def _scapy_body(packet: IKEv2_CP) -> bytes:
    return bytes(packet)[4:]  # after the generic payload header


# --- scapy as the oracle ---------------------------------------------------------------


def test_scapy_request_decodes() -> None:
    """A client's request as scapy builds it: empty attributes ask, a value proposes."""
    body = _scapy_body(
        IKEv2_CP(
            CFGType=1,
            attributes=[
                ScapyAttr(type=1, length=0),
                ScapyAttr(type=1, length=4, value="10.3.0.7"),
                ScapyAttr(type=8, length=0),
                ScapyAttr(type=3, length=0),
                ScapyAttr(type=10, length=0),
                ScapyAttr(type=25, length=0),
                ScapyAttr(type=14, length=0),
                ScapyAttr(type=7, value=b"strongSwan 5.9.8"),
            ],
        )
    )
    decoded = ConfigAttributes.parse(body)
    assert decoded.cfg_type == CfgType.CFG_REQUEST
    assert decoded.requested == [
        T.INTERNAL_IP4_ADDRESS,
        T.INTERNAL_IP6_ADDRESS,
        T.INTERNAL_IP4_DNS,
        T.INTERNAL_IP6_DNS,
        T.INTERNAL_DNS_DOMAIN,
        T.SUPPORTED_ATTRIBUTES,
    ]
    assert decoded.ip4_addresses == [IPv4Address("10.3.0.7")]
    assert decoded.application_version == "strongSwan 5.9.8"
    assert decoded.wants(T.INTERNAL_IP4_DNS) and not decoded.wants(T.INTERNAL_IP4_NBNS)


def test_scapy_reply_decodes_every_attribute() -> None:
    body = _scapy_body(
        IKEv2_CP(
            CFGType=2,
            attributes=[
                ScapyAttr(type=1, length=4, value="10.3.0.1"),
                ScapyAttr(type=2, length=4, value="255.255.255.0"),
                ScapyAttr(type=3, length=4, value="10.3.0.53"),
                ScapyAttr(type=4, length=4, value="10.3.0.54"),
                ScapyAttr(type=6, length=4, value="10.3.0.67"),
                ScapyAttr(type=5, value=struct.pack("!I", 3600)),
                ScapyAttr(type=8, value=IPv6Address("fd00::7").packed + bytes([120])),
                ScapyAttr(type=10, length=16, value="fd00::53"),
                ScapyAttr(type=12, length=16, value="fd00::67"),
                ScapyAttr(type=13, value=bytes([10, 1, 0, 0, 255, 255, 0, 0])),
                ScapyAttr(type=15, value=IPv6Address("fd01::").packed + bytes([48])),
                ScapyAttr(type=14, value=struct.pack("!3H", 1, 3, 25)),
                ScapyAttr(type=25, value=b"corp.example.com"),
                ScapyAttr(type=25, value=b"lab.example.net."),
                ScapyAttr(type=20, length=4, value="10.3.0.99"),  # P-CSCF: kept, not decoded
                ScapyAttr(type=28675, value=b"\x01\x02"),  # Cisco Unity (IKEv1): unknown
            ],
        )
    )
    decoded = ConfigAttributes.parse(body)
    assert decoded.cfg_type == CfgType.CFG_REPLY
    assert decoded.requested == []
    assert decoded.ip4_addresses == [IPv4Address("10.3.0.1")]
    assert decoded.ip4_netmasks == [IPv4Address("255.255.255.0")]
    assert decoded.ip4_dns == [IPv4Address("10.3.0.53")]
    assert decoded.ip4_nbns == [IPv4Address("10.3.0.54")]
    assert decoded.ip4_dhcp == [IPv4Address("10.3.0.67")]
    assert decoded.address_expiry == 3600
    assert decoded.ip6_addresses == [IPv6Interface("fd00::7/120")]
    assert decoded.ip6_dns == [IPv6Address("fd00::53")]
    assert decoded.ip6_dhcp == [IPv6Address("fd00::67")]
    assert decoded.ip4_subnets == [IPv4Network("10.1.0.0/16")]
    assert decoded.ip6_subnets == [IPv6Network("fd01::/48")]
    assert decoded.supported_attributes == [1, 3, 25]
    assert decoded.dns_domains == ["corp.example.com", "lab.example.net."]
    assert decoded.other == [
        CpAttribute(T.P_CSCF_IP4_ADDRESS, bytes([10, 3, 0, 99])),
        CpAttribute(28675, b"\x01\x02"),
    ]
    assert decoded.virtual_ips == [IPv4Address("10.3.0.1"), IPv6Address("fd00::7")]
    assert decoded.dns_servers == [IPv4Address("10.3.0.53"), IPv6Address("fd00::53")]
    lines = decoded.describe()
    assert "INTERNAL_IP4_SUBNET 10.1.0.0/16" in lines
    assert "INTERNAL_DNS_DOMAIN corp.example.com" in lines
    assert "P_CSCF_IP4_ADDRESS 0a030063 (not interpreted)" in lines
    assert "type 28675 0102 (not interpreted)" in lines
    # what we re-encode, scapy dissects into the same values
    again = ConfigAttributes.from_payload(CpPayload.parse(decoded.to_payload().serialize()))
    assert again == decoded


def test_our_reply_dissected_by_scapy() -> None:
    reply = ConfigAttributes(
        CfgType.CFG_REPLY,
        ip4_addresses=[IPv4Address("10.3.0.1")],
        ip4_netmasks=[IPv4Address("255.255.255.255")],
        ip4_dns=[IPv4Address("10.3.0.53"), IPv4Address("10.3.0.54")],
        ip6_addresses=[IPv6Interface("fd00::1/128")],
        ip6_dns=[IPv6Address("fd00::53")],
        ip4_subnets=[IPv4Network("192.168.10.0/24")],
        ip6_subnets=[IPv6Network("fd10::/64")],
        dns_domains=["example.org"],
        supported_attributes=[T.INTERNAL_IP4_ADDRESS, T.INTERNAL_DNS_DOMAIN],
    )
    body = reply.to_payload().serialize()
    header = struct.pack("!BBH", 0, 0, 4 + len(body))
    dissected = IKEv2_CP(header + body)
    assert dissected.CFGType == 2 and dissected.length == 4 + len(body)
    fields = [(a.type, a.length, a.value) for a in dissected.attributes]
    assert fields == [
        (1, 4, "10.3.0.1"),
        (2, 4, "255.255.255.255"),
        (3, 4, "10.3.0.53"),
        (3, 4, "10.3.0.54"),
        (13, 8, bytes([192, 168, 10, 0, 255, 255, 255, 0])),
        (8, 17, IPv6Address("fd00::1").packed + bytes([128])),
        (10, 16, "fd00::53"),
        (15, 17, IPv6Address("fd10::").packed + bytes([64])),
        (25, 11, b"example.org"),
        (14, 4, bytes.fromhex("00010019")),
    ]


def test_registered_with_the_payload_parser() -> None:
    request = cp_request([IPv4Address("0.0.0.0"), IPv6Address("::")])
    body = request.to_payload().serialize()
    parsed = parse_payload_body(PayloadType.CP, body)
    assert isinstance(parsed, CpPayload)
    assert ConfigAttributes.from_payload(parsed) == request
    assert body == bytes.fromhex("01000000000100000008000000030000000a0000")


def test_request_for_a_previous_address() -> None:
    request = cp_request([IPv4Address("10.3.0.9")], dns=False)
    assert request.requested == [] and request.ip4_addresses == [IPv4Address("10.3.0.9")]
    assert request.virtual_ips == [IPv4Address("10.3.0.9")]


def test_reserved_bit_ignored_and_cfg_set_ack() -> None:
    # R bit set on an attribute (RFC 7296 sec. 3.15.1: reserved, ignored on receipt)
    decoded = ConfigAttributes.parse(bytes.fromhex("0400000080010000"))
    assert decoded.cfg_type == CfgType.CFG_ACK and decoded.requested == [1]
    assert ConfigAttributes.parse(bytes.fromhex("03000000")).cfg_type == CfgType.CFG_SET
    assert ConfigAttributes.parse(bytes.fromhex("09000000")).cfg_type == 9  # kept as int


# --- malformed values ------------------------------------------------------------------

BAD = {
    "IP4 address of 3 octets": (T.INTERNAL_IP4_ADDRESS, bytes(3)),
    "IP4 DNS of 16 octets": (T.INTERNAL_IP4_DNS, bytes(16)),
    "IP6 address without prefix": (T.INTERNAL_IP6_ADDRESS, bytes(16)),
    "IP6 address prefix 129": (T.INTERNAL_IP6_ADDRESS, bytes(16) + b"\x81"),
    "IP6 subnet of 16 octets": (T.INTERNAL_IP6_SUBNET, bytes(16)),
    "IP6 DNS of 4 octets": (T.INTERNAL_IP6_DNS, bytes(4)),
    "IP4 subnet of 4 octets": (T.INTERNAL_IP4_SUBNET, bytes(4)),
    "IP4 subnet holey netmask": (T.INTERNAL_IP4_SUBNET, bytes([10, 0, 0, 0, 255, 0, 255, 0])),
    "supported attributes odd": (T.SUPPORTED_ATTRIBUTES, bytes(3)),
    "expiry of 2 octets": (T.INTERNAL_ADDRESS_EXPIRY, bytes(2)),
    "domain with a newline": (T.INTERNAL_DNS_DOMAIN, b"evil.com\nnameserver 6.6.6.6"),
    "domain with a NUL": (T.INTERNAL_DNS_DOMAIN, b"example.com\x00"),
    "domain not ASCII": (T.INTERNAL_DNS_DOMAIN, "bücher.de".encode()),
    "domain empty label": (T.INTERNAL_DNS_DOMAIN, b"a..b"),
    "domain too long": (T.INTERNAL_DNS_DOMAIN, b"a." * 130),
}


@pytest.mark.parametrize("kind, value", BAD.values(), ids=BAD.keys())
def test_malformed_attribute_refused(kind: CpAttributeType, value: bytes) -> None:
    payload = CpPayload(CfgType.CFG_REPLY, [CpAttribute(kind, value)])
    with pytest.raises(ProtocolError) as caught:
        ConfigAttributes.from_payload(payload)
    assert caught.value.notify == NotifyType.INVALID_SYNTAX
    assert kind.name in caught.value.reason


@pytest.mark.parametrize("kind", [T.APPLICATION_VERSION, T.SUPPORTED_ATTRIBUTES, 5])
def test_single_valued_attribute_repeated(kind: int) -> None:
    value = b"\x00\x01\x00\x02"
    payload = CpPayload(CfgType.CFG_REPLY, [CpAttribute(kind, value), CpAttribute(kind, value)])
    with pytest.raises(ProtocolError, match="repeated"):
        ConfigAttributes.from_payload(payload)


def test_check_domain() -> None:
    assert check_domain("example.com") == "example.com"
    assert check_domain(".") == "."
    assert check_domain("_sip._tcp.example.com")
    for bad in ("", "exa mple.com", "x" * 64 + ".com", "a;b"):
        with pytest.raises(ValueError):
            check_domain(bad)


# --- round trips -----------------------------------------------------------------------

v4 = st.builds(IPv4Address, st.integers(0, 2**32 - 1))
v6 = st.builds(IPv6Address, st.integers(0, 2**128 - 1))
label = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=20)
domains = st.lists(label, min_size=1, max_size=4).map(".".join)
known = [t for t in CpAttributeType]


@st.composite
def v4_networks(draw: st.DrawFn) -> IPv4Network:
    return IPv4Network((draw(v4), draw(st.integers(0, 32))), strict=False)


@st.composite
def v6_networks(draw: st.DrawFn) -> IPv6Network:
    return IPv6Network((draw(v6), draw(st.integers(0, 128))), strict=False)


@st.composite
def v6_interfaces(draw: st.DrawFn) -> IPv6Interface:
    return IPv6Interface((draw(v6), draw(st.integers(0, 128))))


UNDECODED = st.integers(0, 0x7FFF).filter(
    lambda t: t not in (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 13, 14, 15, 25)
)

attribute_sets = st.builds(
    ConfigAttributes,
    cfg_type=st.sampled_from(list(CfgType)),
    requested=st.lists(st.sampled_from(known), max_size=4),
    ip4_addresses=st.lists(v4, max_size=2),
    ip4_netmasks=st.lists(v4, max_size=1),
    ip4_dns=st.lists(v4, max_size=2),
    ip4_nbns=st.lists(v4, max_size=1),
    ip4_dhcp=st.lists(v4, max_size=1),
    ip4_subnets=st.lists(v4_networks(), max_size=2),
    ip6_addresses=st.lists(v6_interfaces(), max_size=2),
    ip6_dns=st.lists(v6, max_size=2),
    ip6_dhcp=st.lists(v6, max_size=1),
    ip6_subnets=st.lists(v6_networks(), max_size=2),
    address_expiry=st.none() | st.integers(0, 2**32 - 1),
    application_version=st.none() | st.text(st.characters(max_codepoint=255), min_size=1),
    supported_attributes=st.none() | st.lists(st.sampled_from(known), min_size=1, max_size=5),
    dns_domains=st.lists(domains, max_size=2),
    other=st.lists(
        st.builds(CpAttribute, type=UNDECODED, value=st.binary(min_size=1, max_size=20)),
        max_size=2,
    ),
)


@settings(max_examples=300, deadline=None)
@given(attribute_sets)
def test_round_trip(attributes: ConfigAttributes) -> None:
    body = attributes.to_payload().serialize()
    parsed = CpPayload.parse(body)
    assert parsed.serialize() == body
    assert ConfigAttributes.from_payload(parsed) == attributes


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_random_bytes_only_protocol_error(body: bytes) -> None:
    try:
        decoded = ConfigAttributes.parse(body)
    except ProtocolError:
        return
    # what we accepted re-encodes into something we accept with the same meaning
    assert ConfigAttributes.from_payload(decoded.to_payload()) == decoded
    decoded.describe()
