"""Shared limits through the real Redis on 127.0.0.1:6379, and the fallback when it is unreachable."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from gateway.events import RateLimitBackendFallback, RecordingObserver
from gateway.testing import FakeClock
from gateway.upstream.ratelimit import LocalBuckets, Rate
from gateway.upstream.ratelimit_redis import RedisBuckets
from tests.upstream.helpers import dead_url, events_of

REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    p = f"cmn-test:{uuid.uuid4().hex}:"
    yield p
    client = aioredis.Redis.from_url(REDIS)
    keys = [k async for k in client.scan_iter(match=p + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def backend(
    url: str, prefix: str, clock: FakeClock, observer: RecordingObserver, *, timeout: float = 0.25
) -> RedisBuckets:
    client = aioredis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    return RedisBuckets(client, fallback=LocalBuckets(clock), clock=clock, observer=observer, prefix=prefix)


async def test_two_replicas_share_one_bucket(prefix: str) -> None:
    clock, observer = FakeClock(), RecordingObserver()
    one, two = backend(REDIS, prefix, clock, observer), backend(REDIS, prefix, clock, observer)
    rate = Rate(0.001, 4.0)
    results = [await (one if i % 2 else two).take([("svc", rate)]) for i in range(6)]
    await one.aclose()
    await two.aclose()
    assert [wait == 0.0 for wait, _ in results] == [True, True, True, True, False, False]
    assert results[-1][1] == 0
    assert results[-1][0] > 100  # ~1000 s until the next token at 0.001/s
    assert observer.events == []


async def test_take_is_all_or_nothing_and_names_the_limiting_bucket(prefix: str) -> None:
    clock, observer = FakeClock(), RecordingObserver()
    shared = backend(REDIS, prefix, clock, observer)
    tenant, upstream = ("svc|tenant|a", Rate(0.001, 1.0)), ("svc", Rate(0.001, 2.0))
    assert await shared.take([tenant, upstream]) == (0.0, -1)
    wait, index = await shared.take([tenant, upstream])
    assert wait > 0 and index == 0
    assert await shared.take([upstream]) == (0.0, -1)  # the refused call did not spend the upstream token
    wait, index = await shared.take([upstream])
    assert wait > 0 and index == 0
    await shared.aclose()


async def test_unreachable_redis_falls_back_to_local_limits_and_says_so_once() -> None:
    clock, observer = FakeClock(), RecordingObserver()
    down = backend(dead_url().replace("http", "redis"), "x:", clock, observer)
    rate = Rate(0.001, 2.0)
    results = [await down.take([("svc", rate)]) for _ in range(3)]
    assert [wait == 0.0 for wait, _ in results] == [True, True, False]  # local buckets still limit
    assert down.degraded
    [event] = events_of(observer, RateLimitBackendFallback)
    assert event.reason == "redis unreachable (ConnectionError)"
    clock.advance(5.0)
    await down.take([("svc", rate)])  # tries Redis again, still down: no second event
    assert len(observer.of_type(RateLimitBackendFallback)) == 1
    await down.aclose()


async def test_concurrent_takes_from_two_replicas_spend_exactly_the_burst(prefix: str) -> None:
    """The script is one atomic step: 100 takes racing from two clients at a burst of 10 get 10 tokens.
    A read-then-write from the client side would let several racers read the same level."""
    clock, observer = FakeClock(), RecordingObserver()
    # A generous timeout: 100 racing calls on a busy machine must not fall back to local buckets.
    one = backend(REDIS, prefix, clock, observer, timeout=10.0)
    two = backend(REDIS, prefix, clock, observer, timeout=10.0)
    rate = Rate(0.001, 10.0)  # one token per ~17 minutes: nothing refills during the test
    try:
        results = await asyncio.gather(*((one if i % 2 else two).take([("race", rate)]) for i in range(100)))
    finally:
        await one.aclose()
        await two.aclose()
    assert observer.events == []  # really through Redis, not the local fallback
    granted = [wait for wait, _ in results if wait == 0.0]
    assert len(granted) == 10
    assert all(index == 0 for wait, index in results if wait > 0)
    assert observer.events == []  # really through Redis, not the local fallback
