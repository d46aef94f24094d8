"""aioipsec.dhcp's codec (RFC 2131 sec. 2, RFC 2132): round trip, strongSwan's identity
derived hardware address, and any octets parsed or refused with DhcpError only."""

from __future__ import annotations

import random
from ipaddress import IPv4Address

import pytest

from aioipsec.dhcp import (
    BOOTREPLY,
    BOOTREQUEST,
    MAGIC_COOKIE,
    DhcpError,
    DhcpMessage,
    DhcpSettings,
    MessageType,
    Option,
    hardware_address,
)


def test_round_trip() -> None:
    message = DhcpMessage(
        BOOTREPLY, 0x1234ABCD, b"\x7a\xa7\x01\x02\x03\x04", yiaddr=IPv4Address("10.3.0.34"),
        giaddr=IPv4Address("10.3.0.1"),
        options=[(Option.MESSAGE_TYPE, b"\x02"), (Option.SERVER_ID, bytes((10, 6, 0, 2))),
                 (Option.DNS_SERVER, bytes((10, 3, 0, 53, 10, 3, 0, 54)))],
    )  # fmt: skip
    data = message.serialize()
    assert len(data) == 300 and data[236:240] == MAGIC_COOKIE
    parsed = DhcpMessage.parse(data)
    assert parsed == message
    assert parsed.message_type == MessageType.OFFER
    assert parsed.server_id == IPv4Address("10.6.0.2")
    assert parsed.addresses(Option.DNS_SERVER) == [
        IPv4Address("10.3.0.53"),
        IPv4Address("10.3.0.54"),
    ]


def test_identity_lease_gives_one_mac_per_identity() -> None:
    carol = hardware_address("carol@example.org", True, 1)
    assert carol == hardware_address("carol@example.org", True, 2)
    assert carol[:2] == b"\x7a\xa7" and len(carol) == 6  # locally administered, unicast
    assert carol != hardware_address("dave@example.org", True, 1)
    assert hardware_address("carol@example.org", False, 7) == b"\x7a\xa7\0\0\0\x07"


def test_broadcast_or_relay_by_server_address() -> None:
    assert DhcpSettings().broadcast and DhcpSettings(server="10.1.255.255").broadcast
    assert not DhcpSettings(server="10.6.0.2").broadcast


@pytest.mark.parametrize(
    "data",
    [b"", b"\x02" * 239, bytes(236) + b"\0\0\0\0", bytes(236) + MAGIC_COOKIE + b"\x35",
     bytes(236) + MAGIC_COOKIE + b"\x35\x05\x01"],
)  # fmt: skip
def test_malformed_is_dhcp_error(data: bytes) -> None:
    with pytest.raises(DhcpError):
        DhcpMessage.parse(data)


def test_random_octets_raise_only_dhcp_error() -> None:
    rng = random.Random(2131)
    good = DhcpMessage(BOOTREQUEST, 1, b"\x7a\xa7\0\0\0\1",
                       options=[(Option.MESSAGE_TYPE, b"\x01")]).serialize()  # fmt: skip
    for _ in range(3000):
        data = bytearray(good)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        data = data[: rng.randint(0, len(data))]
        try:
            parsed = DhcpMessage.parse(bytes(data))
        except DhcpError:
            continue
        _ = parsed.message_type, parsed.server_id, parsed.addresses(Option.DNS_SERVER)
