"""Membership, load and the drain flag in a real redis-server (aioipsec/cluster/store.py):
heartbeats with a TTL, a dead member leaving the view, Redis going away and coming back."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from aioipsec.cluster.placement import MemberState
from aioipsec.cluster.settings import ClusterSettings
from aioipsec.cluster.store import RedisStore, StaticStore
from tests.cluster.conftest import RedisServer

pytestmark = pytest.mark.timeout(60)

A, B = "192.0.2.1", "192.0.2.2"


def settings(url: str, member: str, **kwargs: object) -> ClusterSettings:
    values = {"name": "t", "member": member, "store": url, "policy": "least-loaded",
              "heartbeat": 0.2, "ttl": 0.6, **kwargs}  # fmt: skip
    result = ClusterSettings(**values)  # type: ignore[arg-type]  # test values are right
    result.check()
    return result


async def test_members_see_each_others_load_and_drain_flag(redis_server: RedisServer) -> None:
    a = RedisStore(settings(redis_server.url, A))
    b = RedisStore(settings(redis_server.url, B))
    try:
        await a.publish(MemberState(A, ike_sas=3, child_sas=5, cpu=0.5))
        await b.publish(MemberState(B, ike_sas=1, draining=True, max_ike_sas=10))
        await a.refresh()
        assert a.usable and set(a.view) == {A, B}
        assert a.view[B] == MemberState(B, ike_sas=1, draining=True, max_ike_sas=10)
        assert a.view[A].cpu == 0.5
    finally:
        await a.close()
        await b.close()


async def test_a_dead_member_leaves_within_its_ttl(redis_server: RedisServer) -> None:
    a = RedisStore(settings(redis_server.url, A))
    b = RedisStore(settings(redis_server.url, B))
    try:
        await b.publish(MemberState(B))
        await a.publish(MemberState(A))
        assert B in a.view
        await b.close()  # B stops publishing (as if SIGKILLed): nobody deletes its key
        await asyncio.sleep(0.8)
        await a.publish(MemberState(A))
        assert set(a.view) == {A}
    finally:
        await a.close()


async def test_redis_down_is_survivable_and_warned_at_a_bounded_rate(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    store = RedisStore(settings(redis_server.url, A))
    seen: list[bool] = []
    store.on_change = lambda view, usable: seen.append(usable)
    try:
        await store.publish(MemberState(A))
        assert store.usable
        redis_server.stop()
        with caplog.at_level(logging.WARNING, logger="aioipsec.cluster"):
            await store.publish(MemberState(A))
            assert store.usable and A in store.view  # younger than ttl: the last view stays
            await asyncio.sleep(0.7)  # ttl 0.6 s
            for _ in range(4):
                await store.publish(MemberState(A))
        assert not store.usable and store.view == {} and store.failures == 5
        warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(warnings) == 1  # five failures, one WARN (the rest counted)
        assert "new clients are served here without redirects" in warnings[0].getMessage()
        redis_server.start()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="aioipsec.cluster"):
            await store.publish(MemberState(A, ike_sas=2))
        assert store.usable and store.view[A].ike_sas == 2
        assert "reachable again after 5 failed attempt(s)" in caplog.text
        assert seen[0] is True and False in seen and seen[-1] is True
    finally:
        await store.close()


async def test_static_members_without_a_store() -> None:
    config = ClusterSettings(member=A, members=[A, B], policy="round-robin")
    config.check()
    store = StaticStore(config)
    await store.publish(MemberState(A, draining=True))
    assert store.usable and store.view == {A: MemberState(A, draining=True), B: MemberState(B)}


async def test_password_file_is_a_secret_file(redis_server: RedisServer, tmp_path: Path) -> None:
    from aioipsec.cluster.settings import ClusterSettingsError

    secret = tmp_path / "redis.pass"
    secret.write_text("not-the-password\n")
    secret.chmod(0o644)
    config = settings(redis_server.url, A, password_file=str(secret))
    with pytest.raises(ClusterSettingsError, match="chmod 600"):
        config.password()
    secret.chmod(0o600)
    assert config.password() == "not-the-password"
    # The server wants that password now: with it the store works, without it it does not.
    import redis.asyncio as redis_asyncio

    admin = redis_asyncio.Redis(unix_socket_path=str(redis_server.socket))
    await admin.config_set("requirepass", "not-the-password")
    await admin.aclose()
    with_password, without = RedisStore(config), RedisStore(settings(redis_server.url, B))
    try:
        await with_password.publish(MemberState(A))
        await without.publish(MemberState(B))
        assert with_password.usable and set(with_password.view) == {A}
        assert not without.usable and without.failures == 1
    finally:
        await with_password.close()
        await without.close()
