"""IKE_SA_INIT + IKE_AUTH between two engines in memory (PSK, one Child SA)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from ikev2.enums import EncrId, ExchangeType, NotifyType
from ikev2.events import (
    AuthenticationFailed,
    ChildSaEstablished,
    IkeSaDeleted,
    IkeSaEstablished,
    NegotiationFailed,
    PeerUnreachable,
)
from ikev2.message import parse_message
from tests.engine.harness import established_pair, make_pair


def child_pair(net) -> tuple[ChildSaEstablished, ChildSaEstablished]:
    (a,) = net.events("a", ChildSaEstablished)
    (b,) = net.events("b", ChildSaEstablished)
    return a, b


def assert_children_match(a: ChildSaEstablished, b: ChildSaEstablished) -> None:
    assert a.spi_in == b.spi_out and a.spi_out == b.spi_in
    assert a.encr_key_out == b.encr_key_in and a.encr_key_in == b.encr_key_out
    assert a.integ_key_out == b.integ_key_in and a.integ_key_in == b.integ_key_out
    assert a.encr_key_in != a.encr_key_out
    assert a.local_ts == b.remote_ts and a.remote_ts == b.local_ts


def test_psk_establishes_ike_and_child() -> None:
    net, _ = established_pair()
    (ike_a,) = net.events("a", IkeSaEstablished)
    (ike_b,) = net.events("b", IkeSaEstablished)
    assert (ike_a.spi_i, ike_a.spi_r) == (ike_b.spi_i, ike_b.spi_r)
    assert ike_a.initiator and not ike_b.initiator
    assert ike_a.remote_id == "b.example" and ike_b.remote_id == "a.example"
    assert ike_a.encr == EncrId.ENCR_AES_GCM_16 and ike_a.encr_key_bits == 256
    assert not ike_a.udp_encap and ike_a.remote_addr == ("192.0.2.2", 500)
    a, b = child_pair(net)
    assert_children_match(a, b)
    assert a.encr == EncrId.ENCR_AES_GCM_16 and len(a.encr_key_in) == 36  # 256 bit + salt
    assert [str(ts) for ts in a.local_ts] == ["10.1.0.0/16"]
    assert a.mode == "tunnel" and not a.udp_encap
    # Keys never show up in a printed event.
    assert a.encr_key_in.hex() not in repr(a)
    assert net.a.sas()[0].state == "ESTABLISHED"


def test_encap_fakes_nat_and_moves_to_4500() -> None:
    """strongSwan's encap=yes / kernel-libipsec: NAT_DETECTION_SOURCE_IP never matches,
    both sides float to 4500 and flag the Child SA udp_encap (RFC 7296 sec. 2.23)."""
    net = make_pair(a_encap=True)
    ports: list[tuple[str, int, int, int]] = []

    def tap(datagram, direction):
        msg = parse_message(datagram.data)
        ports.append(
            (
                ExchangeType(msg.header.exchange).name,
                datagram.local_addr[1],
                datagram.remote_addr[1],
                msg.header.response,
            )
        )
        return datagram.data

    net.tap = tap
    net.a.initiate("conn", "net", now=0.0)
    net.pump()
    a, b = child_pair(net)
    assert a.udp_encap and b.udp_encap
    assert a.local_addr == ("192.0.2.1", 4500) and a.remote_addr == ("192.0.2.2", 4500)
    assert b.remote_addr == ("192.0.2.1", 4500) and b.local_addr == ("192.0.2.2", 4500)
    (ike_a,) = net.events("a", IkeSaEstablished)
    (ike_b,) = net.events("b", IkeSaEstablished)
    assert ike_a.nat_local and ike_b.nat_remote and not ike_b.nat_local
    assert ports[:2] == [("IKE_SA_INIT", 500, 500, False), ("IKE_SA_INIT", 500, 500, True)]
    assert ports[2:] == [("IKE_AUTH", 4500, 4500, False), ("IKE_AUTH", 4500, 4500, True)]


def test_real_nat_detected_from_addresses() -> None:
    """A NAT rewriting A's address: B sees a mismatching source hash (A behind NAT)."""
    net = make_pair()
    net.b.configs[0].remote_addrs = ["%any"]
    public = ("198.51.100.9", 40000)
    public_4500 = ("198.51.100.9", 40001)

    def deliver(datagram, direction):
        return datagram.data

    net.tap = deliver
    original_pump = net.pump

    # Rewrite addresses as a NAT would: replace A's source, and B's destination back.
    def nat_pump(limit: int = 10000) -> None:
        for _ in range(limit):
            batch = [("a->b", d) for d in net.a.datagrams_to_send(net.now)]
            batch += [("b->a", d) for d in net.b.datagrams_to_send(net.now)]
            if not batch:
                net._drain_events()
                return
            for direction, d in batch:
                if direction == "a->b":
                    source = public if d.local_addr[1] == 500 else public_4500
                    net.b.receive_datagram(d.data, source, d.remote_addr, net.now)
                else:
                    inside = ("192.0.2.1", 500 if d.remote_addr == public else 4500)
                    net.a.receive_datagram(d.data, d.local_addr, inside, net.now)
            net._drain_events()

    net.pump = nat_pump  # type: ignore[method-assign]  # this network rewrites like a NAT
    net.a.initiate("conn", "net", now=0.0)
    net.pump()
    del original_pump
    (ike_a,) = net.events("a", IkeSaEstablished)
    (ike_b,) = net.events("b", IkeSaEstablished)
    assert ike_a.nat_local and not ike_a.nat_remote
    assert ike_b.nat_remote and not ike_b.nat_local
    assert ike_b.remote_addr == public_4500  # follows the NAT mapping of IKE_AUTH
    a, b = child_pair(net)
    assert a.udp_encap and b.udp_encap


def test_initiator_retransmits_responder_never_does() -> None:
    net = make_pair()
    dropped: list[str] = []

    def drop_first_auth(datagram, direction):
        msg = parse_message(datagram.data)
        if msg.header.exchange == ExchangeType.IKE_AUTH and not dropped:
            dropped.append(direction)
            return True
        return False

    net.drop = drop_first_auth
    net.a.initiate("conn", "net", now=0.0)
    net.pump()
    assert not net.events("a", IkeSaEstablished)
    assert net.a.get_timer() == pytest.approx(4.0)  # strongSwan's retransmit_timeout
    # The responder has only a half-open timeout, no retransmission of its own.
    assert net.b.get_timer() == pytest.approx(30.0)
    net.run_until(4.0)
    assert net.events("a", IkeSaEstablished) and net.events("b", IkeSaEstablished)


def test_retransmitted_request_answered_from_cache_byte_for_byte() -> None:
    net = make_pair()
    net.duplicate = True
    responses: dict[tuple[int, int], set[bytes]] = {}

    def record(datagram, direction):
        msg = parse_message(datagram.data)
        if msg.header.response:
            key = (msg.header.exchange, msg.header.message_id)
            responses.setdefault(key, set()).add(datagram.data)
        return datagram.data

    net.tap = record
    net.a.initiate("conn", "net", now=0.0)
    net.pump()
    assert all(len(variants) == 1 for variants in responses.values())
    # Every request was delivered twice, but each side installed the Child SA once.
    assert len(net.events("a", ChildSaEstablished)) == 1
    assert len(net.events("b", ChildSaEstablished)) == 1


def test_retransmission_schedule_and_give_up() -> None:
    net = make_pair()
    sent: list[float] = []

    def black_hole(datagram, direction):
        sent.append(net.now)
        return None  # never delivered

    net.tap = black_hole
    net.a.initiate("conn", "net", now=0.0)
    net.run_until(400.0)
    # 4, 7.2, 12.96, 23.33, 41.99 s between sends, then 75.58 s until giving up.
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(sent)]
    assert gaps == [4.0, 7.2, 12.96, 23.33, 41.99]
    (unreachable,) = net.events("a", PeerUnreachable)
    assert unreachable.action == "clear"
    (deleted,) = net.events("a", IkeSaDeleted)
    assert "no response after 5 retransmissions" in deleted.reason
    assert net.a.sas() == []


def test_psk_mismatch_explained() -> None:
    net = make_pair(psk_a=b"a different key, also long enough!!")
    net.a.initiate("conn", "net", now=0.0)
    net.pump()
    (failure_b,) = net.events("b", AuthenticationFailed)
    assert failure_b.check == "psk-mismatch"
    assert "PSK" in failure_b.reason and "a.example" in failure_b.reason
    (failure_a,) = net.events("a", AuthenticationFailed)
    assert failure_a.check == "peer-rejected"
    assert not net.events("a", ChildSaEstablished) and not net.events("b", ChildSaEstablished)
    assert net.a.sas() == [] and net.b.sas() == []


def test_no_proposal_chosen_explained() -> None:
    net = make_pair(
        a_proposals=["aes128-sha256-modp2048"], b_proposals=["aes256gcm16-prfsha384-x25519"]
    )
    net.a.initiate("conn", "net", now=0.0)
    net.pump()
    (refused,) = net.events("b", NegotiationFailed)
    assert refused.notify == NotifyType.NO_PROPOSAL_CHOSEN and not refused.received
    # Each transform type with both sides' offers, in strongSwan syntax.
    assert "encryption algorithm: we offer aes256gcm16; peer offers aes128" in refused.reason
    assert "KE method: we offer x25519; peer offers modp2048" in refused.reason
    (failed,) = net.events("a", NegotiationFailed)
    assert failed.received and failed.notify == NotifyType.NO_PROPOSAL_CHOSEN
    assert "aes128-sha256-modp2048" in failed.reason
    assert net.a.sas() == [] and net.b.sas() == []


def test_child_no_proposal_keeps_ike_sa() -> None:
    net, _ = established_pair(a_esp=["aes128gcm16"], b_esp=["chacha20poly1305"])
    assert net.events("a", IkeSaEstablished) and net.events("b", IkeSaEstablished)
    (refused,) = net.events("b", NegotiationFailed)
    assert refused.notify == NotifyType.NO_PROPOSAL_CHOSEN and refused.child is None
    assert "we offer chacha20poly1305; peer offers aes128gcm16" in refused.reason
    (failed,) = net.events("a", NegotiationFailed)
    assert failed.child == "net" and "NO_PROPOSAL_CHOSEN" in failed.reason
    assert not net.events("a", ChildSaEstablished)
    assert net.a.sas()[0].state == "ESTABLISHED"


def test_ts_unacceptable_explained_and_narrowing() -> None:
    net, _ = established_pair(b_remote_ts=["172.16.0.0/12"])
    (refused,) = net.events("b", NegotiationFailed)
    assert refused.notify == NotifyType.TS_UNACCEPTABLE
    assert "10.1.0.0/16" in refused.reason and "172.16.0.0/12" in refused.reason
    (failed,) = net.events("a", NegotiationFailed)
    assert "TS_UNACCEPTABLE" in failed.reason and "10.1.0.0/16" in failed.reason

    # Narrowing: A proposes 10.0.0.0/8 <-> 0.0.0.0/0, B allows only its /24s.
    net, _ = established_pair(
        a_local_ts=["10.0.0.0/8"],
        a_remote_ts=["0.0.0.0/0"],
        b_local_ts=["10.2.3.0/24"],
        b_remote_ts=["10.1.7.0/24"],
    )
    a, b = child_pair(net)
    assert [str(ts) for ts in a.local_ts] == ["10.1.7.0/24"]
    assert [str(ts) for ts in a.remote_ts] == ["10.2.3.0/24"]
    assert_children_match(a, b)


def test_wrong_message_id_response_dropped() -> None:
    net = make_pair()
    seen = []

    def bump_auth_response(datagram, direction):
        msg = parse_message(datagram.data)
        if msg.header.exchange == ExchangeType.IKE_AUTH and msg.header.response and not seen:
            seen.append(1)
            data = bytearray(datagram.data)
            data[20:24] = (7).to_bytes(4, "big")  # Message ID 7 instead of 1
            return bytes(data)
        return datagram.data

    net.tap = bump_auth_response
    net.a.initiate("conn", "net", now=0.0)
    net.pump()
    assert not net.events("a", IkeSaEstablished)
    net.run_until(4.0)  # the retransmitted request is answered from B's cache
    assert net.events("a", IkeSaEstablished)


def test_transport_mode_and_several_suites() -> None:
    for ike, esp in [
        ("aes128-sha256-ecp256", "aes128-sha256"),
        ("chacha20poly1305-prfsha512-x448", "chacha20poly1305"),
        ("aes256-sha384-modp3072", "aes256gcm16"),
    ]:
        net, _ = established_pair(proposals=[ike], esp=[esp], mode="transport")
        a, b = child_pair(net)
        assert_children_match(a, b)
        assert a.mode == "transport" == b.mode


def test_invalid_ke_payload_retry_with_requested_group() -> None:
    net, _ = established_pair(
        a_proposals=["aes256gcm16-prfsha256-x25519-ecp256"],
        b_proposals=["aes256gcm16-prfsha256-ecp256"],
    )
    (ike_a,) = net.events("a", IkeSaEstablished)
    assert ike_a.ke == 19
    assert net.b.counters.get("init_refused_INVALID_KE_PAYLOAD") == 1
    a, b = child_pair(net)
    assert_children_match(a, b)


def test_cookie_demanded_above_threshold() -> None:
    from ikev2.config import DispatcherConfig

    net = make_pair()
    net.b.limits = DispatcherConfig(cookie_threshold=0)
    net.a.initiate("conn", "net", now=0.0)
    net.pump()
    assert net.b.counters.get("cookie_demanded") == 1
    a, b = child_pair(net)
    assert_children_match(a, b)


@pytest.mark.parametrize(
    "id_a,id_b",
    [
        ("192.0.2.1", "192.0.2.2"),  # ID_IPV4_ADDR
        ("2001:db8::1", "2001:db8::2"),  # ID_IPV6_ADDR
        ("alice@example.org", "gw@example.org"),  # ID_RFC822_ADDR
        ("C=CH, O=aioipsec, CN=a", "C=CH, O=aioipsec, CN=b"),  # ID_DER_ASN1_DN
        ("keyid:0a0b0c", "keyid:0d0e0f"),  # ID_KEY_ID
        ("a.example", "b.example"),  # ID_FQDN
    ],
)
def test_identity_types_with_psk(id_a: str, id_b: str) -> None:
    net = make_pair(a_local_id=id_a, a_remote_id=id_b, b_local_id=id_b, b_remote_id=id_a)
    net.a.initiate("conn", "net", now=0.0)
    net.pump()
    (ike_a,) = net.events("a", IkeSaEstablished)
    (ike_b,) = net.events("b", IkeSaEstablished)
    assert ike_b.remote_id == ike_a.local_id
    assert ike_a.remote_id == ike_b.local_id
    child_pair(net)


def test_identity_not_configured_is_refused() -> None:
    net = make_pair(b_remote_id="someone-else.example")
    net.a.initiate("conn", "net", now=0.0)
    net.pump()
    (failure,) = net.events("b", AuthenticationFailed)
    assert failure.check == "identity-mismatch" and "a.example" in failure.reason


def test_initial_contact_replaces_stale_sa_and_tfc_notify() -> None:
    net, _ = established_pair()
    # A "reboots": a fresh engine with the same config contacts B again.
    from ikev2.dispatcher import Dispatcher
    from tests.engine.harness import psk_lookup_for, seeded_rng

    config = net.a.configs[0]
    config.children[0].tfc_padding = False
    net.a = Dispatcher([config], psk_lookup_for(), rng=seeded_rng(99))
    net.a.initiate("conn", "net", now=1.0)
    net.pump()
    deleted = net.events("b", IkeSaDeleted)
    assert [e.reason for e in deleted] == ["replaced (INITIAL_CONTACT)"]
    assert len(net.b.sas()) == 1
    (new_b,) = [e for e in net.events("b", ChildSaEstablished)][1:]
    assert new_b.tfc_padding is False  # A said ESP_TFC_PADDING_NOT_SUPPORTED


def test_late_ike_sa_init_copy_does_not_open_a_second_sa() -> None:
    net = make_pair()
    first: list[bytes] = []

    def keep_init(datagram, direction):
        if not first:
            first.append(datagram.data)
        return datagram.data

    net.tap = keep_init
    net.a.initiate("conn", "net", now=0.0)
    net.pump()
    net.b.receive_datagram(first[0], ("192.0.2.1", 500), ("192.0.2.2", 500), net.now)
    assert net.b.datagrams_to_send(net.now) == []
    assert len(net.b.sas()) == 1


@pytest.mark.parametrize(
    "proposal",
    [
        "aes128-sha256-modp2048",  # MODP exponent and AES-CBC IVs
        "aes256-sha384-prfsha384-ecp384",  # ECP scalar
        "aes256gcm16-prfsha256-ecp256-ke1_mlkem768",  # ML-KEM seed (A) and m (B)
        "aes256gcm16-prfsha256-x448",
    ],
)
def test_seeded_rng_reproduces_every_datagram(proposal: str) -> None:
    """The injected rng is the only source of randomness (``aioipsec explain --seed``):
    the same seeds give the same bytes on the wire, key exchanges and IVs included."""

    def wire(seed: int) -> list[bytes]:
        datagrams: list[bytes] = []

        def record(datagram: Any, direction: str) -> bytes:
            datagrams.append(datagram.data)
            return datagram.data

        net = make_pair(seed, proposals=[proposal], esp=["aes128-sha256"])
        net.tap = record
        net.a.initiate("conn", "net", now=net.now)
        net.pump()
        assert net.events("a", ChildSaEstablished)
        return datagrams

    first = wire(5)
    assert len(first) >= 4
    assert wire(5) == first
    assert wire(6) != first
