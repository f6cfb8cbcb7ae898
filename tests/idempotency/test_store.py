"""The dedupe store: in memory on a fake clock, and in the real Redis."""

from __future__ import annotations

import sys
import uuid

from gateway.idempotency import MemoryIdempotencyStore, RedisIdempotencyStore
from gateway.idempotency.store import ENTRY_OVERHEAD
from gateway.testing import FakeClock
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


def entry_bytes(key: str, value: bytes) -> int:
    """What one entry costs in the store's own accounting."""
    return sys.getsizeof(key) + sys.getsizeof(value) + ENTRY_OVERHEAD


async def test_memory_store_past_its_byte_budget_evicts_the_oldest_first() -> None:
    clock = FakeClock()
    value = b"v" * 1000
    store = MemoryIdempotencyStore(clock, max_bytes=4 * entry_bytes("k0", value) + 10)
    for i in range(5):
        await store.put(f"k{i}", value, ttl=60.0)
        clock.advance(1.0)
        assert store.nbytes <= 4 * entry_bytes("k0", value) + 10
    assert [await store.get(f"k{i}") for i in range(5)] == [None, value, value, value, value]
    assert (len(store), store.nbytes, store.evicted) == (4, 4 * entry_bytes("k0", value), 1)
    await store.put("k5", value, ttl=60.0)
    assert await store.get("k1") is None  # reading k1 earlier did not keep it: the oldest goes, not the least used
    assert await store.get("k2") == value


async def test_memory_store_evicts_the_soonest_to_expire_when_ttls_differ() -> None:
    clock = FakeClock()
    value = b"v" * 1000
    store = MemoryIdempotencyStore(clock, max_bytes=4 * entry_bytes("k0", value) + 10)
    for key, ttl in [("a", 600.0), ("b", 600.0), ("short", 10.0), ("c", 600.0), ("d", 600.0)]:
        await store.put(key, value, ttl=ttl)
    assert [await store.get(k) for k in ("a", "b", "short", "c", "d")] == [value, value, None, value, value]


async def test_memory_store_purges_expired_entries_and_their_bytes() -> None:
    clock = FakeClock()
    store = MemoryIdempotencyStore(clock)
    for i in range(5):
        await store.put(f"k{i}", b"v" * 100, ttl=100.0 + i)
    clock.advance(200.0)
    await store.put("new", b"v", ttl=1.0)
    assert (len(store), store.nbytes, store.evicted) == (1, entry_bytes("new", b"v"), 0)
    clock.advance(1.0)
    assert await store.get("new") is None
    assert store.nbytes == 0


async def test_memory_store_keeps_no_value_over_a_quarter_of_its_budget() -> None:
    clock = FakeClock()
    store = MemoryIdempotencyStore(clock, max_bytes=40_000)
    await store.put("small", b"s" * 1000, ttl=60.0)
    await store.put("big", b"b" * 10_001, ttl=60.0)
    assert await store.get("big") is None
    assert await store.get("small") == b"s" * 1000  # nothing was pushed out for it
    assert (len(store), store.too_large, store.evicted) == (1, 1, 0)
    assert "1 entries" in repr(store) and "1 too large" in repr(store)


async def test_memory_store_counts_a_rewritten_key_once() -> None:
    clock = FakeClock()
    store = MemoryIdempotencyStore(clock)
    await store.put("k", b"one" * 100, ttl=10.0)
    await store.put("k", b"two", ttl=10.0)
    assert store.nbytes == entry_bytes("k", b"two")
    await store.aclose()
    assert (len(store), store.nbytes) == (0, 0)


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
