"""IKE follows a NAT rebinding (RFC 7296 sec. 2.23, RFC 3948 sec. 3.5).

A is "behind a NAT" (``encap = yes`` makes it send NAT-D hashes that cannot match, as
strongSwan does, so B sees the peer behind a NAT and A believes it is behind one). The NAT's
mapping for A then changes: A's next messages reach B from a new source port. B must send
its responses and its own requests there from then on, and say so with an
IkeSaAddressChanged event, but only for authenticated, new messages; A (behind the NAT) and
peers without a NAT never follow.
"""

from __future__ import annotations

from ikev2.dispatcher import Dispatcher
from ikev2.events import IkeSaAddressChanged, IkeSaEstablished

from .harness import ADDR_A, established_pair

NEW_MAPPING = (ADDR_A, 31337)


def deliver(sender: Dispatcher, receiver: Dispatcher, now: float, source=None) -> list:
    """Everything ``sender`` has queued, received by ``receiver`` (from ``source`` instead
    of the sender's own address when given: the NAT's new mapping). Returns the datagrams."""
    datagrams = sender.datagrams_to_send(now)
    for datagram in datagrams:
        remote = datagram.local_addr if source is None else source
        receiver.receive_datagram(datagram.data, remote, datagram.remote_addr, now)
    return datagrams


def events(dispatcher: Dispatcher, kind: type) -> list:
    found = []
    while (event := dispatcher.next_event()) is not None:
        if isinstance(event, kind):
            found.append(event)
    return found


def b_view(net) -> tuple[int, tuple[str, int]]:
    (info,) = net.b.sas()
    return info.ike_sa_id, tuple(info.remote_addr)


def test_a_request_from_a_new_mapping_moves_the_ike_sa() -> None:
    net, ike_a = established_pair(a_encap=True)
    (established,) = net.events("b", IkeSaEstablished)
    assert established.nat_remote and not established.nat_local
    ike_b, before = b_view(net)
    assert before == (ADDR_A, 4500)

    net.a.send_liveness(ike_a, now=net.now)
    deliver(net.a, net.b, net.now, source=NEW_MAPPING)
    (moved,) = events(net.b, IkeSaAddressChanged)
    assert (moved.ike_sa_id, moved.old_remote_addr, moved.remote_addr) == (
        ike_b,
        before,
        NEW_MAPPING,
    )
    # The response goes to the new mapping, and so does B's next request.
    (response,) = net.b.datagrams_to_send(net.now)
    assert tuple(response.remote_addr) == NEW_MAPPING
    assert b_view(net)[1] == NEW_MAPPING
    net.b.send_liveness(ike_b, now=net.now)
    (request,) = net.b.datagrams_to_send(net.now)
    assert tuple(request.remote_addr) == NEW_MAPPING


def test_a_response_from_a_new_mapping_moves_the_ike_sa() -> None:
    net, _ike_a = established_pair(a_encap=True)
    ike_b, _before = b_view(net)
    net.b.send_liveness(ike_b, now=net.now)
    deliver(net.b, net.a, net.now)
    events(net.b, IkeSaAddressChanged)
    deliver(net.a, net.b, net.now, source=NEW_MAPPING)  # A's response, through the new mapping
    (moved,) = events(net.b, IkeSaAddressChanged)
    assert moved.remote_addr == NEW_MAPPING and b_view(net)[1] == NEW_MAPPING


def test_unauthenticated_or_replayed_messages_do_not_move_it() -> None:
    net, ike_a = established_pair(a_encap=True)
    _ike_b, before = b_view(net)
    net.a.send_liveness(ike_a, now=net.now)
    (request,) = net.a.datagrams_to_send(net.now)
    # A forged copy (last octet of the ICV flipped) from elsewhere: dropped, no move.
    forged = request.data[:-1] + bytes([request.data[-1] ^ 1])
    net.b.receive_datagram(forged, ("198.51.100.66", 4500), request.remote_addr, net.now)
    assert events(net.b, IkeSaAddressChanged) == [] and b_view(net)[1] == before
    # The real one from the usual address: answered, no move.
    net.b.receive_datagram(request.data, request.local_addr, request.remote_addr, net.now)
    net.b.datagrams_to_send(net.now)
    assert events(net.b, IkeSaAddressChanged) == []
    # A replay of it from another address (sec. 2.23: only new messages count): answered
    # from the response cache, but the IKE SA stays where it was.
    net.b.receive_datagram(request.data, ("198.51.100.66", 4500), request.remote_addr, net.now)
    assert events(net.b, IkeSaAddressChanged) == [] and b_view(net)[1] == before


def test_the_side_behind_the_nat_and_peers_without_nat_do_not_follow() -> None:
    # A is behind the NAT: B's response arriving from elsewhere must not move A.
    net, ike_a = established_pair(a_encap=True)
    (info_a,) = net.a.sas()
    net.a.send_liveness(ike_a, now=net.now)
    deliver(net.a, net.b, net.now)
    deliver(net.b, net.a, net.now, source=("192.0.2.99", 4500))
    assert events(net.a, IkeSaAddressChanged) == []
    assert tuple(net.a.sas()[0].remote_addr) == tuple(info_a.remote_addr)
    # No NAT anywhere: nobody follows (sec. 2.23 applies to NATed peers only).
    net, ike_a = established_pair()
    _ike_b, before = b_view(net)
    net.a.send_liveness(ike_a, now=net.now)
    deliver(net.a, net.b, net.now, source=(ADDR_A, 40000))
    assert events(net.b, IkeSaAddressChanged) == [] and b_view(net)[1] == before


def test_the_data_plane_reports_a_move_seen_in_esp() -> None:
    """Dispatcher.peer_address_seen: ESP (authenticated, new) from a new mapping moves the
    IKE SA the same way, so IKE and ESP agree; B behind no NAT follows, A does not."""
    net, ike_a = established_pair(a_encap=True)
    ike_b, before = b_view(net)
    net.b.peer_address_seen(ike_b, NEW_MAPPING, net.now)
    (moved,) = events(net.b, IkeSaAddressChanged)
    assert (moved.old_remote_addr, moved.remote_addr) == (before, NEW_MAPPING)
    net.b.peer_address_seen(ike_b, NEW_MAPPING, net.now)  # already there: no event
    assert events(net.b, IkeSaAddressChanged) == []
    net.b.send_liveness(ike_b, now=net.now)
    (request,) = net.b.datagrams_to_send(net.now)
    assert tuple(request.remote_addr) == NEW_MAPPING
    (info_a,) = net.a.sas()
    net.a.peer_address_seen(ike_a, ("192.0.2.99", 4500), net.now)
    assert events(net.a, IkeSaAddressChanged) == []
    assert net.a.sas()[0].remote_addr == info_a.remote_addr
    net.b.peer_address_seen(12345, NEW_MAPPING, net.now)  # unknown SA: ignored
