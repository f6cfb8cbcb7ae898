"""Tracing against a real OTLP receiver: one trace from producer, over RabbitMQ, to each HTTP attempt."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping

import aio_pika
import aiohttp
import pytest
from aiohttp import web
from opentelemetry import propagate
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

from gateway.errors import ConfigError
from gateway.telemetry.tracing import (
    NoopRequestTracer,
    OtelRequestTracer,
    TracingHandle,
    configure_tracing,
    http_traces_url,
)
from tests.fixtures.otlp import OtlpReceiver
from tests.fixtures.rabbit import AMQP_URL
from tests.fixtures.upstreams import StartUpstream, Upstream

SAMPLED_PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class FlakyUpstream:
    """Answers 503 to the first call and 200 afterwards; remembers the traceparent of each call."""

    def __init__(self) -> None:
        self.traceparents: list[str | None] = []

    def app(self) -> web.Application:
        async def handle(request: web.Request) -> web.Response:
            self.traceparents.append(request.headers.get("traceparent"))
            return web.Response(status=503 if len(self.traceparents) == 1 else 200, text="ok")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        return app


@pytest.fixture
async def tracing(otlp_receiver: OtlpReceiver) -> AsyncIterator[TracingHandle]:
    handle = configure_tracing(otlp_receiver.endpoint, service_name="cmn-test")
    yield handle
    await handle.aclose()


async def through_rabbitmq(headers: Mapping[str, str]) -> dict[str, str]:
    """Publishes a message with ``headers`` to a queue of the test's own and takes it back off the broker."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"cmn.test.tracing-{uuid.uuid4().hex[:8]}", exclusive=True)
        await channel.default_exchange.publish(aio_pika.Message(b"{}", headers=dict(headers)), routing_key=queue.name)
        message = await queue.get(timeout=5)
        await message.ack()
    return {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in message.headers.items()}


async def test_one_trace_links_producer_consumer_and_sibling_http_attempts(
    tracing: TracingHandle, otlp_receiver: OtlpReceiver, start_upstream: StartUpstream
) -> None:
    flaky = FlakyUpstream()
    upstream = await start_upstream(flaky.app())
    tracer = tracing.tracer
    # The requesting component: a service of its own, with the PRODUCER span its SDK makes.
    component = TracerProvider(resource=Resource.create({SERVICE_NAME: "component"}))
    component.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(f"{otlp_receiver.endpoint}/v1/traces")))
    with component.get_tracer("component").start_as_current_span("cmn.requests send", kind=SpanKind.PRODUCER):
        published: dict[str, str] = {}
        propagate.inject(published)
    await asyncio.to_thread(component.force_flush)  # blocking export; the receiver shares this loop
    component.shutdown()
    delivered = await through_rabbitmq(published)
    reply_headers: dict[str, str] = {}
    async with aiohttp.ClientSession() as http:  # created after configure_tracing: instrumented
        with tracer.request_span(
            delivered, name="cmn.requests process", transport="rabbitmq", attributes={"cmn.upstream": "flaky"}
        ):
            statuses = [await attempt(http, upstream) for _ in range(2)]
            tracer.inject(reply_headers)
    assert statuses == [503, 200]
    assert await tracing.flush()
    spans = await otlp_receiver.wait_for(4)

    (producer,) = otlp_receiver.by_kind("producer")
    (consumer,) = otlp_receiver.by_kind("consumer")
    clients = otlp_receiver.by_kind("client")
    assert len(spans) == 4
    assert len({s.trace_id for s in spans}) == 1
    assert producer.parent_span_id == ""
    assert consumer.parent_span_id == producer.span_id
    assert [c.parent_span_id for c in clients] == [consumer.span_id] * 2  # retries are siblings
    assert consumer.attributes == {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": "process",
        "cmn.upstream": "flaky",
    }
    assert consumer.service_name == "cmn-test"
    # The upstream saw each attempt's own span as parent; the reply carries the consumer span.
    assert [ids(tp) for tp in flaky.traceparents] == [(c.trace_id, c.span_id, True) for c in clients]
    assert ids(reply_headers["traceparent"]) == (consumer.trace_id, consumer.span_id, True)


def ids(traceparent: str | None) -> tuple[str, str, bool]:
    """(trace id, parent span id, sampled) of a W3C traceparent."""
    assert traceparent is not None
    _, trace_id, span_id, flags = traceparent.split("-")
    return trace_id, span_id, bool(int(flags, 16) & 1)


async def attempt(http: aiohttp.ClientSession, upstream: Upstream, path: str = "/pay") -> int:
    async with http.get(upstream.url + path) as response:
        return response.status


async def test_a_message_without_context_starts_a_new_trace_and_header_case_does_not_matter(
    tracing: TracingHandle, otlp_receiver: OtlpReceiver
) -> None:
    tracer = tracing.tracer
    with tracer.request_span({}, name="fresh", transport="kafka", attributes={}):
        pass
    with tracer.request_span({"TraceParent": SAMPLED_PARENT}, name="continued", transport="kafka", attributes={}):
        pass
    await tracing.flush()
    spans = {s.name: s for s in await otlp_receiver.wait_for(2)}
    assert spans["fresh"].parent_span_id == ""
    assert spans["continued"].trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert spans["continued"].parent_span_id == "b7ad6b7169203331"


async def test_an_exception_inside_the_request_span_marks_it_as_an_error(
    tracing: TracingHandle, otlp_receiver: OtlpReceiver
) -> None:
    with (
        pytest.raises(RuntimeError),
        tracing.tracer.request_span({}, name="boom", transport="kafka", attributes={}),
    ):
        raise RuntimeError("bug")
    await tracing.flush()
    (span,) = await otlp_receiver.wait_for(1)
    assert span.status_code == 2  # STATUS_CODE_ERROR


async def test_secret_query_parameters_stay_out_of_client_spans(
    tracing: TracingHandle, otlp_receiver: OtlpReceiver, echo_upstream: Upstream
) -> None:
    async with aiohttp.ClientSession() as http:
        with tracing.tracer.request_span({}, name="request", transport="kafka", attributes={}):
            assert await attempt(http, echo_upstream, "/search?q=shoes&api_key=sk-live-123") == 200
    await tracing.flush()
    spans = await otlp_receiver.wait_for(2)
    (client,) = [s for s in spans if s.kind == "client"]
    urls = [v for v in client.attributes.values() if isinstance(v, str) and "/search" in v]
    assert urls
    assert all("sk-live-123" not in url and "q=shoes" in url for url in urls)


async def test_http_calls_outside_any_request_start_no_trace(
    tracing: TracingHandle, otlp_receiver: OtlpReceiver, echo_upstream: Upstream
) -> None:
    async with aiohttp.ClientSession() as http:
        assert await attempt(http, echo_upstream, "/healthz") == 200  # a health probe, say
        with tracing.tracer.request_span({}, name="request", transport="kafka", attributes={}):
            assert await attempt(http, echo_upstream, "/pay") == 200
    await tracing.flush()
    spans = await otlp_receiver.wait_for(2)
    assert sorted(s.kind for s in spans) == ["client", "consumer"]
    assert len({s.trace_id for s in spans}) == 1


async def test_sampling_drops_new_traces_but_follows_a_sampled_parent(otlp_receiver: OtlpReceiver) -> None:
    handle = configure_tracing(otlp_receiver.endpoint, sampling_ratio=0.0)
    try:
        with handle.tracer.request_span({}, name="dropped", transport="kafka", attributes={}):
            pass
        with handle.tracer.request_span({"traceparent": SAMPLED_PARENT}, name="kept", transport="kafka", attributes={}):
            pass
        await handle.flush()
    finally:
        await handle.aclose()
    assert [s.name for s in otlp_receiver.spans] == ["kept"]


async def test_grpc_export_reaches_a_grpc_receiver(otlp_grpc_receiver: OtlpReceiver) -> None:
    handle = configure_tracing(otlp_grpc_receiver.endpoint, protocol="grpc")
    async with handle:
        with handle.tracer.request_span({}, name="over grpc", transport="rabbitmq", attributes={}):
            pass
        await handle.flush()
        (span,) = await otlp_grpc_receiver.wait_for(1)
    assert (span.name, span.kind, span.service_name) == ("over grpc", "consumer", "cmn-gateway")


async def test_no_endpoint_means_no_tracing_at_all(echo_upstream: Upstream) -> None:
    handle = configure_tracing(None)
    assert isinstance(handle.tracer, NoopRequestTracer)
    carrier: dict[str, str] = {}
    with handle.tracer.request_span({"traceparent": SAMPLED_PARENT}, name="x", transport="kafka", attributes={}):
        handle.tracer.inject(carrier)
    assert carrier == {}
    async with aiohttp.ClientSession() as http, http.get(echo_upstream.url) as response:
        seen = (await response.json())["headers"]
    assert "traceparent" not in {k.lower() for k in seen}
    await handle.aclose()
    assert repr(handle) == "<TracingHandle closed <NoopRequestTracer>>"


async def test_closing_stops_instrumenting_new_sessions(otlp_receiver: OtlpReceiver, echo_upstream: Upstream) -> None:
    handle = configure_tracing(otlp_receiver.endpoint)
    assert isinstance(handle.tracer, OtelRequestTracer)
    await handle.aclose()
    async with aiohttp.ClientSession() as http, http.get(echo_upstream.url) as response:
        seen = (await response.json())["headers"]
    assert "traceparent" not in {k.lower() for k in seen}


async def test_spans_leave_on_their_own_after_the_export_interval(otlp_receiver: OtlpReceiver) -> None:
    handle = configure_tracing(otlp_receiver.endpoint, export_interval=0.05)
    async with handle:
        with handle.tracer.request_span({}, name="unflushed", transport="kafka", attributes={}):
            pass
        (span,) = await otlp_receiver.wait_for(1, within=5)  # no flush(): the batch timer sent it
    assert span.name == "unflushed"


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        configure_tracing("http://127.0.0.1:4318", sampling_ratio=1.5)
    with pytest.raises(ConfigError):
        configure_tracing("http://127.0.0.1:4318", protocol="smoke")  # type: ignore[arg-type]  # on purpose


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("http://collector:4318", "http://collector:4318/v1/traces"),
        ("http://collector:4318/", "http://collector:4318/v1/traces"),
        ("https://otlp.example.com/v1/traces", "https://otlp.example.com/v1/traces"),
    ],
)
def test_http_endpoint_gets_the_traces_path(endpoint: str, url: str) -> None:
    assert http_traces_url(endpoint) == url
