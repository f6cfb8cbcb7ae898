"""The forwarder end to end against real loopback upstreams."""

from __future__ import annotations

import asyncio
import json

import pytest

from gateway.clock import SystemClock
from gateway.errors import (
    DeadlineExceededError,
    PayloadTooLargeError,
    PoolExhaustedError,
    UnknownUpstreamError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from gateway.events import RecordingObserver, RetryAttempted
from gateway.upstream.config import UpstreamDefaults
from gateway.upstream.forward import GatewayForwarder, build_forwarder
from tests.fixtures.upstreams import StartUpstream, Upstream
from tests.upstream.helpers import dead_url, outbound, upstreams


def forwarder(observer: RecordingObserver | None = None, **configs: object) -> GatewayForwarder:
    return build_forwarder(
        upstreams(**configs),  # type: ignore[arg-type]  # test configs are plain dicts
        UpstreamDefaults(retry_attempts=3, request_timeout=5.0, connect_timeout=2.0),
        clock=SystemClock(),
        observer=observer or RecordingObserver(),
    )


async def test_forwards_method_path_headers_and_body(echo_upstream: Upstream) -> None:
    async with forwarder(svc={"endpoints": [echo_upstream.url]}) as fwd:
        request = outbound("svc", "POST", "/things?x=1", body=b'{"a": 1}', headers={"content-type": "application/json"})
        request = type(request)(
            request.envelope,
            request.body,
            request.headers,
            request.deadline,
            {"traceparent": "00-abc-def-01"},
        )
        response = await fwd.forward(request)
    echoed = json.loads(response.body)
    assert response.status == 200
    assert response.attempts == 1
    assert response.endpoint == echo_upstream.url
    assert echoed["method"] == "POST"
    assert echoed["path"] == "/things?x=1"
    assert echoed["body"] == '{"a": 1}'
    assert echoed["headers"]["traceparent"] == "00-abc-def-01"
    assert response.headers["content-type"].startswith("application/json")


async def test_knows_only_configured_upstreams(echo_upstream: Upstream) -> None:
    async with forwarder(svc={"endpoints": [echo_upstream.url]}) as fwd:
        assert fwd.knows("svc")
        assert not fwd.knows("other")
        with pytest.raises(UnknownUpstreamError):
            await fwd.forward(outbound("other"))


async def test_upstream_error_status_is_a_normal_response(echo_upstream: Upstream) -> None:
    async with forwarder(svc={"endpoints": [echo_upstream.url]}) as fwd:
        response = await fwd.forward(outbound(path="/?status=404"))
    assert response.status == 404
    assert response.attempts == 1


async def test_retryable_status_is_retried_then_returned(echo_upstream: Upstream) -> None:
    observer = RecordingObserver()
    async with forwarder(observer, svc={"endpoints": [echo_upstream.url]}) as fwd:
        response = await fwd.forward(outbound(path="/?status=503"))
    assert response.status == 503
    assert response.attempts == 3
    assert echo_upstream.hits == 3
    assert len(observer.of_type(RetryAttempted)) == 2


async def test_post_without_key_is_not_retried_on_status(echo_upstream: Upstream) -> None:
    async with forwarder(svc={"endpoints": [echo_upstream.url]}) as fwd:
        plain = await fwd.forward(outbound(method="POST", path="/?status=503"))
        keyed = await fwd.forward(outbound(method="POST", path="/?status=503", idempotency_key="k1"))
    assert plain.attempts == 1
    assert keyed.attempts == 3


async def test_refused_endpoint_fails_over_to_the_live_one(echo_upstream: Upstream) -> None:
    config = {"endpoints": [dead_url(), echo_upstream.url], "load_balancer": "round_robin"}
    async with forwarder(svc=config) as fwd:
        responses = [await fwd.forward(outbound(method="POST")) for _ in range(4)]
    assert all(r.status == 200 for r in responses)
    assert {r.endpoint for r in responses} == {echo_upstream.url}


async def test_every_endpoint_refusing_is_upstream_unavailable() -> None:
    async with forwarder(svc={"endpoints": [dead_url()]}) as fwd:
        with pytest.raises(UpstreamUnavailableError) as caught:
            await fwd.forward(outbound())
    assert caught.value.code == "upstream_unavailable"


async def test_a_slow_attempt_and_a_budget_run_out_during_an_attempt_are_both_timeout(echo_upstream: Upstream) -> None:
    """Upstream slowness is ``timeout`` (never dead-lettered), whether the attempt's or the request's budget ran out."""
    config = {"endpoints": [echo_upstream.url], "timeouts": {"attempt": 0.2}, "retry": {"attempts": 1}}
    async with forwarder(svc=config) as fwd:
        with pytest.raises(UpstreamTimeoutError) as timeout:
            await fwd.forward(outbound(path="/?delay_ms=1000", timeout=5.0))
        with pytest.raises(UpstreamTimeoutError) as budget:
            await fwd.forward(outbound(path="/?delay_ms=1000", timeout=0.2))
    assert timeout.value.code == budget.value.code == "timeout"
    assert "ran out during an attempt" in budget.value.message and not budget.value.dead_letter


async def test_expired_deadline_is_never_sent(echo_upstream: Upstream) -> None:
    async with forwarder(svc={"endpoints": [echo_upstream.url]}) as fwd:
        with pytest.raises(DeadlineExceededError):
            await fwd.forward(outbound(timeout=-1.0))
    assert echo_upstream.hits == 0


async def test_size_limits_both_ways(echo_upstream: Upstream) -> None:
    config = {
        "endpoints": [echo_upstream.url],
        "limits": {"max_request_bytes": 10, "max_response_bytes": 1000},
    }
    async with forwarder(svc=config) as fwd:
        with pytest.raises(PayloadTooLargeError):
            await fwd.forward(outbound(method="POST", body=b"x" * 11))
        with pytest.raises(PayloadTooLargeError):
            await fwd.forward(outbound(path="/?size=1001"))
        ok = await fwd.forward(outbound(path="/?size=1000"))
    assert len(ok.body) == 1000


async def test_pool_exhausted_names_upstream_in_use_and_wait(echo_upstream: Upstream) -> None:
    config = {"endpoints": [echo_upstream.url], "pool": {"max_size": 2, "acquire_timeout": 0.1}}
    async with forwarder(svc=config) as fwd:
        slow = [asyncio.ensure_future(fwd.forward(outbound(path="/?delay_ms=500"))) for _ in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(PoolExhaustedError) as caught:
            await fwd.forward(outbound())
        assert all(r.status == 200 for r in await asyncio.gather(*slow))
    message = str(caught.value)
    assert message.startswith("Connection pool exhausted: upstream svc, 2 in use, waited ")
    assert caught.value.code == "pool_exhausted"


async def test_many_concurrent_requests_share_a_bounded_pool(start_upstream: StartUpstream) -> None:
    upstream = await start_upstream()
    config = {"endpoints": [upstream.url], "pool": {"max_size": 5, "acquire_timeout": 5.0}}
    async with forwarder(svc=config) as fwd:
        responses = await asyncio.gather(*(fwd.forward(outbound(path="/?delay_ms=10")) for _ in range(100)))
        stats = fwd.router("svc").cluster.pool.stats(upstream.url)
    assert all(r.status == 200 for r in responses)
    assert stats.in_use == 0
    assert 1 <= stats.idle <= 5
