"""Cluster state in Redis (redis-py's asyncio client), or a static member list.

Each member writes one key, ``aioipsec:<cluster>:member:<member>``, holding its
:class:`~aioipsec.cluster.placement.MemberState` as JSON, every ``heartbeat`` seconds,
with an expiry of ``ttl`` (``SET ... PX``): a member that stops (crash, SIGKILL, cut off)
leaves the view when its key expires, within ``ttl`` seconds, without anyone deleting it.
Reading the view is a ``SCAN`` for the prefix and one ``MGET``.

Redis down: a failed heartbeat keeps the last view while it is younger than ``ttl`` (a
slow answer is not an outage); after that the view is marked unusable (placement then
redirects nobody and new clients are served locally; established SAs never depend on
Redis), a WARN is logged at most
every ``WARN_INTERVAL`` seconds with the count of failures in between, and the next
heartbeat simply tries again (redis-py opens a new connection for the next command).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from aioipsec.cluster.placement import MemberState
from aioipsec.cluster.settings import ClusterSettings, store_address

log = logging.getLogger("aioipsec.cluster")

WARN_INTERVAL = 10.0
View = dict[str, MemberState]


class StoreView:
    """The view every store keeps: members by name, and whether it is current."""

    def __init__(self, settings: ClusterSettings) -> None:
        self.settings = settings
        self.view: View = {}
        self.usable = False
        self.on_change: Callable[[View, bool], None] = lambda view, usable: None

    def _set(self, view: View, usable: bool) -> None:
        self.view, self.usable = view, usable
        self.on_change(view, usable)

    async def publish(self, state: MemberState) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    async def refresh(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    async def close(self) -> None:
        return None


class StaticStore(StoreView):
    """No store: ``members`` are all assumed alive and unloaded; only this member's own
    state (draining, its load) is known."""

    async def publish(self, state: MemberState) -> None:
        view = {name: MemberState(name) for name in self.settings.members}
        view[state.member] = state
        self._set(view, True)

    async def refresh(self) -> None:
        return None


class RedisStore(StoreView):
    def __init__(self, settings: ClusterSettings) -> None:
        super().__init__(settings)
        import redis.asyncio as redis_asyncio
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        assert settings.store is not None
        # Timeouts of one ttl: longer and the view is stale anyway; shorter and a busy
        # event loop (a burst of IKE_SA_INITs) turns a slow answer into "Redis is down".
        self.client: Any = redis_asyncio.Redis(
            **store_address(settings.store),
            password=settings.password(),
            socket_timeout=settings.ttl,
            socket_connect_timeout=settings.ttl,
            decode_responses=True,
            # No retries inside a command: the next heartbeat is the retry (a dead server
            # must not hold the heartbeat for seconds of back-off).
            retry=Retry(NoBackoff(), 0),
        )
        self.prefix = f"aioipsec:{settings.name}:member:"
        self.failures = 0
        self._last_ok: float | None = None
        self._warned_at: float | None = None
        self._suppressed = 0

    def key(self, member: str) -> str:
        return self.prefix + member

    async def publish(self, state: MemberState) -> None:
        try:
            await self.client.set(
                self.key(state.member),
                json.dumps(state.to_record()),
                px=int(self.settings.ttl * 1000),
            )
        except Exception as error:  # redis.RedisError, OSError, timeouts: all "unreachable"
            self._unreachable(error)
            return
        if self.failures:
            log.warning(
                "cluster store reachable again after %d failed attempt(s): placement resumes",
                self.failures,
            )
            self.failures = 0
            self._warned_at = None
        await self.refresh()

    async def refresh(self) -> None:
        try:
            keys = [key async for key in self.client.scan_iter(match=self.prefix + "*")]
            values = await self.client.mget(keys) if keys else []
        except Exception as error:
            self._unreachable(error)
            return
        view: View = {}
        for key, value in zip(keys, values, strict=True):
            if value is None:
                continue  # expired between SCAN and MGET
            try:
                state = MemberState.from_record(json.loads(value))
            except (ValueError, KeyError, TypeError):
                log.warning("ignoring a malformed member record under %s", key)
                continue
            view[state.member] = state
        self._last_ok = asyncio.get_running_loop().time()
        self._set(view, True)

    def _unreachable(self, error: BaseException) -> None:
        self.failures += 1
        now = asyncio.get_running_loop().time()
        if self._last_ok is None or now - self._last_ok >= self.settings.ttl:
            self._set({}, False)  # the last view is older than a member's lifetime
        if self._warned_at is not None and now - self._warned_at < WARN_INTERVAL:
            self._suppressed += 1
            return
        more = f" ({self._suppressed} more failures not logged)" if self._suppressed else ""
        log.warning(
            "cluster store %s unreachable (%s: %s): established SAs are not affected, new "
            "clients are served here without redirects; retrying every %gs%s",
            self.settings.store,
            type(error).__name__,
            error,
            self.settings.heartbeat,
            more,
        )
        self._warned_at = now
        self._suppressed = 0

    async def close(self) -> None:
        await self.client.aclose()


def open_store(settings: ClusterSettings) -> StoreView:
    return RedisStore(settings) if settings.store else StaticStore(settings)
