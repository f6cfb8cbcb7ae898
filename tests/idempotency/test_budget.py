"""The in-memory store is bounded by bytes: 40 keys with 4 MiB responses once held 300 MB for the TTL.

Memory is measured twice: by the store's own accounting and by tracemalloc (every Python allocation,
so a copy the accounting forgot would show). The clock is fake: nothing expires during a test, so only
the budget can bound the store.
"""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Iterator
from contextlib import AsyncExitStack

import pytest

from gateway.clock import Deadline
from gateway.idempotency import DEFAULT_MEMORY_BYTES, Deduplicator, IdempotencyKey, MemoryIdempotencyStore
from gateway.settings import load_settings
from gateway.testing import FakeClock
from gateway.upstream.base import UpstreamResponse
from gateway.wiring import build_dedupe_store

MIB = 1024 * 1024
BUDGET = 32 * MIB
BODY = 4 * MIB
SLACK = 2 * MIB  # interpreter and test objects beside the store


def key(n: int) -> IdempotencyKey:
    return IdempotencyKey.of(
        principal="billing", upstream="files", key=f"k{n}", method="POST", path="/export", body=b"{}", headers={}
    )


class BigUpstream:
    """Answers every call with a fresh body of ``size`` bytes, and counts the calls."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.calls = 0

    async def __call__(self) -> UpstreamResponse:
        self.calls += 1
        body = bytes([self.calls % 256]) * self.size
        return UpstreamResponse(200, {"content-type": "application/octet-stream"}, body, 1, "http://files-a", 0.01)


@pytest.fixture
def traced() -> Iterator[None]:
    tracemalloc.start()
    yield
    tracemalloc.stop()


def traced_now() -> int:
    return tracemalloc.get_traced_memory()[0]


async def test_forty_4mib_results_stay_within_a_32mib_budget(traced: None) -> None:
    clock = FakeClock()
    store = MemoryIdempotencyStore(clock, max_bytes=BUDGET)
    dedupe = Deduplicator(store, 300.0, clock)
    upstream = BigUpstream(BODY)
    before = traced_now()
    for n in range(40):
        answer = await dedupe.run(key(n), Deadline(1e12), upstream)
        assert (len(answer.body), answer.attempts) == (BODY, 1)
        assert store.nbytes <= BUDGET
        await asyncio.sleep(0)  # the loop runs the first call's done callbacks, as between real requests
    del answer
    held = traced_now() - before
    assert (len(store), store.evicted) == (7, 33)  # 7 packed 4 MiB results (plus overhead) fit in 32 MiB
    assert held <= BUDGET + SLACK, f"{held / MIB:.1f} MiB held"  # 160 MiB when bounded by count


async def test_the_newest_results_are_kept_and_an_evicted_key_goes_upstream_again() -> None:
    clock = FakeClock()
    dedupe = Deduplicator(MemoryIdempotencyStore(clock, max_bytes=BUDGET), 300.0, clock)
    upstream = BigUpstream(BODY)
    for n in range(40):
        await dedupe.run(key(n), Deadline(1e12), upstream)
    replay = await dedupe.run(key(39), Deadline(1e12), upstream)
    assert (replay.attempts, replay.body[:1], upstream.calls) == (0, bytes([40]), 40)
    again = await dedupe.run(key(0), Deadline(1e12), upstream)
    assert (again.attempts, upstream.calls) == (1, 41)


async def test_a_result_over_the_budget_share_is_answered_but_not_kept(traced: None) -> None:
    clock = FakeClock()
    store = MemoryIdempotencyStore(clock, max_bytes=BUDGET)
    dedupe = Deduplicator(store, 300.0, clock)
    upstream = BigUpstream(10 * MIB)  # the default MAX_RESPONSE_BYTES, over a quarter of 32 MiB
    before = traced_now()
    first = await dedupe.run(key(1), Deadline(1e12), upstream)
    assert (len(first.body), first.attempts) == (10 * MIB, 1)
    del first
    await asyncio.sleep(0)
    assert (len(store), store.nbytes, store.too_large) == (0, 0, 1)
    assert traced_now() - before <= SLACK
    second = await dedupe.run(key(1), Deadline(1e12), upstream)
    assert (second.attempts, upstream.calls) == (1, 2)  # as after the TTL: the duplicate goes upstream


async def test_the_gateway_default_store_has_the_default_budget() -> None:
    clock = FakeClock()
    async with AsyncExitStack() as resources:
        store = await build_dedupe_store(load_settings(REDIS_URL=None), clock=clock, resources=resources)
        assert isinstance(store, MemoryIdempotencyStore)
        assert store.max_bytes == DEFAULT_MEMORY_BYTES
        assert "of 64.0 MiB" in repr(store)
