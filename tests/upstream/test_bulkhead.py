"""Slots and the bulkhead on a fake clock: fail fast on overflow, FIFO hand-over, deadline-bounded queueing."""

from __future__ import annotations

import asyncio

import pytest

from gateway.clock import Deadline
from gateway.errors import DeadlineExceededError
from gateway.testing import FakeClock
from gateway.upstream.bulkhead import Bulkhead, BulkheadFullError, BulkheadPolicy
from gateway.upstream.slots import Slots
from tests.upstream.helpers import parked


async def test_released_slot_goes_to_the_oldest_waiter_not_a_newcomer() -> None:
    clock = FakeClock()
    slots = Slots(1)
    assert slots.try_take()
    first = asyncio.ensure_future(slots.wait(clock, 10.0))
    await asyncio.sleep(0)
    slots.give()
    assert not slots.try_take()  # handed to the waiter, not free for grabs
    assert await first
    assert (slots.in_use, slots.waiting) == (1, 0)


async def test_wait_times_out_on_the_clock_and_leaves_no_trace() -> None:
    clock = FakeClock()
    slots = Slots(1)
    slots.try_take()
    waiter = asyncio.ensure_future(slots.wait(clock, 2.0))
    await parked(clock)
    clock.advance(2.0)
    assert await waiter is False
    assert slots.waiting == 0
    slots.give()
    assert slots.in_use == 0


async def test_cancelled_waiter_passes_a_handed_slot_on() -> None:
    clock = FakeClock()
    slots = Slots(1)
    slots.try_take()
    a = asyncio.ensure_future(slots.wait(clock, 10.0))
    b = asyncio.ensure_future(slots.wait(clock, 10.0))
    await asyncio.sleep(0)
    slots.give()  # handed to a ...
    a.cancel()  # ... which is cancelled before it runs
    await asyncio.gather(a, return_exceptions=True)
    assert await b
    assert (slots.in_use, slots.waiting) == (1, 0)


async def test_bulkhead_overflow_fails_fast_and_queue_is_bounded() -> None:
    clock = FakeClock()
    bulkhead = Bulkhead("svc", BulkheadPolicy(max_concurrent=2, max_queued=1), clock=clock)
    deadline = Deadline.after(clock, 30.0)
    release = asyncio.Event()

    async def work() -> None:
        async with bulkhead.enter(deadline):
            await release.wait()

    running = [asyncio.ensure_future(work()) for _ in range(3)]
    await asyncio.sleep(0)
    assert (bulkhead.in_flight, bulkhead.queued) == (2, 1)
    with pytest.raises(BulkheadFullError, match="Bulkhead full: upstream svc, 2 in flight, 1 queued") as caught:
        await work()
    assert caught.value.code == "pool_exhausted"
    release.set()
    await asyncio.gather(*running)
    assert (bulkhead.in_flight, bulkhead.queued) == (0, 0)


async def test_queued_request_waits_no_longer_than_its_deadline() -> None:
    clock = FakeClock()
    bulkhead = Bulkhead("svc", BulkheadPolicy(max_concurrent=1, max_queued=5), clock=clock)
    async with bulkhead.enter(Deadline.after(clock, 30.0)):
        queued = asyncio.ensure_future(bulkhead.enter(Deadline.after(clock, 1.0)).__aenter__())
        await parked(clock)
        clock.advance(1.0)
        with pytest.raises(DeadlineExceededError):
            await queued
