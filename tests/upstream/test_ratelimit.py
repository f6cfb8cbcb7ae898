"""Token buckets and the per-upstream/per-tenant limiter on a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from gateway.clock import Deadline
from gateway.errors import RateLimitedError
from gateway.events import RateLimited, RecordingObserver
from gateway.testing import FakeClock
from gateway.upstream.ratelimit import LocalBuckets, Rate, RateLimiter
from tests.upstream.helpers import parked


def limiter(
    clock: FakeClock,
    *,
    upstream: Rate | None = None,
    tenant: Rate | None = None,
    wait: bool = False,
) -> tuple[RateLimiter, RecordingObserver]:
    observer = RecordingObserver()
    return (
        RateLimiter(
            "svc",
            upstream_rate=upstream,
            tenant_rate=tenant,
            wait=wait,
            backend=LocalBuckets(clock),
            clock=clock,
            observer=observer,
        ),
        observer,
    )


async def admitted(lim: RateLimiter, clock: FakeClock, tenant: str | None, n: int) -> int:
    count = 0
    for _ in range(n):
        try:
            await lim.acquire(tenant, Deadline.after(clock, 10.0))
        except RateLimitedError:
            continue
        count += 1
    return count


async def test_burst_then_refill_at_the_rate() -> None:
    clock = FakeClock()
    lim, _ = limiter(clock, upstream=Rate(rate=2.0, burst=5.0))
    assert await admitted(lim, clock, None, 10) == 5
    clock.advance(1.0)
    assert await admitted(lim, clock, None, 10) == 2
    clock.advance(100.0)
    assert await admitted(lim, clock, None, 10) == 5  # never more than the burst


async def test_tenants_have_their_own_buckets_and_the_rejection_names_the_scope() -> None:
    clock = FakeClock()
    lim, observer = limiter(clock, upstream=Rate(100.0, 100.0), tenant=Rate(1.0, 2.0))
    assert await admitted(lim, clock, "a", 5) == 2
    assert await admitted(lim, clock, "b", 5) == 2
    with pytest.raises(RateLimitedError, match="tenant a on upstream svc"):
        await lim.acquire("a", Deadline.after(clock, 10.0))
    assert observer.of_type(RateLimited)[-1] == RateLimited("svc", "a", "tenant")


async def test_a_tenant_refused_by_its_bucket_does_not_spend_the_upstream_token() -> None:
    clock = FakeClock()
    lim, observer = limiter(clock, upstream=Rate(0.001, 3.0), tenant=Rate(0.001, 1.0))
    assert await admitted(lim, clock, "a", 5) == 1
    assert await admitted(lim, clock, "b", 1) == 1
    assert await admitted(lim, clock, "c", 1) == 1
    assert await admitted(lim, clock, "d", 1) == 0  # upstream bucket (3) now empty
    assert observer.of_type(RateLimited)[-1] == RateLimited("svc", "d", "upstream")


async def test_waiting_mode_waits_for_a_token_within_the_deadline() -> None:
    clock = FakeClock()
    lim, _ = limiter(clock, upstream=Rate(rate=2.0, burst=1.0), wait=True)
    await lim.acquire(None, Deadline.after(clock, 5.0))
    waiting = asyncio.ensure_future(lim.acquire(None, Deadline.after(clock, 5.0)))
    await parked(clock)
    assert not waiting.done()
    clock.advance(0.5)
    await asyncio.wait_for(waiting, 1.0)


async def test_waiting_mode_refuses_when_the_token_comes_after_the_deadline() -> None:
    clock = FakeClock()
    lim, _ = limiter(clock, upstream=Rate(rate=0.1, burst=1.0), wait=True)
    await lim.acquire(None, Deadline.after(clock, 5.0))
    with pytest.raises(RateLimitedError):
        await lim.acquire(None, Deadline.after(clock, 5.0))  # next token in 10 s


async def test_no_limits_configured_admits_everything() -> None:
    clock = FakeClock()
    lim, _ = limiter(clock, tenant=Rate(1.0, 1.0))
    assert await admitted(lim, clock, None, 50) == 50  # per-tenant only, and no tenant given


def test_local_buckets_forget_the_least_recently_used() -> None:
    clock = FakeClock()
    buckets = LocalBuckets(clock, max_buckets=2)
    rate = Rate(0.001, 1.0)
    assert buckets.take_now([("a", rate)]) == (0.0, -1)
    assert buckets.take_now([("a", rate)])[0] > 0
    buckets.take_now([("b", rate)])
    buckets.take_now([("c", rate)])  # evicts "a"
    assert buckets.take_now([("a", rate)]) == (0.0, -1)
