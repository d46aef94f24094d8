"""Structured fuzzing of authenticated exchanges: an established (or half-way) peer sends
requests whose payload lists are mangled (payloads dropped, duplicated, replaced, values
changed), really encrypted with its keys so they reach the exchange handlers. The other
engine must answer with a defined reaction or drop, never raise, and keep working."""

from __future__ import annotations

import copy
import random

import pytest

from ikev2.enums import ExchangeType, NotifyType, ProtocolId
from ikev2.events import ChildSaEstablished
from ikev2.message import parse_message
from ikev2.payloads import (
    AuthPayload,
    DeletePayload,
    IdPayload,
    KePayload,
    NoncePayload,
    NotifyPayload,
    SaPayload,
    TsPayload,
)
from tests.engine.harness import ADDR_A, ADDR_B, established_pair, make_pair

A = (ADDR_A, 500)
B = (ADDR_B, 500)


def mutations(payloads: list, rng: random.Random) -> list:
    """A mangled copy of a request's payload list."""
    out = copy.deepcopy(payloads)
    choice = rng.randrange(8)
    if choice == 0 and out:
        del out[rng.randrange(len(out))]
    elif choice == 1 and out:
        out.insert(rng.randrange(len(out) + 1), copy.deepcopy(rng.choice(out)))
    elif choice == 2 and len(out) > 1:
        rng.shuffle(out)
    elif choice == 3:
        for payload in out:
            if isinstance(payload, SaPayload) and payload.proposals:
                proposal = payload.proposals[0]
                proposal.spi = rng.choice([b"", b"\0\0\0\0", b"\1" * 8, rng.randbytes(4)])
                proposal.protocol = rng.choice([0, 1, 2, 3, 9])
    elif choice == 4:
        for payload in out:
            if isinstance(payload, TsPayload) and payload.selectors:
                selector = payload.selectors[0]
                selector.start_address, selector.end_address = (
                    selector.end_address,
                    selector.start_address,
                )
                selector.ip_protocol = rng.randrange(256)
    elif choice == 5:
        for payload in out:
            if isinstance(payload, KePayload):
                payload.group = rng.choice([0, 1, 14, 19, 31, 36, 1025])
                payload.data = rng.randbytes(rng.randrange(0, 80))
            if isinstance(payload, NoncePayload):
                payload.nonce = rng.randbytes(rng.choice([0, 1, 15, 300]))
    elif choice == 6:
        out.append(
            NotifyPayload(
                notify_type=rng.choice(list(NotifyType)),
                protocol=rng.choice([0, 1, 3]),
                spi=rng.randbytes(rng.choice([0, 4, 8])),
                data=rng.randbytes(rng.randrange(0, 10)),
            )
        )
    else:
        for payload in out:
            if isinstance(payload, IdPayload):
                payload.id_type = rng.choice([1, 2, 3, 5, 9, 11, 13, 200])
                payload.data = rng.randbytes(rng.randrange(0, 20))
            if isinstance(payload, AuthPayload):
                payload.method = rng.choice([1, 2, 9, 14, 99])
    return out


def valid_requests(net, ike_id) -> list[tuple[ExchangeType, list]]:
    sa = net.a.ike_sa(ike_id)
    (child,) = [e for e in net.events_a if isinstance(e, ChildSaEstablished)]
    from ikev2.tasks.child_create import ChildCreateTask
    from ikev2.tasks.child_rekey import ChildRekeyTask
    from ikev2.tasks.ike_rekey import IkeRekeyTask

    create = ChildCreateTask(sa.config.children[0]).build(sa, net.now)
    rekey = ChildRekeyTask(sa.children[child.child_sa_id]).build(sa, net.now)
    sa.children[child.child_sa_id].state = type(sa.children[child.child_sa_id].state)("INSTALLED")
    ike_rekey = IkeRekeyTask().build(sa, net.now)
    sa.state = type(sa.state)("ESTABLISHED")
    return [
        (ExchangeType.CREATE_CHILD_SA, create),
        (ExchangeType.CREATE_CHILD_SA, rekey),
        (ExchangeType.CREATE_CHILD_SA, ike_rekey),
        (
            ExchangeType.INFORMATIONAL,
            [DeletePayload(protocol=ProtocolId.ESP, spis=[child.spi_in.to_bytes(4, "big")])],
        ),
        (ExchangeType.INFORMATIONAL, [NotifyPayload(notify_type=NotifyType.INVALID_SYNTAX)]),
    ]


@pytest.mark.parametrize("seed", range(4))
def test_mangled_requests_on_established_sa(seed: int) -> None:
    rng = random.Random(seed)
    net, ike_id = established_pair(seed=seed)
    net.check_data_plane = False  # A's engine is bypassed: its data plane is not modelled
    sa_a = net.a.ike_sa(ike_id)
    requests = valid_requests(net, ike_id)
    for _ in range(60):
        exchange, payloads = rng.choice(requests)
        mangled = mutations(payloads, rng)
        try:
            datagrams = sa_a._encode(exchange, False, sa_a.next_request_id, mangled)
        except (ValueError, TypeError, OverflowError, KeyError):
            continue  # not even encodable: nothing a peer could send
        for data in datagrams:
            net.b.receive_datagram(data, A, B, net.now)
        sa_a.next_request_id += 1
        net.b.datagrams_to_send(net.now)  # answers go nowhere; A's window is ours to drive
        assert net.b.counters.get("internal_error", 0) == 0
    # Whatever state the abuse left B in, a new IKE SA from A still comes up.
    net.a.initiate("conn", "net", now=net.now)
    net.pump()
    assert len([e for e in net.events_b if isinstance(e, ChildSaEstablished)]) >= 1


@pytest.mark.parametrize("seed", range(4))
def test_mangled_ike_auth_requests(seed: int) -> None:
    """IKE_AUTH requests with mangled payloads reach the responder's handler."""
    rng = random.Random(seed)
    for _ in range(15):
        net = make_pair(seed=seed)
        # Let IKE_SA_INIT through, keep A's own IKE_AUTH request from arriving.
        net.drop = lambda datagram, direction: (
            direction == "a->b" and parse_message(datagram.data).header.exchange != 34
        )
        ike_id = net.a.initiate("conn", "net", now=0.0)
        net.pump()
        sa_a = net.a.ike_sa(ike_id)
        from ikev2.tasks.ike_auth import IkeAuthTask

        payloads = IkeAuthTask("net").build(sa_a, net.now)
        mangled = mutations(payloads, rng)
        try:
            datagrams = sa_a._encode(ExchangeType.IKE_AUTH, False, 1, mangled)
        except (ValueError, TypeError, OverflowError, KeyError):
            continue
        for data in datagrams:
            net.b.receive_datagram(data, A, B, net.now)
        net.b.datagrams_to_send(net.now)
        assert net.b.counters.get("internal_error", 0) == 0
