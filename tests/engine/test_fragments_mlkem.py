"""RFC 7383 fragmentation and RFC 9370 additional key exchanges (ML-KEM) end to end."""

from __future__ import annotations

from ikev2.enums import ExchangeType, KeId, PayloadType
from ikev2.events import ChildSaEstablished, ChildSaRekeyed, IkeSaEstablished, IkeSaRekeyed
from ikev2.message import parse_message
from tests.engine.harness import established_pair, make_pair
from tests.engine.test_establish import assert_children_match, child_pair


def exchanges_seen(net) -> list[tuple[str, bool, int]]:
    seen: list[tuple[str, bool, int]] = []

    def tap(datagram, direction):
        msg = parse_message(datagram.data)
        seen.append(
            (
                ExchangeType(msg.header.exchange).name,
                msg.header.response,
                int(msg.payloads[-1].TYPE) if msg.payloads else 0,
            )
        )
        return datagram.data

    net.tap = tap
    return seen


def test_ike_auth_fragmented_when_too_big() -> None:
    net = make_pair(fragment_size=160)
    seen = exchanges_seen(net)
    net.a.initiate("conn", "net", now=0.0)
    net.pump()
    auth = [s for s in seen if s[0] == "IKE_AUTH"]
    assert len(auth) > 2 and all(s[2] == PayloadType.SKF for s in auth)
    assert all(s[2] != PayloadType.SKF for s in seen if s[0] == "IKE_SA_INIT")
    a, b = child_pair(net)
    assert_children_match(a, b)


def test_fragments_survive_duplication_and_reordering() -> None:
    net = make_pair(fragment_size=160)
    net.duplicate = True
    net.reorder = True
    net.a.initiate("conn", "net", now=0.0)
    net.run_until(60.0)
    a, b = child_pair(net)
    assert_children_match(a, b)


def test_no_fragmentation_when_peer_does_not_support_it() -> None:
    net = make_pair(a_fragment_size=160, b_fragmentation="no")
    seen = exchanges_seen(net)
    net.a.initiate("conn", "net", now=0.0)
    net.pump()
    assert all(s[2] == PayloadType.SK for s in seen if s[0] == "IKE_AUTH")
    (ike_a,) = net.events("a", IkeSaEstablished)
    assert not ike_a.fragmentation


def test_ml_kem_additional_key_exchange() -> None:
    proposals = ["aes256gcm16-prfsha256-x25519-ke1_mlkem768"]
    net = make_pair(proposals=proposals)
    seen = exchanges_seen(net)
    net.a.initiate("conn", "net", now=0.0)
    net.pump()
    assert [s[0] for s in seen] == [
        "IKE_SA_INIT",
        "IKE_SA_INIT",
        "IKE_INTERMEDIATE",
        "IKE_INTERMEDIATE",
        "IKE_AUTH",
        "IKE_AUTH",
    ]
    (ike_a,) = net.events("a", IkeSaEstablished)
    assert ike_a.additional_ke == (KeId.ML_KEM_768,)
    a, b = child_pair(net)
    assert_children_match(a, b)


def test_ml_kem_with_fragmented_intermediate_and_rekeys() -> None:
    """ML-KEM-1024 key shares exceed the fragment size: IKE_INTERMEDIATE is fragmented too
    (RFC 9242 sec. 3.4), and IntAuth is computed over the unfragmented form."""
    proposals = ["aes256gcm16-prfsha384-ecp384-ke1_mlkem1024"]
    net = make_pair(proposals=proposals, fragment_size=1000)
    seen = exchanges_seen(net)
    ike_id = net.a.initiate("conn", "net", now=0.0)
    net.pump()
    intermediate = [s for s in seen if s[0] == "IKE_INTERMEDIATE"]
    assert any(s[2] == PayloadType.SKF for s in intermediate)
    a, b = child_pair(net)
    assert_children_match(a, b)
    net.a.rekey_child(ike_id, a.child_sa_id, net.now)
    net.pump()
    assert net.events("b", ChildSaRekeyed)
    net.a.rekey_ike(ike_id, net.now)
    net.pump()
    assert net.events("b", IkeSaRekeyed)


def test_ml_kem_only_on_one_side_is_optional() -> None:
    """RFC 9370: ADDKE with NONE offered is optional; a peer without it still connects."""
    net, _ = established_pair(
        a_proposals=["aes256gcm16-prfsha256-x25519-ke1_mlkem768-ke1_none"],
        b_proposals=["aes256gcm16-prfsha256-x25519"],
    )
    (ike_a,) = net.events("a", IkeSaEstablished)
    assert ike_a.additional_ke == ()
    assert net.events("a", ChildSaEstablished)


def test_ike_rekey_after_ml_kem_does_not_negotiate_addke() -> None:
    net, ike_id = established_pair(proposals=["aes256gcm16-prfsha256-x25519-ke1_mlkem768"])
    net.a.rekey_ike(ike_id, net.now)
    net.pump()
    (rekeyed,) = net.events("a", IkeSaRekeyed)
    assert net.a.ike_sa(rekeyed.ike_sa_id).additional_ke == []
