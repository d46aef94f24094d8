"""VIP leases in the cluster store (docs/cluster.md, "VIP leases"): the Redis side of
:class:`aioipsec.pools.SharedPool`.

One hash per pool, ``aioipsec:<cluster>:pool:<name>:<addrs>``, field = address, value = a
:class:`~aioipsec.pools.SharedRecord` as JSON (identity, member, state, since). The
engine's lease decision is synchronous and does no I/O; it picks from the pool's mirror of
this hash and from *spares*, addresses this member reserved ahead with ``HSETNX`` (atomic:
one field, one winner, so no two members can hand out one address). Every sync (each
heartbeat, and at once after a lease changed):

1. the outbox is written through one Lua script (:data:`WRITE_SCRIPT`), which checks the
   record it replaces: a ``bind`` takes a free address, our own spare, or the same
   identity's lease (a client moved here by a redirect keeps its VIP); a ``release`` only
   marks offline what is still ours for that identity; a ``cas`` (reclaiming) replaces only
   the exact record it read;
2. the hash is read (``HGETALL``) into the mirror;
3. the spares are topped up: free addresses by ``HSETNX``; when none is free and a client
   was refused for want of one, the spares of members that are gone and leases offline for
   ``reassign_after`` seconds (mem_pool's reassignment) by ``cas``, one per refused client
   (the client's next attempt gets it: mem_pool reassigns only when the pool is full, never
   ahead).

Redis down: established SAs do not notice (nothing in the data path reads Redis). New
clients get the spares this member still holds (the store reserved them for it, so they
are safe to hand out) and the identity's lease as last read; beyond that, the request is
refused with INTERNAL_ADDRESS_FAILURE, naming the outage, rather than giving out an
address that another member may give too. The writes wait in the outbox and go out when
the store is back. A store that came back empty (restarted without persistence), or a new
one, has no marker key: the first member to notice starts a grace period (the members'
``ttl``) in which nobody reserves an address, while every member writes back the leases
and spares it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable
from typing import Any

from aioipsec.pools import IPAddress, PoolManager, SharedPool, SharedRecord

log = logging.getLogger("aioipsec.cluster")

# KEYS[1]: the pool's hash; ARGV: address, new record, mode (bind | release | cas),
# and for cas the exact record expected. Returns 1 when written, 0 when refused.
WRITE_SCRIPT = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
local mode = ARGV[3]
if mode == 'cas' then
  if current ~= ARGV[4] then return 0 end
elseif current then
  local have = cjson.decode(current)
  local want = cjson.decode(ARGV[2])
  if mode == 'bind' then
    if (have.identity == '' or have.identity ~= want.identity) and
       not (have.state == 'spare' and have.member == want.member) then
      return 0
    end
  elseif have.member ~= want.member or have.identity ~= want.identity then
    return 0
  end
elseif mode == 'release' then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


def spare_target(pool: SharedPool) -> int:
    """Addresses reserved ahead per member: enough for a burst of new clients between two
    syncs, few enough that a small pool is not all held in reserve."""
    return max(2, min(8, pool.settings.size // 16))


class LeaseSync:
    """Keeps the pools of ``pools`` (switched to shared mode by :meth:`attach`) in step
    with Redis through ``client`` (the membership store's redis-py asyncio client)."""

    def __init__(self, client: Any, cluster: str, member: str,
                 alive: Callable[[], set[str] | None], grace: float = 3.0) -> None:  # fmt: skip
        self.client = client
        self.prefix = f"aioipsec:{cluster}:pool:"
        # A store without the marker is new, or restarted without its data: for ``grace``
        # seconds (the members' ttl: each of them syncs within it) nobody reserves an
        # address, so every member writes back the leases it holds first.
        self.marker = f"aioipsec:{cluster}:leases"
        self.grace_key = f"aioipsec:{cluster}:leases-grace"
        self.grace = grace
        self.member = member
        self.alive = alive  # members in the current view, None when the view is unusable
        self.pools: PoolManager | None = None
        self.wake = asyncio.Event()
        self._script: Any = client.register_script(WRITE_SCRIPT)
        self._lock = asyncio.Lock()

    def attach(self, pools: PoolManager) -> None:
        self.pools = pools
        pools.share(self.member, self.wake.set)

    def key(self, pool: SharedPool) -> str:
        # The range is part of the key: a pool whose addrs changed starts a new table.
        return f"{self.prefix}{pool.name}:{pool.settings.addrs_text}"

    async def sync(self) -> bool:
        """One round for every shared pool; False when the store did not answer. Bounded
        (twice the grace period): a command that never returns must not stop the rounds
        that follow, nor the heartbeat that waits for this one."""
        if self.pools is None:
            return True
        try:
            return await asyncio.wait_for(self._sync(), max(2 * self.grace, 1.0))
        except TimeoutError:
            log.warning("cluster store: a lease sync took more than %gs; trying again at the "
                        "next heartbeat", max(2 * self.grace, 1.0))  # fmt: skip
            for pool in self.pools.shared_pools():
                pool.store_usable = False
            return False

    async def _sync(self) -> bool:
        assert self.pools is not None
        async with self._lock:
            self.wake.clear()
            ok = True
            try:
                if await self.client.set(self.marker, "1", nx=True):
                    log.info("cluster store has no lease tables (new, or restarted empty): no "
                             "address reserved for %gs while members write theirs back",
                             self.grace)  # fmt: skip
                    if self.grace > 0:
                        await self.client.set(self.grace_key, "1", px=int(self.grace * 1000))
                reserve = not await self.client.exists(self.grace_key)
            except Exception:
                reserve = False
            for pool in self.pools.shared_pools():
                try:
                    await self._sync_pool(pool, reserve)
                    pool.store_usable = True
                except Exception:  # redis.RedisError, OSError, timeouts: the store's WARN says it
                    pool.store_usable = False
                    ok = False
            return ok

    async def _write(self, key: str, address: IPAddress, record: SharedRecord, mode: str,
                     expected: str | None = None) -> bool:  # fmt: skip
        args = [str(address), record.encode(), mode] + ([expected] if expected else [])
        return bool(await self._script(keys=[key], args=args))

    async def _sync_pool(self, pool: SharedPool, reserve: bool = True) -> None:
        key = self.key(pool)
        for address, sent in list(pool.outbox.items()):
            mode, record = sent
            record.since = time.time()
            pool.written(address, sent, await self._write(key, address, record, mode))
        raw: dict[str, str] = await self.client.hgetall(key)
        texts: dict[IPAddress, str] = {}
        table: dict[IPAddress, SharedRecord] = {}
        for field, text in raw.items():
            decoded = SharedRecord.decode(text)
            with contextlib.suppress(ValueError):
                address = ipaddress.ip_address(field)
                if decoded is not None:
                    table[address], texts[address] = decoded, text
        if pool.load_mirror(table):
            # The store lost our online leases (a restart without persistence): write
            # them again before anything else is reserved.
            for address, sent in list(pool.outbox.items()):
                mode, record = sent
                pool.written(address, sent, await self._write(key, address, record, mode))
        want = spare_target(pool) - len(pool.spares)
        if want <= 0 or not reserve:
            return
        for address in pool.free_candidates(want):
            record = SharedRecord("", self.member, "spare", time.time())
            if await self.client.hsetnx(key, str(address), record.encode()):
                pool.add_spare(address, record)
                want -= 1
        alive = self.alive()
        starved, pool.starved = pool.starved, 0
        if want <= 0 or not starved or alive is None:
            return  # without a current view nobody can be known to be gone
        for address, old in pool.reclaimable(time.time(), alive)[: min(want, starved)]:
            record = SharedRecord("", self.member, "spare", time.time())
            if old.identity:
                pool.log.append(
                    f"pool {pool.name}: {address} of {old.identity} ({old.state} at "
                    f"{old.member}) reassigned: no free address left"
                )
            expected = texts.get(address)
            if expected is not None and await self._write(key, address, record, "cas", expected):
                pool.add_spare(address, record)

    async def run(self) -> None:
        """Sync at once whenever a lease changed (the heartbeat syncs as well)."""
        while True:
            await self.wake.wait()
            await self.sync()
            await asyncio.sleep(0.05)  # a burst of leases goes out in one round
