"""NAT_DETECTION_SOURCE_IP of the IKE SAs we initiate hashes the address the host sends
from (``Dispatcher(source_address=...)``), whatever ``local_addrs`` says (issue 19)."""

from __future__ import annotations

import pytest

from ikev2.dispatcher import Dispatcher
from ikev2.enums import NotifyType
from ikev2.message import parse_message
from ikev2.payloads import NotifyPayload
from ikev2.tasks.ike_natd import natd_hash
from tests.engine.harness import ADDR_B, make_config, psk_lookup_for, seeded_rng


def _source_hash(dispatcher: Dispatcher) -> tuple[bytes, tuple[str, int]]:
    (datagram,) = dispatcher.datagrams_to_send(0.0)
    message = parse_message(datagram.data)
    (notify,) = [
        p
        for p in message.payloads
        if isinstance(p, NotifyPayload) and p.notify_type == NotifyType.NAT_DETECTION_SOURCE_IP
    ]
    expected = natd_hash(message.header.spi_i, bytes(8), tuple(datagram.local_addr))
    assert notify.data == expected
    return notify.data, tuple(datagram.local_addr)


@pytest.mark.parametrize("local", ["%any", "%any4", "198.51.100.0/24", "198.51.100.7"])
def test_source_hash_is_the_routing_tables_source(local):
    config = make_config(local=local, remote=ADDR_B, local_id="a", remote_id="b")
    asked: list[str] = []

    def source(remote_host: str) -> str:
        asked.append(remote_host)
        return "192.0.2.77"

    dispatcher = Dispatcher([config], psk_lookup_for(), rng=seeded_rng(1), source_address=source)
    dispatcher.initiate("conn", now=0.0)
    _, local_addr = _source_hash(dispatcher)
    assert asked == [ADDR_B]
    assert local_addr == ("192.0.2.77", 500)


def test_without_a_route_the_configured_address_is_hashed():
    config = make_config(local="198.51.100.7", remote=ADDR_B, local_id="a", remote_id="b")
    dispatcher = Dispatcher(
        [config], psk_lookup_for(), rng=seeded_rng(1), source_address=lambda host: None
    )
    dispatcher.initiate("conn", now=0.0)
    assert _source_hash(dispatcher)[1] == ("198.51.100.7", 500)
