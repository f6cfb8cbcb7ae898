"""Rate limits, bulkhead, retry budget, Retry-After and events, through the forwarder against real upstreams."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from gateway.clock import SystemClock
from gateway.errors import RateLimitedError
from gateway.events import (
    BreakerStateChanged,
    PoolStats,
    RateLimited,
    RecordingObserver,
    RetryAttempted,
    RetryBudgetExhausted,
)
from gateway.upstream.bulkhead import BulkheadFullError
from gateway.upstream.config import UpstreamDefaults
from gateway.upstream.forward import GatewayForwarder, build_forwarder
from tests.fixtures.upstreams import StartUpstream, Upstream
from tests.upstream.helpers import events_of, outbound, upstreams


def forwarder(observer: RecordingObserver, **config: object) -> GatewayForwarder:
    return build_forwarder(
        upstreams(svc=config),
        UpstreamDefaults(retry_attempts=3, request_timeout=5.0),
        clock=SystemClock(),
        observer=observer,
    )


async def test_rate_limits_per_upstream_and_per_tenant(echo_upstream: Upstream) -> None:
    observer = RecordingObserver()
    config = {
        "endpoints": [echo_upstream.url],
        "rate_limit": {"upstream": {"rate": 0.01, "burst": 3}, "per_tenant": {"rate": 0.01, "burst": 2}},
    }
    async with forwarder(observer, **config) as fwd:
        for _ in range(2):
            await fwd.forward(outbound(tenant="a"))
        with pytest.raises(RateLimitedError) as tenant_limited:
            await fwd.forward(outbound(tenant="a"))
        await fwd.forward(outbound(tenant="b"))
        with pytest.raises(RateLimitedError):
            await fwd.forward(outbound(tenant="c"))
    assert tenant_limited.value.code == "rate_limited"
    assert echo_upstream.hits == 3
    assert [e.scope for e in events_of(observer, RateLimited)] == ["tenant", "upstream"]


async def test_shared_rate_limit_through_redis(echo_upstream: Upstream) -> None:
    name = f"svc-{id(echo_upstream)}-{echo_upstream.port}"
    config = {"endpoints": [echo_upstream.url], "rate_limit": {"upstream": {"rate": 0.01, "burst": 2}, "shared": True}}
    replicas = [
        build_forwarder(
            upstreams(**{name: config}),
            UpstreamDefaults(),
            clock=SystemClock(),
            observer=RecordingObserver(),
            redis_url="redis://127.0.0.1:6379/0",
        )
        for _ in range(2)
    ]
    outcomes = []
    for i in range(4):
        try:
            await replicas[i % 2].forward(outbound(name))
            outcomes.append("ok")
        except RateLimitedError:
            outcomes.append("limited")
    for replica in replicas:
        await replica.aclose()
    assert outcomes == ["ok", "ok", "limited", "limited"]  # two replicas, one bucket of 2


async def test_bulkhead_overflow_fails_fast(echo_upstream: Upstream) -> None:
    config = {"endpoints": [echo_upstream.url], "limits": {"max_concurrent": 2, "max_queued": 1}}
    async with forwarder(RecordingObserver(), **config) as fwd:
        held = [asyncio.ensure_future(fwd.forward(outbound(path="/?delay_ms=300"))) for _ in range(3)]
        await asyncio.sleep(0.1)
        with pytest.raises(BulkheadFullError) as caught:
            await fwd.forward(outbound())
        assert [r.status for r in await asyncio.gather(*held)] == [200, 200, 200]
    assert caught.value.code == "pool_exhausted"


async def test_retry_budget_stops_a_retry_storm(echo_upstream: Upstream) -> None:
    observer = RecordingObserver()
    config = {
        "endpoints": [echo_upstream.url],
        "retry": {"attempts": 5, "backoff_base": 0.001, "budget_ratio": 0.0, "budget_min_per_second": 0.3},
        "breaker": {"enabled": False},
        "outlier_detection": {"enabled": False},
    }
    async with forwarder(observer, **config) as fwd:
        responses = [await fwd.forward(outbound(path="/?status=503")) for _ in range(3)]
    assert [r.attempts for r in responses] == [4, 1, 1]  # 3 retries allowed in the 10 s window, then none
    assert len(events_of(observer, RetryAttempted)) == 3
    assert len(events_of(observer, RetryBudgetExhausted)) == 3


def retry_after_app(seconds: str) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        return web.Response(status=503, headers={"Retry-After": seconds})

    app = web.Application()
    app.router.add_get("/", handle)
    return app


async def test_retry_after_is_honoured_but_never_past_the_deadline(start_upstream: StartUpstream) -> None:
    soon, later = await start_upstream(app=retry_after_app("0")), await start_upstream(app=retry_after_app("3"))
    async with forwarder(RecordingObserver(), endpoints=[soon.url]) as fwd:
        assert (await fwd.forward(outbound(timeout=2.0))).attempts == 3
    async with forwarder(RecordingObserver(), endpoints=[later.url]) as fwd:
        response = await fwd.forward(outbound(timeout=2.0))  # waiting 3 s would pass the 2 s deadline
    assert (response.status, response.attempts) == (503, 1)


async def test_breaker_events_name_upstream_and_endpoint_and_pool_stats_are_emitted(
    echo_upstream: Upstream,
) -> None:
    observer = RecordingObserver()
    config = {"endpoints": [echo_upstream.url], "breaker": {"minimum_calls": 2}, "retry": {"attempts": 1}}
    async with forwarder(observer, **config) as fwd:
        for _ in range(2):
            await fwd.forward(outbound(path="/?status=500"))
        fwd.emit_pool_stats()
    assert events_of(observer, BreakerStateChanged) == [BreakerStateChanged("svc", echo_upstream.url, "closed", "open")]
    [stats] = events_of(observer, PoolStats)
    assert (stats.upstream, stats.endpoint, stats.in_use, stats.waiting) == ("svc", echo_upstream.url, 0, 0)
