"""The dedupe store: in memory on a fake clock, and in the real Redis."""

from __future__ import annotations

import uuid

from gateway.testing import FakeClock
from gateway.upstream.idempotency import MemoryIdempotencyStore, RedisIdempotencyStore
from tests.upstream.helpers import dead_url


async def test_memory_store_keeps_a_value_until_its_ttl() -> None:
    clock = FakeClock()
    store = MemoryIdempotencyStore(clock)
    await store.put("k", b"reply", ttl=60.0)
    assert await store.get("k") == b"reply"
    assert await store.get("other") is None
    clock.advance(59.9)
    assert await store.get("k") == b"reply"
    clock.advance(0.1)
    assert await store.get("k") is None


async def test_memory_store_is_bounded_and_purges_expired_entries() -> None:
    clock = FakeClock()
    store = MemoryIdempotencyStore(clock, max_entries=3)
    for i in range(5):
        await store.put(f"k{i}", b"v", ttl=100.0 + i)
    assert len(store) == 3
    assert await store.get("k0") is None  # the soonest to expire went first
    assert await store.get("k4") == b"v"
    clock.advance(200.0)
    await store.put("new", b"v", ttl=1.0)
    assert len(store) == 1


async def test_memory_store_rewrite_extends_the_ttl() -> None:
    clock = FakeClock()
    store = MemoryIdempotencyStore(clock)
    await store.put("k", b"one", ttl=10.0)
    await store.put("k", b"two", ttl=100.0)
    clock.advance(50.0)
    await store.put("other", b"x", ttl=1.0)  # purges; the stale 10 s row must not drop "k"
    assert await store.get("k") == b"two"


async def test_redis_store_shares_values_between_replicas_with_a_ttl() -> None:
    prefix = f"cmn-test:{uuid.uuid4().hex}:"
    one = RedisIdempotencyStore.from_url("redis://127.0.0.1:6379/0", prefix=prefix)
    two = RedisIdempotencyStore.from_url("redis://127.0.0.1:6379/0", prefix=prefix)
    await one.put("k", b"\x00reply", ttl=30.0)
    assert await two.get("k") == b"\x00reply"
    assert await two.get("missing") is None
    ttl_ms = await two._client.pttl(prefix + "k")
    assert 0 < ttl_ms <= 30_000
    await one._client.delete(prefix + "k")
    await one.aclose()
    await two.aclose()


async def test_unreachable_redis_store_fails_open() -> None:
    store = RedisIdempotencyStore.from_url(dead_url().replace("http", "redis"), timeout=0.2)
    await store.put("k", b"v", ttl=5.0)
    assert await store.get("k") is None
    await store.aclose()
