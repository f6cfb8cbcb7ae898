"""Each signature is accepted once (per replica in memory, across replicas through Redis); a redelivery
of the same message, at the same broker position, is not a replay."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from gateway.access.replay import MemoryReplayRecord, RedisReplayRecord
from gateway.testing import FakeClock

REDIS = "redis://127.0.0.1:6379/0"


async def test_a_signature_is_accepted_once_until_its_window_passes() -> None:
    clock = FakeClock()
    record = MemoryReplayRecord(clock)
    assert await record.first_use("v1=aa", None, ttl=330)
    assert not await record.first_use("v1=aa", None, ttl=330)
    assert await record.first_use("v1=bb", None, ttl=330)
    clock.advance(331)
    assert await record.first_use("v1=aa", None, ttl=330)  # long stale: the age check refuses it anyway


async def test_the_same_position_is_a_redelivery_not_a_replay() -> None:
    record = MemoryReplayRecord(FakeClock())
    assert await record.first_use("v1=aa", "cmn.requests/0/41", ttl=330)
    assert await record.first_use("v1=aa", "cmn.requests/0/41", ttl=330)
    assert not await record.first_use("v1=aa", "cmn.requests/3/7", ttl=330)
    assert not await record.first_use("v1=aa", None, ttl=330)


async def test_memory_is_bounded_and_forgets_the_oldest_first() -> None:
    record = MemoryReplayRecord(FakeClock(), max_entries=3)
    for n in range(5):
        assert await record.first_use(f"v1={n}", None, ttl=330)
    assert record.forgotten_early == 2
    assert await record.first_use("v1=0", None, ttl=330)  # forgotten
    assert not await record.first_use("v1=4", None, ttl=330)  # still remembered


@pytest.fixture
async def shared() -> AsyncIterator[tuple[RedisReplayRecord, RedisReplayRecord]]:
    prefix = f"cmn-test:sig:{uuid.uuid4().hex}:"
    clients = [aioredis.Redis.from_url(REDIS) for _ in range(2)]
    records = [RedisReplayRecord(c, MemoryReplayRecord(FakeClock()), prefix=prefix) for c in clients]
    yield records[0], records[1]
    keys = [key async for key in clients[0].scan_iter(match=prefix + "*")]
    if keys:
        await clients[0].delete(*keys)
    for record in records:
        await record.aclose()


async def test_replicas_share_what_they_have_seen(shared: tuple[RedisReplayRecord, RedisReplayRecord]) -> None:
    one, two = shared
    assert await one.first_use("v1=cc", "t/0/1", ttl=5)
    assert not await two.first_use("v1=cc", None, ttl=5)  # a copy sent to the other replica
    assert await two.first_use("v1=cc", "t/0/1", ttl=5)  # the record itself, handled again after a rebalance
    assert not await two.first_use("v1=cc", "t/1/9", ttl=5)


async def test_an_unreachable_redis_falls_back_to_this_replicas_memory() -> None:
    dead = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2, socket_timeout=0.2)
    record = RedisReplayRecord(dead, MemoryReplayRecord(FakeClock()))
    assert await record.first_use("v1=dd", None, ttl=5)
    assert not await record.first_use("v1=dd", None, ttl=5)
    await record.aclose()
