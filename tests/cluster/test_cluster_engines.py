"""Three gateways sharing one real redis-server, each a real engine with the daemon's
cluster runtime (aioipsec/cluster/runtime.py), and clients that are real engines too; the
"network" between them is in memory (datagrams delivered by destination address).

Shown here, without namespaces: least-loaded placement at IKE_SA_INIT spreads clients, a
drain moves every client of a gateway to the others make-before-break (each client's new
Child SA is up before its old one goes), a draining gateway sends new clients away, the
``redirect`` command's selectors, identity-hash placement at IKE_AUTH, and Redis going
away: established SAs stay, new clients are served where they arrive.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aioipsec.cluster.runtime import ClusterRuntime, Engine
from aioipsec.cluster.settings import ClusterSettings
from aioipsec.control import RequestError
from ikev2.dispatcher import Dispatcher
from ikev2.events import ChildSaDeleted, ChildSaEstablished, IkeSaRedirected
from tests.cluster.conftest import RedisServer
from tests.engine import harness
from tests.engine.harness import make_config, psk_lookup_for, seeded_rng

pytestmark = pytest.mark.timeout(90)

GATEWAYS = ("192.0.2.1", "192.0.2.2", "192.0.2.3")


class Mesh(harness.Mesh):
    """The gateways and the clients, each node named by its address."""

    def call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, now=self.now, **kwargs)
        finally:
            self.pump()

    def up(self, address: str) -> list[Any]:
        return [sa for sa in self.nodes[address].sas() if sa.state == "ESTABLISHED"]

    def gateway_of(self, client: str) -> str:
        (sa,) = self.up(client)
        return str(sa.remote_addr[0])


class Cluster:
    def __init__(self, redis_url: str, policy: str) -> None:
        self.mesh = Mesh()
        self.runtimes: dict[str, ClusterRuntime] = {}
        for index, address in enumerate(GATEWAYS):
            config = make_config(
                local=address, remote="%any", local_id="vpn.example.net", remote_id="%any",
                local_ts=["10.2.0.0/16"], remote_ts=["0.0.0.0/0"],
            )  # fmt: skip
            node = Dispatcher([config], psk_lookup_for(), rng=seeded_rng(50 + index))
            self.mesh.nodes[address] = node
            settings = ClusterSettings(
                name="lab", member=address, store=redis_url, policy=policy,
                heartbeat=0.2, ttl=1.0, drain_rate=50,
            )  # fmt: skip
            settings.check()
            self.runtimes[address] = ClusterRuntime(settings, self._engine(address))
        self.clients: list[str] = []

    def _engine(self, address: str) -> Engine:
        mesh = self.mesh
        return Engine(
            call=mesh.call,
            dispatcher=mesh.nodes[address],
            established=lambda: mesh.up(address),
            child_sas=lambda: sum(len(sa.children) for sa in mesh.up(address)),
        )

    async def start(self) -> None:
        for runtime in self.runtimes.values():
            await runtime.start()

    async def publish(self) -> None:
        """One heartbeat of every member, then every member reads the others' (what a
        heartbeat interval gives in the daemon)."""
        for runtime in self.runtimes.values():
            await runtime.publish()
        for runtime in self.runtimes.values():
            assert runtime.store is not None
            await runtime.store.refresh()

    async def close(self) -> None:
        for runtime in self.runtimes.values():
            await runtime.close()

    async def connect(self, first_gateway: str, name: str | None = None) -> str:
        address = f"198.51.100.{len(self.clients) + 10}"
        config = make_config(
            local=address, remote=first_gateway, local_id=name or f"user{len(self.clients)}",
            remote_id="vpn.example.net", local_ts=[f"{address}/32"], remote_ts=["10.2.0.0/16"],
        )  # fmt: skip
        node = Dispatcher([config], psk_lookup_for(), rng=seeded_rng(len(self.clients)))
        self.mesh.nodes[address] = node
        self.clients.append(address)
        self.mesh.call(node.initiate, "conn", "net")
        await self.publish()
        return address

    def spread(self) -> dict[str, int]:
        return {g: len(self.mesh.up(g)) for g in GATEWAYS}


@pytest.fixture
async def least_loaded(redis_server: RedisServer) -> Any:
    cluster = Cluster(redis_server.url, "least-loaded")
    await cluster.start()
    try:
        yield cluster
    finally:
        await cluster.close()


async def wait_drained(runtime: ClusterRuntime) -> dict[str, Any]:
    for _ in range(200):
        status = await runtime.cmd_drain({"status": True})
        if status["sent_all"]:
            return status
        await asyncio.sleep(0.05)
    raise AssertionError("drain did not finish")


async def test_least_loaded_spreads_and_drain_moves_everyone(least_loaded: Cluster) -> None:
    cluster = least_loaded
    g1, g2, g3 = GATEWAYS
    for _ in range(6):
        await cluster.connect(g1)  # every client knows only the first gateway
    assert cluster.spread() == {g1: 2, g2: 2, g3: 2}  # ties go by CPU share, then name
    redirected = [e for c in cluster.clients for e in cluster.mesh.events[c]
                  if isinstance(e, IkeSaRedirected)]  # fmt: skip
    assert len(redirected) == 4 and {e.exchange for e in redirected} == {"IKE_SA_INIT"}

    on_g1 = [c for c in cluster.clients if cluster.mesh.gateway_of(c) == g1]
    answer = await cluster.runtimes[g1].cmd_drain({})
    assert answer["draining"] and "redirecting 2 IKE SA(s)" in answer["message"]
    status = await wait_drained(cluster.runtimes[g1])
    assert status["redirected"] == 2 and status["not_redirectable"] == []
    assert cluster.spread()[g1] == 0 and sum(cluster.spread().values()) == 6
    for client in on_g1:
        events = cluster.mesh.events[client]
        up = [i for i, e in enumerate(events) if isinstance(e, ChildSaEstablished)]
        down = [i for i, e in enumerate(events) if isinstance(e, ChildSaDeleted)]
        assert len(up) == 2 and len(down) == 1 and up[1] < down[0]  # make-before-break
        assert cluster.mesh.gateway_of(client) in (g2, g3)

    # Draining: a new client arriving at g1 is sent on at IKE_SA_INIT.
    await cluster.publish()
    newcomer = await cluster.connect(g1)
    assert cluster.mesh.gateway_of(newcomer) in (g2, g3)
    await cluster.runtimes[g1].cmd_drain({"cancel": True})
    await cluster.publish()
    assert not (await cluster.runtimes[g1].cmd_drain({"status": True}))["draining"]


async def test_redirect_command_selectors(redis_server: RedisServer) -> None:
    cluster = Cluster(redis_server.url, "none")  # nobody is placed: all stay on g1
    await cluster.start()
    try:
        await _selectors(cluster)
    finally:
        await cluster.close()


async def _selectors(cluster: Cluster) -> None:
    g1, g2, g3 = GATEWAYS
    alice = await cluster.connect(g1, "alice@example.net")
    await cluster.connect(g1, "bob@example.net")
    assert cluster.spread()[g1] == 2
    runtime = cluster.runtimes[g1]
    with pytest.raises(RequestError, match="needs a selector"):
        await runtime.cmd_redirect({"gateway": g2})
    with pytest.raises(RequestError, match="neither an IP address nor a host name"):
        await runtime.cmd_redirect({"peer_id": "alice@example.net", "gateway": "no such"})
    with pytest.raises(RequestError, match=r"no established IKE SA matches peer_ip=203\.0\.113\.9"):
        await runtime.cmd_redirect({"peer_ip": "203.0.113.9", "gateway": g2})
    answer = await runtime.cmd_redirect({"peer_id": "alice@example.net", "gateway": g2})
    assert answer["message"] == f"redirecting 1 IKE SA(s) to {g2}"
    assert cluster.mesh.gateway_of(alice) == g2
    answer = await runtime.cmd_redirect({"ike": "conn", "gateway": g3})
    assert cluster.spread() == {g1: 0, g2: 1, g3: 1}


async def test_identity_hash_places_at_ike_auth(redis_server: RedisServer) -> None:
    cluster = Cluster(redis_server.url, "identity-hash")
    await cluster.start()
    try:
        homes = {}
        for n in range(6):
            client = await cluster.connect(GATEWAYS[n % 3], f"user{n}@example.net")
            homes[f"user{n}@example.net"] = cluster.mesh.gateway_of(client)
            kinds = {e.exchange for e in cluster.mesh.events[client]
                     if isinstance(e, IkeSaRedirected)}  # fmt: skip
            assert kinds <= {"IKE_AUTH"}
        # The same identity from another first gateway ends on the same member.
        again = await cluster.connect(GATEWAYS[1], "user0@example.net")
        assert cluster.mesh.gateway_of(again) == homes["user0@example.net"]
        assert len(set(homes.values())) > 1
    finally:
        await cluster.close()


async def test_redis_down_serves_new_clients_locally(
    least_loaded: Cluster, redis_server: RedisServer
) -> None:
    cluster = least_loaded
    g1, g2, g3 = GATEWAYS
    first = [await cluster.connect(g2) for _ in range(3)]
    assert cluster.spread() == {g1: 1, g2: 1, g3: 1}
    redis_server.stop()
    await cluster.publish()
    # Placement is off: everyone is served where it arrives, however loaded that is.
    late = [await cluster.connect(g2) for _ in range(2)]
    assert all(cluster.mesh.gateway_of(c) == g2 for c in late)
    assert all(len(cluster.mesh.up(c)) == 1 for c in first)  # established SAs untouched
    redis_server.start()
    await cluster.publish()
    await cluster.publish()
    placed = await cluster.connect(g2)
    assert cluster.mesh.gateway_of(placed) in (g1, g3)  # placement is back
