"""Hedged requests through a whole gateway, on RabbitMQ and on Tansu: what the caller and Prometheus see."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from gateway.events import HedgeSent, HedgeWon
from tests.fixtures.upstreams import StartUpstream
from tests.integration.harness import Stack, StackFactory
from tests.upstream.helpers import events_of
from tests.upstream.scripted import Copy, Script, pair


async def hedge_counts(stack: Stack) -> dict[str, float]:
    """``cmn_hedges_total{upstream="svc"}`` by outcome, read from the gateway's /metrics."""
    url = f"http://127.0.0.1:{stack.gateway.metrics_port}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        text = await response.text()
    return {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "cmn_hedges_total" and sample.labels["upstream"] == "svc"
    }


async def test_a_slow_first_attempt_is_hedged_and_the_reply_says_two_attempts(
    make_stack: StackFactory, start_upstream: StartUpstream
) -> None:
    # Every request's first copy waits 2 s; any later copy answers at once.
    a, b = await pair(start_upstream, Script(Copy(delay=2.0), Copy(delay=0.0)))
    config = {"endpoints": [a.url, b.url], "hedge": {"after_ms": 50, "max": 1}}
    stack = await make_stack({"svc": config}, env={"ENABLE_METRICS": True, "METRICS_PORT": 0})
    hedged = await stack.client.request("svc", "GET", "/hedged", timeout=10)
    post = await stack.client.request("svc", "POST", "/not-replayable", json={"n": 1}, timeout=10)
    assert hedged.status == 200 and hedged.error is None
    assert hedged.attempts == 2
    assert post.status == 200 and post.attempts == 1  # a POST without an idempotency key waited the 2 s
    assert a.hits + b.hits == 3 and a.answered + b.answered == 2
    assert len(events_of(stack.events, HedgeSent)) == len(events_of(stack.events, HedgeWon)) == 1
    assert await hedge_counts(stack) == {"sent": 1.0, "won": 1.0}


async def test_hedges_end_with_the_callers_deadline(make_stack: StackFactory, start_upstream: StartUpstream) -> None:
    a, b = await pair(start_upstream, Script(rest=Copy(delay=5.0)))  # every copy slower than the deadline
    config = {"endpoints": [a.url, b.url], "hedge": {"after_ms": 50, "max": 1}}
    stack = await make_stack({"svc": config})
    reply = await stack.client.request("svc", "GET", "/slow-everywhere", timeout=0.6)
    assert reply.status is None and reply.error is not None
    assert reply.error.code == "timeout" and reply.attempts == 2
    assert a.hits + b.hits == 2 and a.answered + b.answered == 0
