"""VIP leases in a real redis-server (aioipsec/cluster/leases.py, aioipsec.pools.SharedPool):
members never hand out one address twice, a client moved to another member gets its
address back there, releases, listing, and Redis going away and coming back empty."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from ipaddress import IPv4Address

import pytest

from aioipsec.cluster.leases import LeaseSync
from aioipsec.pools import PoolManager, format_pools, parse_pool
from ikev2.cp import cp_request
from ikev2.enums import NotifyType
from ikev2.errors import ProtocolError
from tests.cluster.conftest import RedisServer

pytestmark = pytest.mark.timeout(60)

A, B = "192.0.2.1", "192.0.2.2"
ANY = [IPv4Address("0.0.0.0")]


class Member:
    def __init__(
        self, url: str, member: str, addrs: str = "10.3.0.0/26", grace: float = 0.0
    ) -> None:
        import redis.asyncio as redis_asyncio
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # As the membership store's client (aioipsec/cluster/store.py): the next sync retries.
        self.client = redis_asyncio.Redis(unix_socket_path=url.removeprefix("unix://"),
                                          decode_responses=True, socket_timeout=1,
                                          retry=Retry(NoBackoff(), 0))  # fmt: skip
        self.alive = {A, B}
        self.sync = LeaseSync(self.client, "t", member, lambda: set(self.alive), grace=grace)
        self.pools = PoolManager([parse_pool("rw", {"addrs": addrs})])
        self.sync.attach(self.pools)

    def assign(self, identity: str, vips: list[IPv4Address] = ANY) -> IPv4Address:
        reply = self.pools.assign(["rw"], identity, cp_request(list(vips)), now=0.0)
        return reply.ip4_addresses[0]

    async def close(self) -> None:
        await self.client.aclose()


@asynccontextmanager
async def two(
    url: str, addrs: str = "10.3.0.0/26", grace: float = 0.0
) -> AsyncIterator[tuple[Member, Member]]:
    a, b = Member(url, A, addrs, grace), Member(url, B, addrs, grace)
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def sync(*members: Member) -> None:
    for member in members:
        assert await member.sync.sync()


async def test_members_never_share_an_address_and_a_moved_client_keeps_its_own(
    redis_server: RedisServer,
) -> None:
    async with two(redis_server.url) as (a, b):
        await sync(a, b)
        spares_a, spares_b = a.pools.shared_pools()[0].spares, b.pools.shared_pools()[0].spares
        assert spares_a and spares_b and not spares_a & spares_b
        given = [a.assign(f"a{n}") for n in range(3)] + [b.assign(f"b{n}") for n in range(3)]
        await sync(a, b)
        assert len(set(given)) == 6
        # Redirected from A to B, the client asks for its VIP: B gives it back.
        vip = given[0]
        assert b.assign("a0", [vip]) == vip
        await sync(b)
        # A deletes its old IKE SA after the new one is up: the lease stays online at B.
        a.pools.release("a0", [vip], now=1.0)
        await sync(a, b)
        listing = b.pools.listing()[0]
        lease = next(x for x in listing["leases"] if x["address"] == str(vip))
        assert (lease["identity"], lease["status"], lease["member"]) == ("a0", "online", B)
        assert {x["member"] for x in listing["leases"]} == {A, B}
        assert f"'a0'  at {B}" in format_pools(b.pools.listing())
        # Released at B: offline, kept for the identity; it comes back without asking.
        b.pools.release("a0", [vip], now=2.0)
        await sync(b, a)
        assert a.assign("a0") == vip
        # Online at A and not asking for it (charon follows a redirect so): its own still,
        # one IKE SA per identity (strongSwan's uniqueids = yes reassigns it too).
        assert b.assign("a1") == given[1]
        # Online here already: another device of the identity, another address.
        assert b.assign("a1") not in given


async def test_a_full_pool_reassigns_an_offline_lease_of_another_member(
    redis_server: RedisServer,
) -> None:
    async with two(redis_server.url, "10.3.0.1-10.3.0.4") as (a, b):
        await sync(a, b)
        got = sorted({a.assign("x1"), a.assign("x2"), b.assign("y1"), b.assign("y2")})
        assert len(got) == 4
        await sync(a, b)
        with pytest.raises(ProtocolError) as failure:
            a.assign("x3")
        assert failure.value.notify is NotifyType.INTERNAL_ADDRESS_FAILURE
        # y1 goes offline at B; reassign_after is 0 (the default): A may take it over,
        # reserved by the sync after the refusal, for the client's next attempt.
        b.pools.release("y1", [got[2]], now=1.0)
        await sync(b, a)
        assert a.assign("x3") == got[2]
        await sync(a)
        listing = {x["address"]: x for x in a.pools.listing()[0]["leases"]}
        assert listing[str(got[2])]["identity"] == "x3"


async def test_the_spares_of_a_member_that_is_gone_are_taken_back(
    redis_server: RedisServer,
) -> None:
    async with two(redis_server.url, "10.3.0.1-10.3.0.4") as (a, b):
        await sync(b, a)
        a.assign("x1"), a.assign("x2")
        await sync(a)
        assert not a.pools.shared_pools()[0].spares  # B holds the other two
        a.alive = {A}  # B's heartbeat key expired
        with pytest.raises(ProtocolError):
            a.assign("x3")
        await sync(a)
        assert a.assign("x3") in b.pools.shared_pools()[0].spares


async def test_redis_down_serves_the_reserved_addresses_then_refuses_and_recovers(
    redis_server: RedisServer,
) -> None:
    async with two(redis_server.url, grace=0.5) as (a, b):
        await sync(a)
        await asyncio.sleep(0.6)  # a new store: its grace period
        await sync(a)
        held = a.assign("c0")
        await sync(a)
        spares = len(a.pools.shared_pools()[0].spares)
        redis_server.stop()
        assert not await a.sync.sync()
        assert a.pools.listing()[0]["store"] == "unreachable"
        # The addresses the store reserved for this member are still safe to hand out.
        served = [a.assign(f"c{n + 1}") for n in range(spares)]
        assert len({held, *served}) == spares + 1
        with pytest.raises(ProtocolError) as failure:
            a.assign("late")
        assert "unreachable" in failure.value.reason
        # Back, but empty (no persistence). B syncs first: the grace period keeps it from
        # reserving anything until A has written back its online leases.
        redis_server.start()
        await sync(b)
        assert not b.pools.shared_pools()[0].spares
        await sync(a)
        await asyncio.sleep(0.6)
        await sync(b)
        assert b.pools.shared_pools()[0].spares
        assert not b.pools.shared_pools()[0].spares & {held, *served}
        mirror = b.pools.shared_pools()[0].mirror
        assert {mirror[x].identity for x in (held, *served)} == {f"c{n}" for n in range(spares + 1)}
