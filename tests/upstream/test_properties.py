"""Property tests for the small state machines under the pool, bulkhead, budget and time-based breaker."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.testing import FakeClock
from gateway.upstream.slots import Slots
from gateway.upstream.window import TimeWindow


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(st.tuples(st.floats(0.0, 30.0), st.integers(0, 5)), max_size=60),
    seconds=st.sampled_from([1.0, 10.0, 60.0]),
    buckets=st.integers(1, 12),
)
def test_time_window_counts_exactly_the_events_of_live_buckets(
    events: list[tuple[float, int]], seconds: float, buckets: int
) -> None:
    window = TimeWindow(seconds, fields=1, buckets=buckets)
    width = seconds / buckets
    now, seen = 0.0, []
    for step, count in events:
        now += step
        window.add(now, count)
        seen.append((int(now // width), count))
        newest = int(now // width)
        expected = sum(c for bucket, c in seen if bucket > newest - buckets)
        assert window.totals(now) == (expected,)


actions = st.lists(st.sampled_from(["take", "wait", "give", "cancel", "advance", "yield"]), max_size=80)


@settings(max_examples=300, deadline=None)
@given(actions=actions, size=st.integers(1, 4))
def test_slots_never_leak_or_exceed_their_size(actions: list[str], size: int) -> None:
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(_drive_slots(actions, size))
    finally:
        loop.close()


async def _drive_slots(actions: list[str], size: int) -> None:
    """Random takes, waits, gives, cancellations (also of waiters just handed a slot) and timeouts."""
    clock, slots = FakeClock(), Slots(size)
    held = 0  # slots our callers own: taken directly, or won by a waiter that finished
    waiters: list[asyncio.Task[bool]] = []
    cancelled: list[asyncio.Task[bool]] = []
    for action in actions:
        if action == "take":
            held += slots.try_take()
        elif action == "wait":
            waiters.append(asyncio.ensure_future(slots.wait(clock, 1.0)))
        elif action == "give" and held:
            slots.give()
            held -= 1
        elif action == "cancel" and waiters:
            cancelled.append(waiters.pop(0))
            cancelled[-1].cancel()
        elif action == "advance":
            clock.advance(0.5)
        elif action == "yield":
            await asyncio.sleep(0)
        held += _collect(waiters)
        assert 0 <= slots.in_use <= size
        assert slots.in_use >= held
    for task in waiters:
        task.cancel()
    results = await asyncio.gather(*waiters, *cancelled, return_exceptions=True)
    held += sum(1 for r in results if r is True)  # a cancel that came after the win is a win
    for _ in range(3):
        await asyncio.sleep(0)  # let the cancelled clock timers finish
    for _ in range(held):
        slots.give()
    assert (slots.in_use, slots.waiting) == (0, 0)


def _collect(waiters: list[asyncio.Task[bool]]) -> int:
    """Remove finished waiters; count those that got a slot."""
    done = [t for t in waiters if t.done()]
    for task in done:
        waiters.remove(task)
    return sum(1 for t in done if not t.cancelled() and t.result())
