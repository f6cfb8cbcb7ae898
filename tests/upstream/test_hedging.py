"""Hedged requests through the forwarder, against two real loopback endpoints.

The endpoints share one ``Script`` (tests/upstream/scripted.py), so "the first attempt is slow,
the hedge is fast" holds whichever endpoint the balancer picks first.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from gateway.clock import SystemClock
from gateway.errors import UpstreamTimeoutError
from gateway.events import HedgeSent, HedgeWon, RecordingObserver, RetryAttempted, RetryBudgetExhausted
from gateway.upstream.config import UpstreamDefaults
from gateway.upstream.forward import GatewayForwarder, build_forwarder
from tests.fixtures.upstreams import StartUpstream
from tests.upstream.helpers import events_of, outbound, upstreams
from tests.upstream.scripted import Copy, Endpoint, Script, pair


def forwarder(observer: RecordingObserver, a: Endpoint, b: Endpoint, **settings: object) -> GatewayForwarder:
    config = {"endpoints": [a.url, b.url], "load_balancer": "round_robin", "hedge": {"after_ms": 50}, **settings}
    return build_forwarder(
        upstreams(svc=config),
        UpstreamDefaults(retry_attempts=3, request_timeout=5.0, connect_timeout=2.0),
        clock=SystemClock(),
        observer=observer,
        stats_interval=None,
    )


_paths = itertools.count()


def fresh_path() -> str:
    return f"/r/{next(_paths)}"


async def until(condition: object, timeout: float = 2.0) -> None:
    """Wait for an endpoint to notice something (a dropped connection); fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not condition():  # type: ignore[operator]  # a zero-argument callable
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_a_hedge_goes_to_the_other_endpoint_after_after_ms_and_wins(start_upstream: StartUpstream) -> None:
    a, b = await pair(start_upstream, Script(Copy(delay=2.0), Copy(delay=0.0)))
    observer = RecordingObserver()
    async with forwarder(observer, a, b) as fwd:
        response = await fwd.forward(outbound("svc", path=fresh_path()))
        cluster = fwd.router("svc").cluster
        slow, fast = (a, b) if a.hits and a.answered == 0 else (b, a)
        # The loser was cancelled before forward returned: its pool slot and breaker permit are back,
        # and its endpoint was given no verdict.
        assert cluster.pool.snapshot(slow.url).in_use == 0
        calls = {e.url: e.breaker.calls for e in cluster.snapshot() if e.breaker is not None}
        assert calls == {slow.url: 0, fast.url: 1}
        assert all(h.consecutive_failures == 0 and h.active == 0 for h in cluster.hosts)
        await until(lambda: slow.dropped == 1)  # the slow endpoint saw its connection go
    assert response.status == 200 and response.attempts == 2
    assert response.endpoint == fast.url and slow.answered == 0
    [sent] = events_of(observer, HedgeSent)
    assert (sent.upstream, sent.endpoint, sent.attempt) == ("svc", fast.url, 2)
    assert [(w.upstream, w.endpoint) for w in events_of(observer, HedgeWon)] == [("svc", fast.url)]


async def test_an_answer_before_after_ms_sends_no_hedge(start_upstream: StartUpstream) -> None:
    a, b = await pair(start_upstream, Script(rest=Copy(delay=0.0)))
    observer = RecordingObserver()
    async with forwarder(observer, a, b, hedge={"after_ms": 500}) as fwd:
        responses = [await fwd.forward(outbound("svc", path=fresh_path())) for _ in range(4)]
    assert [r.attempts for r in responses] == [1, 1, 1, 1]
    assert a.hits + b.hits == 4 and not events_of(observer, HedgeSent)


async def test_a_post_without_an_idempotency_key_never_hedges(start_upstream: StartUpstream) -> None:
    a, b = await pair(start_upstream, Script(Copy(delay=0.3)))
    observer = RecordingObserver()
    async with forwarder(observer, a, b) as fwd:
        response = await fwd.forward(outbound("svc", "POST", fresh_path(), body=b"{}"))
    assert response.status == 200 and response.attempts == 1
    assert a.hits + b.hits == 1 and not events_of(observer, HedgeSent)


async def test_a_post_with_an_idempotency_key_may_hedge(start_upstream: StartUpstream) -> None:
    a, b = await pair(start_upstream, Script(Copy(delay=2.0), Copy(delay=0.0)))
    observer = RecordingObserver()
    async with forwarder(observer, a, b) as fwd:
        response = await fwd.forward(outbound("svc", "POST", fresh_path(), body=b"{}", idempotency_key="k-1"))
    assert response.status == 200 and response.attempts == 2
    assert len(events_of(observer, HedgeWon)) == 1


async def test_a_retryable_failure_of_the_first_attempt_waits_for_the_hedge(start_upstream: StartUpstream) -> None:
    # The first attempt answers 503 at 150 ms, after the hedge left at 50 ms; the hedge answers at 300 ms.
    a, b = await pair(start_upstream, Script(Copy(delay=0.15, status=503), Copy(delay=0.3)))
    observer = RecordingObserver()
    async with forwarder(observer, a, b) as fwd:
        response = await fwd.forward(outbound("svc", path=fresh_path()))
    assert response.status == 200 and response.attempts == 2
    assert a.answered + b.answered == 2 and not events_of(observer, RetryAttempted)
    assert len(events_of(observer, HedgeWon)) == 1


async def test_a_fast_retryable_failure_is_retried_as_usual_without_a_hedge(start_upstream: StartUpstream) -> None:
    a, b = await pair(start_upstream, Script(Copy(status=503), Copy()))
    observer = RecordingObserver()
    async with forwarder(observer, a, b) as fwd:
        response = await fwd.forward(outbound("svc", path=fresh_path()))
    assert response.status == 200 and response.attempts == 2
    assert len(events_of(observer, RetryAttempted)) == 1 and not events_of(observer, HedgeSent)


async def test_the_retry_budget_stops_hedges(start_upstream: StartUpstream) -> None:
    a, b = await pair(start_upstream, Script(Copy(delay=0.3)))  # every first copy is slow, later ones fast
    observer = RecordingObserver()
    budget = {"budget_ratio": 0.0, "budget_min_per_second": 0.1, "budget_window": 10}  # one retry per 10 s
    async with forwarder(observer, a, b, retry=budget) as fwd:
        hedged = await fwd.forward(outbound("svc", path=fresh_path()))
        refused = await fwd.forward(outbound("svc", path=fresh_path()))
    assert hedged.attempts == 2 and refused.attempts == 1
    assert len(events_of(observer, HedgeSent)) == 1
    assert len(events_of(observer, RetryBudgetExhausted)) == 1
    assert a.hits + b.hits == 3


async def test_the_deadline_bounds_the_first_attempt_and_the_hedges(start_upstream: StartUpstream) -> None:
    a, b = await pair(start_upstream, Script(rest=Copy(delay=3.0)))
    observer = RecordingObserver()
    clock = SystemClock()
    async with forwarder(observer, a, b, hedge={"after_ms": 50, "max": 1}) as fwd:
        started = clock.monotonic()
        with pytest.raises(UpstreamTimeoutError) as caught:
            await fwd.forward(outbound("svc", path=fresh_path(), timeout=0.4))
        took = clock.monotonic() - started
        cluster = fwd.router("svc").cluster
        assert all(cluster.pool.snapshot(e.url).in_use == 0 for e in (a, b))
        await until(lambda: a.dropped + b.dropped == 2)
    assert caught.value.attempts == 2 and a.hits + b.hits == 2
    assert took < 1.0  # the deadline (0.4 s), not the endpoints' 3 s
    assert a.answered + b.answered == 0


async def test_no_hedge_when_after_ms_would_pass_the_deadline(start_upstream: StartUpstream) -> None:
    a, b = await pair(start_upstream, Script(Copy(delay=0.2)))
    observer = RecordingObserver()
    async with forwarder(observer, a, b, hedge={"after_ms": 500}) as fwd:
        response = await fwd.forward(outbound("svc", path=fresh_path(), timeout=0.45))
    assert response.attempts == 1 and a.hits + b.hits == 1


async def test_up_to_max_hedges_each_on_another_endpoint(start_upstream: StartUpstream) -> None:
    script = Script(Copy(delay=2.0), Copy(delay=2.0), Copy(delay=0.0))
    endpoints = [Endpoint(script) for _ in range(3)]
    for endpoint in endpoints:
        endpoint.url = (await start_upstream(app=endpoint.app())).url
    observer = RecordingObserver()
    config = {"endpoints": [e.url for e in endpoints], "load_balancer": "random", "hedge": {"after_ms": 50, "max": 2}}
    async with build_forwarder(
        upstreams(svc=config), UpstreamDefaults(), clock=SystemClock(), observer=observer, stats_interval=None
    ) as fwd:
        response = await fwd.forward(outbound("svc", path=fresh_path()))
    assert response.status == 200 and response.attempts == 3
    assert [e.hits for e in endpoints] == [1, 1, 1]  # each copy on a different endpoint
    assert len(events_of(observer, HedgeSent)) == 2


async def test_p95_mode_learns_first_then_hedges_after_the_learned_p95(start_upstream: StartUpstream) -> None:
    script = Script(Copy(delay=0.3))
    a, b = await pair(start_upstream, script)
    observer = RecordingObserver()
    async with forwarder(observer, a, b, hedge={"after_ms": "p95"}) as fwd:
        unlearned = await fwd.forward(outbound("svc", path=fresh_path()))  # slow, but nothing learned yet
        script.copies = [Copy(delay=0.0)]
        for _ in range(30):
            await fwd.forward(outbound("svc", path=fresh_path()))
        hedging = fwd.router("svc").hedging
        assert hedging is not None
        learned = hedging.delay(remaining=5.0)
        script.copies = [Copy(delay=2.0), Copy(delay=0.0)]
        clock = SystemClock()
        started = clock.monotonic()
        hedged = await fwd.forward(outbound("svc", path=fresh_path()))
        took = clock.monotonic() - started
    assert unlearned.attempts == 1
    assert learned is not None and learned < 0.1  # loopback answers in a few ms
    assert hedged.attempts == 2 and len(events_of(observer, HedgeWon)) == 1
    assert took < 1.0  # hedged after the learned p95, long before the slow copy's 2 s


async def test_an_upstream_with_one_endpoint_open_never_hedges(start_upstream: StartUpstream) -> None:
    a, b = await pair(start_upstream, Script(Copy(delay=0.3)))
    observer = RecordingObserver()
    async with forwarder(observer, a, b) as fwd:
        fwd.force_breakers("svc", "open", principal="test", endpoint=b.url)
        response = await fwd.forward(outbound("svc", path=fresh_path()))
    assert response.endpoint == a.url and response.attempts == 1
    assert b.hits == 0 and not events_of(observer, HedgeSent)


async def test_max_counts_hedges_per_request_across_retries(start_upstream: StartUpstream) -> None:
    # Round 1: the first attempt and its hedge both answer 503; the retry is slow too, but max (1) is spent.
    script = Script(Copy(delay=0.15, status=503), Copy(delay=0.2, status=503), Copy(delay=0.2))
    a, b = await pair(start_upstream, script)
    observer = RecordingObserver()
    async with forwarder(observer, a, b, retry={"attempts": 3, "backoff_base": 0.001}) as fwd:
        response = await fwd.forward(outbound("svc", path=fresh_path()))
    assert response.status == 200 and response.attempts == 3
    assert len(events_of(observer, HedgeSent)) == 1 and len(events_of(observer, RetryAttempted)) == 1
    assert a.hits + b.hits == 3
