"""RFC 7383 fragmentation and RFC 9370 additional key exchanges (ML-KEM) end to end."""

from __future__ import annotations

from ikev2.enums import ExchangeType, KeId, PayloadType
from ikev2.events import ChildSaEstablished, ChildSaRekeyed, IkeSaEstablished, IkeSaRekeyed
from ikev2.message import parse_message
from tests.engine.harness import established_pair, make_pair, rekey_child_then_ike
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
    rekey_child_then_ike(net, ike_id, a.child_sa_id)


def test_ml_kem_only_on_one_side_is_optional() -> None:
    """RFC 9370: ADDKE with NONE offered is optional; a peer without it still connects."""
    net, _ = established_pair(
        a_proposals=["aes256gcm16-prfsha256-x25519-ke1_mlkem768-ke1_none"],
        b_proposals=["aes256gcm16-prfsha256-x25519"],
    )
    (ike_a,) = net.events("a", IkeSaEstablished)
    assert ike_a.additional_ke == ()
    assert net.events("a", ChildSaEstablished)


def test_rekeys_with_ml_kem_use_ike_followup_ke() -> None:
    """RFC 9370 sec. 2.2.4: CREATE_CHILD_SA with additional key exchanges continues in
    IKE_FOLLOWUP_KE; new Child SA, Child rekey and IKE rekey, from both sides."""
    net, ike_id = established_pair(
        proposals=["aes256gcm16-prfsha256-x25519-ke1_mlkem768"],
        esp=["aes256gcm16-x25519-ke1_mlkem768"],
    )
    seen = exchanges_seen(net)
    (child,) = net.events("a", ChildSaEstablished)
    net.a.rekey_child(ike_id, child.child_sa_id, net.now)
    net.pump()
    assert [s[0] for s in seen][:4] == [
        "CREATE_CHILD_SA",
        "CREATE_CHILD_SA",
        "IKE_FOLLOWUP_KE",
        "IKE_FOLLOWUP_KE",
    ]
    (rekeyed,) = net.events("b", ChildSaRekeyed)
    assert rekeyed.new.spi_in == net.events("a", ChildSaRekeyed)[0].new.spi_out
    assert rekeyed.new.encr_key_in == net.events("a", ChildSaRekeyed)[0].new.encr_key_out
    net.a.create_child(ike_id, "net", net.now)
    net.pump()
    assert len(net.events("b", ChildSaEstablished)) == 2
    (info_b,) = net.b.sas()
    net.b.rekey_ike(info_b.ike_sa_id, net.now)
    net.pump()
    (ike_rekeyed,) = net.events("a", IkeSaRekeyed)
    assert net.a.ike_sa(ike_rekeyed.ike_sa_id).keys is not None
    # The rekeyed IKE SA works: rekey a Child SA through it.
    new_id = ike_rekeyed.ike_sa_id
    child_id = net.a.sas()[0].children[0]["child_sa_id"]
    net.a.rekey_child(new_id, child_id, net.now)
    net.pump()
    assert len(net.events("b", ChildSaRekeyed)) == 2
    assert seen.count(("IKE_FOLLOWUP_KE", False, int(PayloadType.SK))) >= 4


def test_followup_ke_with_unknown_link_gets_state_not_found() -> None:
    from ikev2.enums import NotifyType
    from ikev2.message import decrypt_message
    from ikev2.payloads import KePayload, NotifyPayload

    net, ike_id = established_pair(proposals=["aes256gcm16-prfsha256-x25519-ke1_mlkem768"])
    sa_a = net.a.ike_sa(ike_id)
    request = [
        NotifyPayload(notify_type=NotifyType.ADDITIONAL_KEY_EXCHANGE, data=b"nope"),
        KePayload(group=KeId.ML_KEM_768, data=bytes(1184)),
    ]
    for data in sa_a._encode(ExchangeType.IKE_FOLLOWUP_KE, False, sa_a.next_request_id, request):
        net.b.receive_datagram(data, ("192.0.2.1", 500), ("192.0.2.2", 500), net.now)
    (answer,) = net.b.datagrams_to_send(net.now)
    assert sa_a.cipher_in is not None
    reply = decrypt_message(parse_message(answer.data), sa_a.cipher_in)
    assert [int(p.notify_type) for p in reply.payloads] == [NotifyType.STATE_NOT_FOUND]


def test_simultaneous_rekeys_with_ml_kem_converge() -> None:
    from tests.engine.test_lifecycle import assert_consistent, installed_children

    for seed in range(1, 5):
        net, ike_id = established_pair(
            seed=seed,
            proposals=["aes256gcm16-prfsha256-x25519-ke1_mlkem768"],
            esp=["aes256gcm16-x25519-ke1_mlkem768"],
        )
        (child,) = net.events("a", ChildSaEstablished)
        (info_b,) = net.b.sas()
        net.a.rekey_child(ike_id, child.child_sa_id, net.now)
        net.b.rekey_child(info_b.ike_sa_id, info_b.children[0]["child_sa_id"], net.now)
        net.run_until(net.now + 60.0)
        assert len(installed_children(net, "a")) == 1
        assert_consistent(net)
        net.a.rekey_ike(net.a.sas()[0].ike_sa_id, net.now)
        net.b.rekey_ike(net.b.sas()[0].ike_sa_id, net.now)
        net.run_until(net.now + 60.0)
        (info_a,) = net.a.sas()
        (info_b,) = net.b.sas()
        assert (info_a.spi_i, info_a.spi_r) == (info_b.spi_i, info_b.spi_r)
        assert info_a.state == info_b.state == "ESTABLISHED"
        assert_consistent(net)
