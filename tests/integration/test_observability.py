"""Telemetry of a whole gateway: Prometheus scrapes it for real; one trace spans client → bus → gateway → upstream."""

from __future__ import annotations

import asyncio
from collections import Counter

from aiohttp import web
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from gateway.client import GatewayClient
from tests.fixtures.otlp import OtlpReceiver
from tests.fixtures.prometheus import StartPrometheus
from tests.fixtures.upstreams import StartUpstream, Upstream
from tests.integration.harness import StackFactory, transport_and_requester


async def test_prometheus_scrapes_the_request_count(
    make_stack: StackFactory, echo_upstream: Upstream, prometheus_server: StartPrometheus
) -> None:
    stack = await make_stack(
        {"echo": {"endpoints": [echo_upstream.url]}}, env={"ENABLE_METRICS": True, "METRICS_PORT": 0}
    )
    assert stack.gateway.metrics_port
    await asyncio.gather(*(stack.client.request("echo", "GET", f"/m/{i}") for i in range(25)))
    await asyncio.gather(*(stack.client.request("echo", "GET", "/m?status=503", timeout=5) for _ in range(3)))
    prometheus = await prometheus_server([f"127.0.0.1:{stack.gateway.metrics_port}"])
    ok = f'sum(cmn_requests_total{{upstream="echo",status_class="2xx",transport="{stack.kind}"}})'
    assert await prometheus.wait_for_value(ok, 25) == 25
    assert await prometheus.wait_for_value('sum(cmn_requests_total{status_class="5xx"})', 3) == 3
    assert await prometheus.wait_for_value("sum(cmn_requests_in_flight)", 0) == 0


def flaky_app(hits: Counter[str]) -> web.Application:
    """Answers 503 to the first call of each path, then 200: exactly one retry per request."""

    async def handle(request: web.Request) -> web.Response:
        hits[request.path] += 1
        if hits[request.path] == 1:
            return web.json_response({"try": "again"}, status=503)
        return web.json_response({"traceparent": request.headers.get("traceparent")})

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    return app


async def test_one_trace_links_producer_consumer_attempts_and_reply(
    make_stack: StackFactory, start_upstream: StartUpstream, otlp_receiver: OtlpReceiver
) -> None:
    hits: Counter[str] = Counter()
    upstream = await start_upstream(flaky_app(hits))
    stack = await make_stack(
        {"flaky": {"endpoints": [upstream.url], "retry": {"attempts": 3, "backoff_base": 0.001}}},
        env={"OTLP_ENDPOINT": otlp_receiver.endpoint},
    )
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: "component"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(f"{otlp_receiver.endpoint}/v1/traces")))
    _, requester = transport_and_requester(stack.kind, stack.queue, stack.bootstrap)
    async with GatewayClient(requester, tracer_provider=provider) as client:
        reply = await client.request("flaky", "GET", "/traced")
    assert reply.status == 200 and reply.attempts == 2
    # The exporter does blocking I/O and the receiver shares this loop: flush from a thread.
    await asyncio.to_thread(provider.force_flush)
    await stack.gateway.flush_traces()
    spans = await otlp_receiver.wait_for(4, within=20)

    producer = next(s for s in spans if s.kind == "producer" and s.service_name == "component")
    trace_spans = [s for s in spans if s.trace_id == producer.trace_id]
    consumer = next(s for s in trace_spans if s.kind == "consumer")
    attempts = [s for s in trace_spans if s.kind == "client"]
    assert consumer.parent_span_id == producer.span_id
    assert len(attempts) == 2
    assert {a.parent_span_id for a in attempts} == {consumer.span_id}  # retries are sibling attempt spans
    # The upstream saw the attempt span's context, so its own spans would join the same trace.
    assert reply.json_["traceparent"].split("-")[1] == producer.trace_id
    provider.shutdown()
