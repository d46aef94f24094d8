"""RFC 5685 redirection between real engines: one client and two or three gateways, all
``Dispatcher`` objects in memory on a virtual clock; the "network" delivers datagrams by
destination address. The gateways' placement is a fixed answer per gateway (what the
cluster's placement returns, without the cluster).

Covered: REDIRECT in the IKE_SA_INIT response (with Ni), in the IKE_AUTH response (no
Child SA) and in an INFORMATIONAL request (make-before-break), REDIRECTED_FROM, FQDN
gateways resolved by the caller, and each bad input of issue 15: a wrong nonce, a loop, a
gateway outside accept_redirect_to, an unprotected REDIRECT, a malformed identity, an
FQDN that does not resolve; each is logged and leaves the current IKE SA up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pytest

from ikev2.config import DispatcherConfig
from ikev2.dispatcher import Dispatcher
from ikev2.enums import ExchangeType, GatewayIdType, NotifyType
from ikev2.errors import ProtocolError, UsageError
from ikev2.events import (
    ChildSaDeleted,
    ChildSaEstablished,
    IkeSaDeleted,
    IkeSaEstablished,
    IkeSaRedirected,
    RedirectRefused,
)
from ikev2.message import IkeHeader, parse_message, serialize_message
from ikev2.payloads import NotifyPayload
from ikev2.redirect import GatewayIdentity, RedirectData, RedirectedFromData
from ikev2.tasks import Payload, Task, TaskContext
from tests.engine import harness
from tests.engine.harness import make_config, psk_lookup_for, seeded_rng

CLIENT = "198.51.100.10"
GW1, GW2, GW3 = "192.0.2.1", "192.0.2.2", "192.0.2.3"


@dataclass
class Placement:
    """A fixed answer (the cluster's placement, reduced to one target)."""

    init: str | None = None
    auth: str | None = None

    def at_init(self, remote_addr: tuple[str, int], redirected_from: str | None) -> str | None:
        return self.init

    def at_auth(self, remote_id: str, remote_addr: tuple[str, int]) -> str | None:
        return self.auth


@dataclass
class Mesh(harness.Mesh):
    """The client (node "client", at CLIENT) and the gateways (named by their address)."""

    tap: Any = None  # tap(source, datagram) -> bytes | None (None: dropped)
    sent: list[tuple[str, Any]] = field(default_factory=list)

    def deliver(self, source: str, datagram: Any) -> tuple[Dispatcher, bytes] | None:
        self.sent.append((source, datagram))
        data = datagram.data if self.tap is None else self.tap(source, datagram)
        host = datagram.remote_addr[0]
        target = self.nodes.get("client" if host == CLIENT else host)
        return None if data is None or target is None else (target, data)

    def run_until(self, deadline: float) -> None:
        self.pump()
        while True:
            timers = [t for n in self.nodes.values() if (t := n.get_timer()) is not None]
            if not timers or min(timers) > deadline:
                break
            self.now = max(self.now, min(timers))
            for node in self.nodes.values():
                node.handle_timer(self.now)
            self.pump()
        self.now = deadline
        self.pump()

    def of(self, name: str, kind: type) -> list[Any]:
        return [e for e in self.events.get(name, []) if isinstance(e, kind)]

    def established_with(self, gateway: str) -> list[Any]:
        return [
            sa
            for sa in self.nodes["client"].sas()
            if sa.state == "ESTABLISHED" and sa.remote_addr[0] == gateway
        ]


def mesh(
    gateways: tuple[str, ...] = (GW1, GW2),
    *,
    client_limits: DispatcherConfig | None = None,
    seed: int = 3,
) -> Mesh:
    client_config = make_config(
        local=CLIENT, remote=GW1, local_id="client.example", remote_id="gw.example",
        local_ts=["10.1.0.0/16"], remote_ts=["10.2.0.0/16"],
    )  # fmt: skip
    nodes = {
        "client": Dispatcher(
            [client_config], psk_lookup_for(), rng=seeded_rng(seed), limits=client_limits
        )
    }
    for index, address in enumerate(gateways):
        config = make_config(
            local=address, remote="%any", local_id="gw.example", remote_id="%any",
            local_ts=["10.2.0.0/16"], remote_ts=["10.1.0.0/16"],
        )  # fmt: skip
        nodes[address] = Dispatcher(
            [config], psk_lookup_for(), rng=seeded_rng(seed + 100 * (index + 1))
        )
    return Mesh(nodes)


def placement(net: Mesh, gateway: str, **kwargs: str | None) -> None:
    net.nodes[gateway].redirects.placement = Placement(**kwargs)


def connect(net: Mesh) -> int:
    ike_id = net.nodes["client"].initiate("conn", "net", now=net.now)
    net.pump()
    return ike_id


def init_requests_to(net: Mesh, gateway: str) -> list[Any]:
    out = []
    for source, datagram in net.sent:
        if source == "client" and datagram.remote_addr[0] == gateway:
            msg = parse_message(datagram.data)
            if msg.header.exchange == ExchangeType.IKE_SA_INIT and not msg.header.response:
                out.append(msg)
    return out


def notify(msg: Any, kind: NotifyType) -> NotifyPayload | None:
    return next(
        (p for p in msg.payloads if isinstance(p, NotifyPayload) and p.notify_type == kind), None
    )


# ---------------------------------------------------------------- the codecs


@pytest.mark.parametrize(
    ("text", "kind", "encoded"),
    [
        ("192.0.2.7", GatewayIdType.IPV4, "0104c0000207"),
        ("2001:db8::1", GatewayIdType.IPV6, "021020010db8000000000000000000000001"),
        ("GW2.Example.NET.", GatewayIdType.FQDN, "030f" + b"gw2.example.net".hex()),
    ],
)
def test_gateway_identity_round_trip(text: str, kind: GatewayIdType, encoded: str) -> None:
    gateway = GatewayIdentity.from_text(text)
    assert gateway.kind is kind
    assert gateway.encode().hex() == encoded
    nonce = bytes(range(32))
    assert RedirectData.parse(RedirectData(gateway, nonce).serialize()) == RedirectData(
        gateway, nonce
    )
    assert RedirectedFromData.parse(gateway.encode()).gateway == gateway


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        (b"", "at least the type and length"),
        (b"\x01\x05\xc0\x00\x02\x07\x01", "IPV4 gateway identity of 5 octets"),
        (b"\x02\x04\xc0\x00\x02\x07", "IPV6 gateway identity of 4 octets"),
        (b"\x03\x04a b.", "not a host name"),
        (b"\x03\x08example", "says 8 octets, 7 follow"),
        (b"\x07\x01x", "unknown gateway identity type 7"),
        (b"\x01\x04\xc0\x00\x02\x07" + b"n" * 8, "Nonce Data of 8 octets"),
    ],
)
def test_malformed_redirect_data_is_a_protocol_error(data: bytes, complaint: str) -> None:
    with pytest.raises(ProtocolError, match=complaint):
        RedirectData.parse(data)


def test_from_text_refuses_what_is_not_a_gateway() -> None:
    with pytest.raises(ValueError, match="neither an IP address nor a host name"):
        GatewayIdentity.from_text("not a host")


# ---------------------------------------------------------------- the three points


def test_redirect_in_ike_sa_init_response() -> None:
    net = mesh()
    placement(net, GW1, init=GW2)
    connect(net)
    assert net.established_with(GW2) and not net.established_with(GW1)
    assert net.nodes[GW1].sas() == []  # RFC 5685 sec. 4.2: the gateway kept no state
    assert net.nodes[GW1].counters["redirected_at_init"] == 1
    (redirected,) = net.of("client", IkeSaRedirected)
    assert (redirected.exchange, redirected.address) == ("IKE_SA_INIT", GW2)
    # The first IKE_SA_INIT announced support, the one to GW2 names where we came from.
    first = init_requests_to(net, GW1)[0]
    assert notify(first, NotifyType.REDIRECT_SUPPORTED) is not None
    second = init_requests_to(net, GW2)[0]
    origin = notify(second, NotifyType.REDIRECTED_FROM)
    assert origin is not None and notify(second, NotifyType.REDIRECT_SUPPORTED) is None
    assert RedirectedFromData.parse(bytes(origin.data)).gateway.value == GW1
    assert len(net.of("client", ChildSaEstablished)) == 1


def test_redirect_in_ike_auth_response_creates_no_child_sa() -> None:
    net = mesh()
    placement(net, GW1, auth=GW2)
    connect(net)
    assert net.established_with(GW2)
    assert net.of(GW1, ChildSaEstablished) == [] and net.of(GW1, IkeSaEstablished) == []
    assert net.nodes[GW1].sas() == []
    (redirected,) = net.of("client", IkeSaRedirected)
    assert redirected.exchange == "IKE_AUTH"
    (child,) = net.of("client", ChildSaEstablished)
    assert child.remote_addr[0] == GW2


def test_redirect_in_informational_is_make_before_break() -> None:
    net = mesh()
    ike_id = connect(net)
    (old_child,) = net.of("client", ChildSaEstablished)
    gateway_sa = net.nodes[GW1].sas()[0].ike_sa_id
    net.nodes[GW1].redirect(gateway_sa, GW2, net.now)
    net.pump()
    client_events = net.events["client"]
    new_up = next(
        i for i, e in enumerate(client_events)
        if isinstance(e, ChildSaEstablished) and e.remote_addr[0] == GW2
    )  # fmt: skip
    old_down = next(
        i for i, e in enumerate(client_events)
        if isinstance(e, ChildSaDeleted) and e.spi_in == old_child.spi_in
    )  # fmt: skip
    assert new_up < old_down  # the new tunnel stood before the old one went
    old_gone = [e for e in net.of("client", IkeSaDeleted) if e.ike_sa_id == ike_id]
    assert old_gone and old_gone[0].reason == f"redirected to {GW2}"
    assert net.established_with(GW2) and not net.established_with(GW1)
    assert net.nodes[GW1].sas() == []


def test_fqdn_gateway_is_resolved_by_the_caller() -> None:
    net = mesh()
    connect(net)
    net.nodes[GW1].redirect(net.nodes[GW1].sas()[0].ike_sa_id, "gw2.example.net", net.now)
    net.pump()
    (redirected,) = net.of("client", IkeSaRedirected)
    assert (redirected.gateway, redirected.address) == ("gw2.example.net", None)
    assert net.established_with(GW1)  # nothing moves before the name is resolved
    net.nodes["client"].redirect_resolved(redirected.ike_sa_id, GW2, net.now)
    net.pump()
    assert net.established_with(GW2) and not net.established_with(GW1)


def test_three_gateways_chain_and_redirected_from() -> None:
    net = mesh((GW1, GW2, GW3))
    placement(net, GW1, init=GW2)
    placement(net, GW2, auth=GW3)
    connect(net)
    assert net.established_with(GW3)
    assert [e.exchange for e in net.of("client", IkeSaRedirected)] == ["IKE_SA_INIT", "IKE_AUTH"]
    origin = notify(init_requests_to(net, GW3)[0], NotifyType.REDIRECTED_FROM)
    assert origin is not None
    assert RedirectedFromData.parse(bytes(origin.data)).gateway.value == GW2


# ---------------------------------------------------------------- bad input


def test_wrong_nonce_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    """An off-path REDIRECT (it cannot know Ni) is ignored; the real answer still counts."""
    net = mesh()
    forged: list[bytes] = []

    def tap(source: str, datagram: Any) -> bytes | None:
        msg = parse_message(datagram.data)
        if source == GW1 and msg.header.exchange == ExchangeType.IKE_SA_INIT and not forged:
            header = IkeHeader(
                spi_i=msg.header.spi_i, spi_r=bytes(8), exchange=ExchangeType.IKE_SA_INIT,
                response=True, message_id=0,
            )  # fmt: skip
            data = RedirectData(GatewayIdentity.from_text(GW3), b"\x55" * 32).serialize()
            forged.append(
                serialize_message(header, [NotifyPayload(NotifyType.REDIRECT, data=data)])
            )
            return forged[0]
        return bytes(datagram.data)

    net.tap = tap
    with caplog.at_level(logging.WARNING):
        connect(net)
        net.run_until(30)
    assert forged and net.of("client", IkeSaRedirected) == []
    assert net.established_with(GW1)
    assert "its nonce is not our Ni" in caplog.text


def test_redirect_loop_stops_at_the_limit(caplog: pytest.LogCaptureFixture) -> None:
    net = mesh(client_limits=DispatcherConfig(redirect_limit=3))
    placement(net, GW1, init=GW2)
    placement(net, GW2, init=GW1)
    with caplog.at_level(logging.WARNING):
        connect(net)
    assert len(net.of("client", IkeSaRedirected)) == 3
    (refused,) = net.of("client", RedirectRefused)
    assert "redirect loop" in refused.reason and "3 times within 300 s" in refused.reason
    assert net.nodes["client"].sas() == []  # nothing established: it failed, visibly
    assert "redirect loop" in caplog.text


def test_redirect_loop_limit_forgets_old_redirects() -> None:
    net = mesh(client_limits=DispatcherConfig(redirect_limit=1, redirect_period=60))
    connect(net)
    for target, source in ((GW2, GW1), (GW1, GW2)):
        net.run_until(net.now + 61)
        sa = net.nodes[source].sas()[0].ike_sa_id
        net.nodes[source].redirect(sa, target, net.now)
        net.pump()
        assert net.established_with(target)
    assert net.of("client", RedirectRefused) == []


def test_gateway_outside_accept_redirect_to_keeps_the_tunnel(
    caplog: pytest.LogCaptureFixture,
) -> None:
    net = mesh(client_limits=DispatcherConfig(accept_redirect_to=["192.0.2.3/32", ".example.org"]))
    connect(net)
    with caplog.at_level(logging.WARNING):
        net.nodes[GW1].redirect(net.nodes[GW1].sas()[0].ike_sa_id, GW2, net.now)
        net.pump()
    (refused,) = net.of("client", RedirectRefused)
    assert "not in accept_redirect_to" in refused.reason
    assert net.established_with(GW1) and net.of("client", ChildSaDeleted) == []
    assert "the IKE SA stays as it is" in caplog.text
    # The allowed ones are followed: a listed address and a name under a listed domain.
    net.nodes[GW1].redirect(net.nodes[GW1].sas()[0].ike_sa_id, "vpn3.example.org", net.now)
    net.pump()
    assert net.of("client", IkeSaRedirected)[-1].gateway == "vpn3.example.org"


def test_unresolvable_fqdn_keeps_the_tunnel(caplog: pytest.LogCaptureFixture) -> None:
    net = mesh()
    connect(net)
    net.nodes[GW1].redirect(net.nodes[GW1].sas()[0].ike_sa_id, "nowhere.invalid", net.now)
    net.pump()
    (redirected,) = net.of("client", IkeSaRedirected)
    with caplog.at_level(logging.WARNING):
        net.nodes["client"].redirect_resolved(redirected.ike_sa_id, None, net.now)
        net.pump()
    (refused,) = net.of("client", RedirectRefused)
    assert refused.reason == "the gateway name nowhere.invalid does not resolve"
    assert net.established_with(GW1) and net.of("client", ChildSaDeleted) == []


class _RawRedirect(Task):
    """The gateway sends REDIRECT data of its own making (a misbehaving, authenticated peer)."""

    exchange = ExchangeType.INFORMATIONAL
    name = "INFORMATIONAL(raw REDIRECT)"

    def __init__(self, data: bytes) -> None:
        self.data = data

    def build(self, sa: TaskContext, now: float) -> list[Payload]:
        return [NotifyPayload(notify_type=NotifyType.REDIRECT, data=self.data)]

    def process(self, sa: TaskContext, payloads: list[Payload], now: float) -> bool:
        return False


def test_malformed_gateway_identity_keeps_the_tunnel(caplog: pytest.LogCaptureFixture) -> None:
    net = mesh()
    connect(net)
    gateway_sa = net.nodes[GW1].ike_sa(net.nodes[GW1].sas()[0].ike_sa_id)
    with caplog.at_level(logging.WARNING):
        gateway_sa.queue_task(_RawRedirect(b"\x01\x03\xc0\x00\x02"), net.now)
        net.pump()
    assert "ignoring a malformed REDIRECT in an INFORMATIONAL request" in caplog.text
    assert "IPV4 gateway identity of 3 octets" in caplog.text
    assert net.of("client", IkeSaRedirected) == [] and net.established_with(GW1)


def test_unprotected_redirect_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    """A plaintext INFORMATIONAL with REDIRECT under the SA's real SPIs, and a stray
    IKE_SA_INIT response with a REDIRECT: neither is authenticated, both are dropped."""
    net = mesh()
    connect(net)
    (info,) = net.nodes["client"].sas()
    spi_i, spi_r = info.spi_i.to_bytes(8, "big"), info.spi_r.to_bytes(8, "big")
    data = RedirectData(GatewayIdentity.from_text(GW2)).serialize()
    forged = [
        IkeHeader(spi_i=spi_i, spi_r=spi_r, exchange=ExchangeType.INFORMATIONAL,
                  initiator=False, response=False, message_id=0),
        IkeHeader(spi_i=spi_i, spi_r=spi_r, exchange=ExchangeType.IKE_SA_INIT,
                  initiator=False, response=True, message_id=0),
    ]  # fmt: skip
    with caplog.at_level(logging.INFO):
        for header in forged:
            message = serialize_message(header, [NotifyPayload(NotifyType.REDIRECT, data=data)])
            net.nodes["client"].receive_datagram(message, (GW1, 500), (CLIENT, 500), net.now)
            net.pump()
    assert "without an SK payload" in caplog.text
    assert net.of("client", IkeSaRedirected) == [] and net.established_with(GW1)
    net.run_until(net.now + 60)
    assert net.established_with(GW1)


def test_follow_redirects_off() -> None:
    """The client announces nothing; a gateway then serves it and cannot redirect it."""
    net = mesh(client_limits=DispatcherConfig(follow_redirects=False))
    placement(net, GW1, init=GW2, auth=GW2)
    connect(net)
    assert net.established_with(GW1)
    assert notify(init_requests_to(net, GW1)[0], NotifyType.REDIRECT_SUPPORTED) is None
    with pytest.raises(UsageError, match="did not announce REDIRECT_SUPPORTED"):
        net.nodes[GW1].redirect(net.nodes[GW1].sas()[0].ike_sa_id, GW2, net.now)


def test_failed_new_gateway_keeps_the_old_tunnel() -> None:
    """Make-before-break: GW3 does not answer; the client stays on GW1."""
    net = mesh()
    connect(net)
    net.nodes[GW1].redirect(net.nodes[GW1].sas()[0].ike_sa_id, GW3, net.now)
    net.run_until(net.now + 200)
    assert net.established_with(GW1)
    refused = net.of("client", RedirectRefused)
    assert refused and "staying on 192.0.2.1" in refused[-1].reason


def test_redirect_of_the_new_sa_keeps_make_before_break() -> None:
    """The gateway we are sent to redirects us on at IKE_SA_INIT: the old IKE SA waits for
    the SA that finally comes up, and only then goes (one SA in the end, no gap)."""
    net = mesh((GW1, GW2, GW3))
    placement(net, GW2, init=GW3)
    old = connect(net)
    net.nodes[GW1].redirect(net.nodes[GW1].sas()[0].ike_sa_id, GW2, net.now)
    net.pump()
    assert [sa.remote_addr[0] for sa in net.nodes["client"].sas()] == [GW3]
    assert [
        e.ike_sa_id for e in net.of("client", IkeSaDeleted) if e.reason == f"redirected to {GW3}"
    ] == [old]
    assert net.of("client", RedirectRefused) == []


def test_restart_after_a_redirect_goes_to_the_configured_gateway() -> None:
    """dpd_action = restart on an IKE SA we were redirected to: the restart goes to the
    connection's remote_addrs (GW1), not to the dead gateway (GW2)."""
    net = mesh()
    net.nodes["client"] = Dispatcher(
        [make_config(local=CLIENT, remote=GW1, local_id="client.example",
                     remote_id="gw.example", local_ts=["10.1.0.0/16"],
                     remote_ts=["10.2.0.0/16"], dpd_action="restart", dpd_delay=5.0)],
        psk_lookup_for(), rng=seeded_rng(9),
    )  # fmt: skip
    placement(net, GW1, init=GW2)
    connect(net)
    assert net.established_with(GW2)
    placement(net, GW1)  # GW1 now serves whoever comes
    dead = net.nodes.pop(GW2)
    net.run_until(net.now + 300)  # DPD, then 165 s of retransmissions (RFC 7296 sec. 2.4)
    assert net.established_with(GW1)
    assert dead.sas()  # GW2 never heard of the restart


def test_redirected_client_asks_for_its_virtual_ip_again() -> None:
    """With virtual IPs (issue 14): the new IKE SA's CFG_REQUEST names the address the old
    one had, and a gateway whose pool has it free gives it back."""
    from ipaddress import IPv4Address

    from aioipsec.pools import PoolManager, parse_pool
    from ikev2.events import VirtualIpsAssigned

    net = Mesh({})
    net.nodes["client"] = Dispatcher(
        [make_config(local=CLIENT, remote=GW1, local_id="client.example", remote_id="gw.example",
                     local_ts=["dynamic"], remote_ts=["10.2.0.0/16"], vips=["0.0.0.0"])],
        psk_lookup_for(), rng=seeded_rng(5),
    )  # fmt: skip
    for index, address in enumerate((GW1, GW2)):
        pools = PoolManager([parse_pool("rw", {"addrs": "10.3.0.0/28"})])
        if address == GW1:  # others hold .1-.4 here: the client gets .5
            for n in range(1, 5):
                pools.pools["rw"].acquire(f"other{n}", IPv4Address(f"10.3.0.{n}"), 0.0)
        config = make_config(
            local=address, remote="%any", local_id="gw.example", remote_id="%any",
            local_ts=["10.2.0.0/16"], remote_ts=["dynamic"], pools=["rw"],
        )  # fmt: skip
        net.nodes[address] = Dispatcher(
            [config], psk_lookup_for(), rng=seeded_rng(40 + index), config_provider=pools
        )
    connect(net)
    first = [e for e in net.of("client", VirtualIpsAssigned) if e.local]
    assert first and first[-1].addresses == ("10.3.0.5",)
    net.nodes[GW1].redirect(net.nodes[GW1].sas()[0].ike_sa_id, GW2, net.now)
    net.pump()
    assert net.established_with(GW2)
    again = [e for e in net.of("client", VirtualIpsAssigned) if e.local]
    assert again[-1].addresses == ("10.3.0.5",)  # asked for and given, not GW2's first, .1
