"""Two engines back to back in memory, with a virtual clock and a lossy "network".

Nothing here imitates a peer: both ends are real ``Dispatcher`` objects; the network only
moves the datagrams they produce, optionally dropping, duplicating or reordering them.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ikev2.config import AuthConfig, AuthMethodName, ChildConfig, IkeConfig
from ikev2.dispatcher import Dispatcher
from ikev2.events import ChildSaRekeyed, Event, IkeSaRekeyed

ADDR_A = "192.0.2.1"
ADDR_B = "192.0.2.2"
PSK = b"correct horse battery staple, longer than 20 octets"


def seeded_rng(seed: int) -> Callable[[int], bytes]:
    generator = random.Random(seed)
    return lambda n: generator.randbytes(n)


def psk_lookup_for(psk: bytes = PSK) -> Callable[[str, str], bytes | None]:
    return lambda local, remote: psk


def make_config(
    name: str = "conn",
    *,
    local: str,
    remote: str,
    local_id: str,
    remote_id: str,
    auth: AuthMethodName = "psk",
    proposals: list[str] | None = None,
    esp: list[str] | None = None,
    local_ts: list[str] | None = None,
    remote_ts: list[str] | None = None,
    **kwargs: Any,
) -> IkeConfig:
    child_kwargs = {
        key: kwargs.pop(key)
        for key in list(kwargs)
        if key
        in (
            "mode",
            "dpd_action",
            "rekey_bytes",
            "life_bytes",
            "rekey_packets",
            "life_packets",
            "close_action",
        )
    }
    child_rekey = kwargs.pop("child_rekey_time", 3600.0)
    child_life = kwargs.pop("child_life_time", None)
    child_rand = kwargs.pop("child_rand_time", None)
    return IkeConfig(
        name=name,
        local_addrs=[local],
        remote_addrs=[remote],
        proposals=proposals or ["aes256gcm16-prfsha256-x25519"],
        local=AuthConfig(auth=auth, id=local_id),
        remote=AuthConfig(auth=auth, id=remote_id),
        children=[
            ChildConfig(
                name="net",
                local_ts=local_ts or ["10.1.0.0/16"],
                remote_ts=remote_ts or ["10.2.0.0/16"],
                esp_proposals=esp or ["aes256gcm16"],
                rekey_time=child_rekey,
                life_time=child_life,
                rand_time=child_rand,
                **child_kwargs,
            )
        ],
        **kwargs,
    )


def pair_configs(**kwargs: Any) -> tuple[IkeConfig, IkeConfig]:
    """Matching configs for A (initiator side, 10.1/16) and B (10.2/16)."""
    a_kwargs = dict(kwargs)
    b_kwargs = dict(kwargs)
    for key in list(kwargs):
        if key.startswith("a_"):
            a_kwargs[key[2:]] = a_kwargs.pop(key)
            b_kwargs.pop(key)
        elif key.startswith("b_"):
            b_kwargs[key[2:]] = b_kwargs.pop(key)
            a_kwargs.pop(key)
    a_kwargs.setdefault("local_id", "a.example")
    a_kwargs.setdefault("remote_id", "b.example")
    a = make_config(local=ADDR_A, remote=ADDR_B, **a_kwargs)
    b_kwargs.setdefault("local_ts", ["10.2.0.0/16"])
    b_kwargs.setdefault("remote_ts", ["10.1.0.0/16"])
    b_kwargs.setdefault("local_id", "b.example")
    b_kwargs.setdefault("remote_id", "a.example")
    b = make_config(local=ADDR_B, remote=ADDR_A, **b_kwargs)
    return a, b


@dataclass
class DataPlaneModel:
    """What one side's SAD holds, driven by the engine's events like the daemon's data
    plane: inbound SPIs, and per Child SA lineage (an SA and the SAs that rekeyed it) an
    ordered list of outbound SPIs of which the last is used (``outbound_after_delete`` puts
    the new SA behind the current one). Lineages are named by the SPI pair of their first
    SA, the same on both sides."""

    inbound: set[int] = field(default_factory=set)
    outbound: dict[frozenset[int], list[int]] = field(default_factory=dict)
    lineage: dict[int, frozenset[int]] = field(default_factory=dict)  # spi_in -> lineage

    def apply(self, event: Event) -> None:
        from ikev2.events import ChildSaDeleted, ChildSaEstablished, ChildSaRekeyed

        if isinstance(event, ChildSaEstablished):
            key = frozenset((event.spi_in, event.spi_out))
            self.lineage[event.spi_in] = key
            self.inbound.add(event.spi_in)
            self.outbound.setdefault(key, []).append(event.spi_out)
        elif isinstance(event, ChildSaRekeyed):
            new = event.new
            key = self.lineage.get(
                event.old_spi_in, frozenset((event.old_spi_in, event.old_spi_out))
            )
            self.lineage[new.spi_in] = key
            self.inbound.add(new.spi_in)
            spis = self.outbound.setdefault(key, [])
            if event.outbound_after_delete:
                spis.insert(0, new.spi_out)
            else:
                spis.append(new.spi_out)
        elif isinstance(event, ChildSaDeleted):
            self.inbound.discard(event.spi_in)
            key = self.lineage.get(event.spi_in)
            spis = self.outbound.get(key, []) if key is not None else []
            if event.spi_out in spis:
                spis.remove(event.spi_out)

    def sending_on(self, key: frozenset[int]) -> int | None:
        spis = self.outbound.get(key)
        return spis[-1] if spis else None


def check_no_loss(a: DataPlaneModel, b: DataPlaneModel) -> None:
    """Make-before-break: whenever both sides send for a child, each sends on an SA the
    other can already decrypt."""
    for key in set(a.outbound) | set(b.outbound):
        a_out, b_out = a.sending_on(key), b.sending_on(key)
        if a_out is None or b_out is None:
            continue  # being deleted: packets in flight are lost by definition
        assert a_out in b.inbound, f"A sends on {a_out:08x}, B cannot decrypt it"
        assert b_out in a.inbound, f"B sends on {b_out:08x}, A cannot decrypt it"


@dataclass
class Network:
    """Delivers datagrams between two dispatchers; ``drop(datagram, direction)`` decides
    losses, ``duplicate`` sends everything twice, ``reorder`` shuffles each batch."""

    a: Dispatcher
    b: Dispatcher
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    drop: Callable[[Any, str], bool] = lambda datagram, direction: False
    duplicate: bool = False
    reorder: bool = False
    now: float = 0.0
    events_a: list[Event] = field(default_factory=list)
    events_b: list[Event] = field(default_factory=list)
    delivered: int = 0
    tap: Callable[[Any, str], Any] | None = None  # may rewrite a datagram (returns bytes)
    plane_a: DataPlaneModel = field(default_factory=DataPlaneModel)
    plane_b: DataPlaneModel = field(default_factory=DataPlaneModel)
    check_data_plane: bool = True  # no-loss invariant after every delivered datagram

    def _batch(self) -> list[tuple[str, Any]]:
        batch = [("a->b", d) for d in self.a.datagrams_to_send(self.now)]
        batch += [("b->a", d) for d in self.b.datagrams_to_send(self.now)]
        if self.duplicate:
            batch = [item for item in batch for _ in (0, 1)]
        if self.reorder:
            self.rng.shuffle(batch)
        return batch

    def pump(self, limit: int = 10000) -> None:
        """Deliver until both sides are quiet."""
        for _ in range(limit):
            batch = self._batch()
            if not batch:
                self._drain_events()
                return
            for direction, datagram in batch:
                if self.drop(datagram, direction):
                    continue
                data = datagram.data
                if self.tap is not None:
                    data = self.tap(datagram, direction)
                    if data is None:
                        continue
                target = self.b if direction == "a->b" else self.a
                self.delivered += 1
                target.receive_datagram(data, datagram.local_addr, datagram.remote_addr, self.now)
                self._drain_events()
        raise AssertionError("network did not go quiet")

    def _drain_events(self) -> None:
        # An exception other than ProtocolError inside the engine is a bug: never accept one.
        assert self.a.counters.get("internal_error", 0) == 0, "engine A raised"
        assert self.b.counters.get("internal_error", 0) == 0, "engine B raised"
        while (event := self.a.next_event()) is not None:
            self.events_a.append(event)
            self.plane_a.apply(event)
        while (event := self.b.next_event()) is not None:
            self.events_b.append(event)
            self.plane_b.apply(event)
        if self.check_data_plane:
            check_no_loss(self.plane_a, self.plane_b)

    def next_timer(self) -> float | None:
        timers = [t for t in (self.a.get_timer(), self.b.get_timer()) if t is not None]
        return min(timers, default=None)

    def run_until(self, deadline: float) -> None:
        """Advance the virtual clock to ``deadline``, firing timers on the way."""
        self.pump()
        while True:
            timer = self.next_timer()
            if timer is None or timer > deadline:
                break
            self.now = max(self.now, timer)
            self.a.handle_timer(self.now)
            self.b.handle_timer(self.now)
            self.pump()
        self.now = deadline
        self.pump()

    def events(self, side: str, kind: type) -> list[Any]:
        events = self.events_a if side == "a" else self.events_b
        return [e for e in events if isinstance(e, kind)]


def rekey_child_then_ike(net: Network, ike_id: int, child_sa_id: int) -> None:
    """A rekeys the Child SA, then the IKE SA; B reports each rekey."""
    net.a.rekey_child(ike_id, child_sa_id, net.now)
    net.pump()
    assert net.events("b", ChildSaRekeyed)
    net.a.rekey_ike(ike_id, net.now)
    net.pump()
    assert net.events("b", IkeSaRekeyed)


@dataclass
class Mesh:
    """Any number of engines on one lossless network: a datagram goes to the node named
    by its remote address (:meth:`deliver` says otherwise in a subclass). Events are
    collected per node; an engine that counted an internal error fails the test."""

    nodes: dict[str, Dispatcher] = field(default_factory=dict)
    now: float = 0.0
    events: dict[str, list[Event]] = field(default_factory=dict)

    def deliver(self, source: str, datagram: Any) -> tuple[Dispatcher, bytes] | None:
        """Where ``datagram`` (sent by node ``source``) arrives, and with which octets;
        None: it is lost."""
        target = self.nodes.get(datagram.remote_addr[0])
        return None if target is None else (target, datagram.data)

    def pump(self, limit: int = 10000) -> None:
        for _ in range(limit):
            batch = [
                (name, d)
                for name, node in self.nodes.items()
                for d in node.datagrams_to_send(self.now)
            ]
            self._drain()
            if not batch:
                return
            for source, datagram in batch:
                delivery = self.deliver(source, datagram)
                if delivery is None:
                    continue
                target, data = delivery
                target.receive_datagram(data, datagram.local_addr, datagram.remote_addr, self.now)
                self._drain()
        raise AssertionError("network did not go quiet")

    def _drain(self) -> None:
        for name, node in self.nodes.items():
            assert node.counters.get("internal_error", 0) == 0, f"engine {name} raised"
            while (event := node.next_event()) is not None:
                self.events.setdefault(name, []).append(event)


def make_pair(seed: int = 1, **kwargs: Any) -> Network:
    psk_a = kwargs.pop("psk_a", PSK)
    a_config, b_config = pair_configs(**kwargs)
    a = Dispatcher([a_config], psk_lookup_for(psk_a), rng=seeded_rng(seed))
    b = Dispatcher([b_config], psk_lookup_for(PSK), rng=seeded_rng(seed + 1000))
    return Network(a, b)


def established_pair(seed: int = 1, **kwargs: Any) -> tuple[Network, int]:
    net = make_pair(seed, **kwargs)
    ike_id = net.a.initiate("conn", "net", now=net.now)
    net.pump()
    return net, ike_id
