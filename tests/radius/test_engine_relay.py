"""The engine's external EAP authenticator (``remote auth = eap-radius``) between two real
Dispatchers: the gateway relays the client's EAP to a backend and answers later.

The backend here is our own EAP-MSCHAPv2 server (``ikev2.eap.mschapv2``), driven as a RADIUS
server drives its method: it sees the relayed Responses and hands back Requests, then
Success with the MSK (MasterReceiveKey | MasterSendKey, what MS-MPPE-Recv/Send-Key carry)
and the peer's groups. tests/radius/test_freeradius.py runs the same against FreeRADIUS.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from aioipsec.pools import PoolManager, parse_pool
from ikev2.config import AuthConfig
from ikev2.eap.external import ExternalEapAnswer
from ikev2.eap.mschapv2 import MsChapV2Server
from ikev2.eap.packet import EapPacket
from ikev2.enums import EapCode
from ikev2.events import (
    AuthenticationFailed,
    ChildSaEstablished,
    EapRelay,
    IkeSaEstablished,
    VirtualIpsAssigned,
)
from tests.engine.harness import Network, seeded_rng
from tests.engine.test_eap_ike import PASSWORDS, client, gateway


@dataclass
class Backend:
    """The EAP server behind the gateway (our MS-CHAPv2 server, as FreeRADIUS runs its)."""

    groups: tuple[str, ...] = ()
    method: MsChapV2Server = field(
        default_factory=lambda: MsChapV2Server(PASSWORDS.get, random=seeded_rng(5))
    )
    identifier: int = 40
    seen: list[EapRelay] = field(default_factory=list)

    def answer(self, relay: EapRelay) -> ExternalEapAnswer:
        self.seen.append(relay)
        self.identifier += 1
        if relay.first:
            return ExternalEapAnswer(self.method.start(self.identifier).serialize())
        packet = EapPacket.parse(relay.message)
        out = self.method.process(packet, self.identifier)
        if out is not None:
            return ExternalEapAnswer(out.serialize())
        if not self.method.succeeded:
            failure = EapPacket(EapCode.FAILURE, packet.identifier).serialize()
            return ExternalEapAnswer(failure, reason="the RADIUS server rejected it")
        assert self.method.msk is not None
        success = EapPacket(EapCode.SUCCESS, packet.identifier).serialize()
        return ExternalEapAnswer(success, msk=self.method.msk[:32], groups=self.groups)


def relayed(net: Network, start: int) -> list[EapRelay]:
    return [e for e in net.events_b[start:] if isinstance(e, EapRelay)]


def run(net: Network, backend: Backend, *, retransmit: bool = False) -> None:
    """Connect, answering each EapRelay from BACKEND; with RETRANSMIT the client's IKE_AUTH
    retransmission fires while every answer is pending."""
    net.a.initiate("home", "net", now=net.now)
    net.pump()
    seen = 0
    while pending := relayed(net, seen):
        assert len(pending) == 1, "one relay per EAP round"
        (relay,) = pending
        seen = len(net.events_b)
        if retransmit:
            delivered = net.delivered
            net.now += 5.0  # past the client's first retransmission timeout
            net.a.handle_timer(net.now)
            net.pump()
            assert net.delivered > delivered, "the client did not retransmit"
            assert not relayed(net, seen), "a retransmission started a second round trip"
            seen = len(net.events_b)
        net.b.external_eap_answer(relay.ike_sa_id, backend.answer(relay), net.now)
        net.pump()


def radius_gateway(groups: list[str] | None = None, pools: PoolManager | None = None):
    return gateway(auth="eap-radius", pools=pools, remote={"groups": groups or []})


def test_relayed_eap_establishes_with_the_server_msk() -> None:
    pools = PoolManager([parse_pool("rw_pool", {"addrs": "10.3.0.0/28"})])
    net = Network(client(vips=["0.0.0.0"]), radius_gateway(pools=pools))
    backend = Backend()
    run(net, backend)
    assert net.events("a", IkeSaEstablished) and net.events("b", IkeSaEstablished)
    assert net.events("a", ChildSaEstablished) and net.events("b", ChildSaEstablished)
    first = backend.seen[0]
    assert first.first and first.identity == "carol" and first.peer_id == "carol@example.org"
    assert [r.first for r in backend.seen[1:]] == [False] * (len(backend.seen) - 1)
    (leased,) = net.events("b", VirtualIpsAssigned)
    assert leased.identity == "carol"


def test_retransmitted_request_while_pending_starts_no_second_round_trip() -> None:
    net = Network(client(), radius_gateway())
    backend = Backend()
    run(net, backend, retransmit=True)
    assert net.events("a", IkeSaEstablished) and net.events("b", IkeSaEstablished)
    assert len(backend.seen) == 3  # identity, challenge response, success acknowledgement


def test_wrong_password_is_refused_by_the_backend() -> None:
    net = Network(client(password="wrong"), radius_gateway())
    run(net, Backend())
    (refused,) = net.events("b", AuthenticationFailed)
    assert refused.check == "eap" and "for 'carol' failed" in refused.reason
    assert not net.events("a", IkeSaEstablished) and not net.events("b", IkeSaEstablished)


def test_groups_admit_a_member_and_refuse_others() -> None:
    net = Network(client(), radius_gateway(groups=["Research"]))
    run(net, Backend(groups=("Research",)))
    assert net.events("b", IkeSaEstablished)
    net = Network(client(), radius_gateway(groups=["Research"]))
    run(net, Backend(groups=("Accounting",)))
    (refused,) = net.events("b", AuthenticationFailed)
    assert "groups [Accounting]" in refused.reason and "admits only [Research]" in refused.reason
    assert not net.events("a", IkeSaEstablished) and not net.events("b", IkeSaEstablished)


def test_no_answer_from_the_server_fails_the_ike_sa() -> None:
    net = Network(client(), radius_gateway())
    net.a.initiate("home", "net", now=net.now)
    net.pump()
    (relay,) = relayed(net, 0)
    net.b.external_eap_answer(relay.ike_sa_id, ExternalEapAnswer.failed("no answer"), net.now)
    net.pump()
    (refused,) = net.events("b", AuthenticationFailed)
    assert "no answer" in refused.reason
    # a late answer for the failed SA is ignored
    net.b.external_eap_answer(relay.ike_sa_id, ExternalEapAnswer.failed("late"), net.now)
    assert not net.events("b", IkeSaEstablished)


def test_the_connection_admitting_the_peers_groups_is_taken() -> None:
    # strongSwan's rw-eap-md5-class-radius: one connection per group, the same identities.
    research = radius_gateway(groups=["Research"])
    (first,) = research.configs
    second = copy.deepcopy(first)
    second.name = "accounting"
    second.remote = AuthConfig(auth="eap-radius", id="%any", groups=["Accounting"])
    research.set_configs([first, second])
    net = Network(client(), research)
    run(net, Backend(groups=("Accounting",)))
    (established,) = net.events("b", IkeSaEstablished)
    assert established.connection == "accounting"
    assert net.events("b", ChildSaEstablished)


def test_a_response_from_the_server_fails_the_conversation() -> None:
    net = Network(client(), radius_gateway())
    net.a.initiate("home", "net", now=net.now)
    net.pump()
    (relay,) = relayed(net, 0)
    bogus = ExternalEapAnswer(EapPacket(EapCode.RESPONSE, 1, 1, b"x").serialize())
    net.b.external_eap_answer(relay.ike_sa_id, bogus, net.now)
    net.pump()
    (refused,) = net.events("b", AuthenticationFailed)
    assert "a Response is the peer's" in refused.reason
    assert not net.events("a", IkeSaEstablished) and not net.events("b", IkeSaEstablished)
