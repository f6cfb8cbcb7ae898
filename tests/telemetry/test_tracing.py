"""Tracing against a real OTLP receiver: one trace from the SDK, through a running gateway on either broker,
to each HTTP attempt; span names and attributes follow the OpenTelemetry messaging and HTTP conventions."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack

import aiohttp
import orjson
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import baggage
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import get_current_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway.client import GatewayClient
from gateway.errors import ConfigError
from gateway.telemetry.spans import LeanTracer
from gateway.telemetry.tracing import (
    NoopRequestTracer,
    OtelRequestTracer,
    TracingHandle,
    configure_tracing,
    http_traces_url,
)
from gateway.upstream.http import Exchange, HttpResult, exchange
from gateway.upstream.outcome import ConnectFailedError
from tests.fixtures.otlp import OtlpReceiver
from tests.fixtures.upstreams import StartUpstream, Upstream
from tests.integration.harness import requester_for, stack_factory

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


async def test_one_trace_from_the_sdk_through_a_running_gateway_to_each_http_attempt(
    broker: tuple[str, str | None], otlp_receiver: OtlpReceiver, start_upstream: StartUpstream
) -> None:
    """PRODUCER ``send <queue>`` from GatewayClient, CONSUMER ``process <queue>`` in the gateway, one
    CLIENT span per HTTP attempt with the stable HTTP attributes; every name and attribute checked."""
    kind, bootstrap = broker
    flaky = FlakyUpstream()
    upstream = await start_upstream(flaky.app())
    # The requesting component: a service of its own, with the PRODUCER span its SDK makes.
    component = TracerProvider(resource=Resource.create({SERVICE_NAME: "component"}))
    component.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(f"{otlp_receiver.endpoint}/v1/traces")))
    rid = uuid.uuid4().hex
    async with AsyncExitStack() as resources:
        make = await stack_factory(resources, kind, bootstrap)
        flaky_config = {"endpoints": [upstream.url], "retry": {"attempts": 2, "backoff_base": 0.001}}
        stack = await make({"flaky": flaky_config}, env={"OTLP_ENDPOINT": otlp_receiver.endpoint})
        async with GatewayClient(requester_for(stack), tracer_provider=component) as client:
            reply = await client.request("flaky", "GET", "/pay", request_id=rid)
    # The gateway closed: its tracing flushed on the way out.
    await asyncio.to_thread(component.force_flush)  # blocking export; the receiver shares this loop
    component.shutdown()
    assert reply.status == 200 and reply.attempts == 2
    spans = await otlp_receiver.wait_for(4)

    (producer,) = otlp_receiver.by_kind("producer")
    (consumer,) = otlp_receiver.by_kind("consumer")
    clients = otlp_receiver.by_kind("client")
    assert len(spans) == 4
    assert len({s.trace_id for s in spans}) == 1
    assert producer.parent_span_id == ""
    assert consumer.parent_span_id == producer.span_id
    assert [c.parent_span_id for c in clients] == [consumer.span_id] * 2  # retries are siblings
    assert (producer.name, producer.service_name) == (f"send {stack.queue}", "component")
    assert (consumer.name, consumer.service_name) == (f"process {stack.queue}", "cmn-gateway")
    for span, operation in ((producer, "send"), (consumer, "process")):
        assert span.attributes == {
            "messaging.system": kind,
            "messaging.operation.type": operation,
            "messaging.operation.name": operation,
            "messaging.destination.name": stack.queue,
            "messaging.message.id": rid,
            "messaging.message.conversation_id": rid,
        }
    port = int(upstream.url.rsplit(":", 1)[1])
    stable = {
        "http.request.method": "GET",
        "url.full": f"{upstream.url}/pay",
        "server.address": "127.0.0.1",
        "server.port": port,
    }
    assert [c.name for c in clients] == ["GET", "GET"]
    assert [{k: c.attributes.get(k) for k in stable} for c in clients] == [stable, stable]
    assert [c.attributes.get("http.response.status_code") for c in clients] == [503, 200]
    assert [c.attributes.get("error.type") for c in clients] == ["503", None]
    # The upstream saw each attempt's own span as parent.
    assert [ids(tp) for tp in flaky.traceparents] == [(c.trace_id, c.span_id, True) for c in clients]


async def attempt(
    http: aiohttp.ClientSession, tracing: TracingHandle, upstream: Upstream, path: str = "/pay"
) -> HttpResult:
    """One HTTP attempt the way the gateway's pool makes it, with the handle's attempt tracer."""
    ex = Exchange("GET", upstream.url + path, {}, None, timeout=5, connect_timeout=5, max_response_bytes=1 << 20)
    return await exchange(http, ex, tracing.attempts)


async def test_the_reply_headers_carry_the_consumer_span(tracing: TracingHandle, otlp_receiver: OtlpReceiver) -> None:
    reply_headers: dict[str, str] = {}
    with tracing.tracer.request_span(
        {"traceparent": SAMPLED_PARENT}, transport="rabbitmq", destination="q", correlation_id="r-1"
    ):
        tracing.tracer.inject(reply_headers)
    await tracing.flush()
    (consumer,) = await otlp_receiver.wait_for(1)
    assert ids(reply_headers["traceparent"]) == (consumer.trace_id, consumer.span_id, True)


def ids(traceparent: str | None) -> tuple[str, str, bool]:
    """(trace id, parent span id, sampled) of a W3C traceparent."""
    assert traceparent is not None
    _, trace_id, span_id, flags = traceparent.split("-")
    return trace_id, span_id, bool(int(flags, 16) & 1)


async def test_a_message_without_context_starts_a_new_trace_and_header_case_does_not_matter(
    tracing: TracingHandle, otlp_receiver: OtlpReceiver
) -> None:
    tracer = tracing.tracer
    with tracer.request_span({}, transport="kafka", destination="fresh", correlation_id=None):
        pass
    with tracer.request_span(
        {"TraceParent": SAMPLED_PARENT}, transport="kafka", destination="continued", correlation_id=None
    ):
        pass
    await tracing.flush()
    spans = {s.name: s for s in await otlp_receiver.wait_for(2)}
    assert spans["process fresh"].parent_span_id == ""
    assert spans["process continued"].trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert spans["process continued"].parent_span_id == "b7ad6b7169203331"


async def test_an_exception_inside_the_request_span_marks_it_as_an_error(
    tracing: TracingHandle, otlp_receiver: OtlpReceiver
) -> None:
    with (
        pytest.raises(RuntimeError),
        tracing.tracer.request_span({}, transport="kafka", destination="boom", correlation_id=None),
    ):
        raise RuntimeError("bug")
    await tracing.flush()
    (span,) = await otlp_receiver.wait_for(1)
    assert span.status_code == 2  # STATUS_CODE_ERROR


async def test_secret_query_parameters_stay_out_of_client_spans(
    tracing: TracingHandle, otlp_receiver: OtlpReceiver, echo_upstream: Upstream
) -> None:
    async with aiohttp.ClientSession() as http:
        with tracing.tracer.request_span({}, transport="kafka", destination="request", correlation_id=None):
            result = await attempt(http, tracing, echo_upstream, "/search?q=shoes&api_key=sk-live-123")
    assert result.status == 200
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
        probe = await attempt(http, tracing, echo_upstream, "/healthz")  # a health probe, say
        with tracing.tracer.request_span({}, transport="kafka", destination="request", correlation_id=None):
            assert (await attempt(http, tracing, echo_upstream, "/pay")).status == 200
    assert "traceparent" not in {k.lower() for k in orjson.loads(probe.body)["headers"]}
    await tracing.flush()
    spans = await otlp_receiver.wait_for(2)
    assert sorted(s.kind for s in spans) == ["client", "consumer"]
    assert len({s.trace_id for s in spans}) == 1


async def test_an_unsampled_request_makes_no_attempt_span_but_passes_its_context_on(
    otlp_receiver: OtlpReceiver, echo_upstream: Upstream
) -> None:
    """Sampling 0 and a publisher that did not sample: no span at all, and the upstream still gets the
    request's own (unsampled) traceparent, which the pipeline puts in the attempt's headers."""
    handle = configure_tracing(otlp_receiver.endpoint, sampling_ratio=0.0)
    unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
    async with handle, aiohttp.ClientSession() as http:
        with handle.tracer.request_span(
            {"traceparent": unsampled}, transport="kafka", destination="dropped", correlation_id=None
        ):
            carrier: dict[str, str] = {}
            handle.tracer.inject(carrier)
            ex = Exchange(
                "GET", echo_upstream.url, carrier, None, timeout=5, connect_timeout=5, max_response_bytes=1 << 20
            )
            seen = orjson.loads((await exchange(http, ex, handle.attempts)).body)["headers"]
        await handle.flush()
    assert otlp_receiver.spans == []
    forwarded = {k.lower(): v for k, v in seen.items()}["traceparent"]
    assert forwarded == carrier["traceparent"]  # the (unrecorded) consumer span's, not an attempt's
    assert ids(forwarded)[::2] == ("0af7651916cd43dd8448eb211c80319c", False)


async def test_a_failed_attempt_is_a_client_span_with_its_error_type(
    tracing: TracingHandle, otlp_receiver: OtlpReceiver, unused_port: int
) -> None:
    ex = Exchange(
        "POST", f"http://127.0.0.1:{unused_port}/pay", {}, b"{}", timeout=5, connect_timeout=5, max_response_bytes=64
    )
    async with aiohttp.ClientSession() as http:
        with (
            tracing.tracer.request_span({}, transport="rabbitmq", destination="q", correlation_id=None),
            pytest.raises(ConnectFailedError),
        ):
            await exchange(http, ex, tracing.attempts)
    await tracing.flush()
    (client,) = [s for s in await otlp_receiver.wait_for(2) if s.kind == "client"]
    assert client.name == "POST"
    assert client.attributes["error.type"] == "ConnectFailedError"
    assert "http.response.status_code" not in client.attributes


async def test_sampling_drops_new_traces_but_follows_a_sampled_parent(otlp_receiver: OtlpReceiver) -> None:
    handle = configure_tracing(otlp_receiver.endpoint, sampling_ratio=0.0)
    try:
        with handle.tracer.request_span({}, transport="kafka", destination="dropped", correlation_id=None):
            pass
        with handle.tracer.request_span(
            {"traceparent": SAMPLED_PARENT}, transport="kafka", destination="kept", correlation_id=None
        ):
            pass
        await handle.flush()
    finally:
        await handle.aclose()
    assert [s.name for s in otlp_receiver.spans] == ["process kept"]


async def test_grpc_export_reaches_a_grpc_receiver(otlp_grpc_receiver: OtlpReceiver) -> None:
    handle = configure_tracing(otlp_grpc_receiver.endpoint, protocol="grpc")
    async with handle:
        with handle.tracer.request_span({}, transport="rabbitmq", destination="over grpc", correlation_id=None):
            pass
        await handle.flush()
        (span,) = await otlp_grpc_receiver.wait_for(1)
    assert (span.name, span.kind, span.service_name) == ("process over grpc", "consumer", "cmn-gateway")


async def test_no_endpoint_means_no_tracing_at_all() -> None:
    handle = configure_tracing(None)
    assert isinstance(handle.tracer, NoopRequestTracer)
    assert handle.attempts is None  # the pool makes its attempts without any tracing call
    carrier: dict[str, str] = {}
    with handle.tracer.request_span(
        {"traceparent": SAMPLED_PARENT}, transport="kafka", destination="x", correlation_id=None
    ):
        handle.tracer.inject(carrier)
    assert carrier == {}
    await handle.aclose()
    assert repr(handle) == "<TracingHandle closed <NoopRequestTracer>>"


async def test_plain_aiohttp_sessions_are_not_instrumented(
    otlp_receiver: OtlpReceiver, echo_upstream: Upstream
) -> None:
    """Only the pool's attempts are traced: another aiohttp session in the process (a certificate
    fetch, a component's own client) gets no span and no traceparent, even inside a request."""
    handle = configure_tracing(otlp_receiver.endpoint)
    async with handle, aiohttp.ClientSession() as http:
        with handle.tracer.request_span({}, transport="kafka", destination="q", correlation_id=None):
            async with http.get(echo_upstream.url) as response:
                seen = (await response.json())["headers"]
        await handle.flush()
    assert "traceparent" not in {k.lower() for k in seen}
    assert [s.kind for s in await otlp_receiver.wait_for(1)] == ["consumer"]


async def test_spans_leave_on_their_own_after_the_export_interval(otlp_receiver: OtlpReceiver) -> None:
    handle = configure_tracing(otlp_receiver.endpoint, export_interval=0.05)
    async with handle:
        with handle.tracer.request_span({}, transport="kafka", destination="unflushed", correlation_id=None):
            pass
        (span,) = await otlp_receiver.wait_for(1, within=5)  # no flush(): the batch timer sent it
    assert span.name == "process unflushed"


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


@pytest.mark.parametrize("with_baggage", [False, True])
async def test_inject_writes_what_the_w3c_propagators_write(tracing: TracingHandle, with_baggage: bool) -> None:
    """The hand-written inject against the SDK's propagators: traceparent, tracestate and the baggage
    that came with the message."""
    from opentelemetry import propagate

    headers = {"traceparent": SAMPLED_PARENT, "tracestate": "vendor=abc,other=x-1"}
    if with_baggage:
        headers["baggage"] = "tenant=acme"
    with tracing.tracer.request_span(headers, transport="kafka", destination="q", correlation_id=None):
        ours: dict[str, str] = {}
        tracing.tracer.inject(ours)
        theirs: dict[str, str] = {}
        propagate.get_global_textmap().inject(theirs)
    assert ours == theirs
    assert ours["tracestate"] == "vendor=abc,other=x-1"
    assert ours.get("baggage") == ("tenant=acme" if with_baggage else None)


class _EveryCase(Getter[Mapping[str, str]]):
    """The getter the request span used before: an exact name, else the first name in any case."""

    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(key)
        if value is None:
            value = next((v for k, v in carrier.items() if k.lower() == key), None)
        return None if value is None else [value]

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return list(carrier)


_NAMES = st.sampled_from(["traceparent", "TraceParent", "TRACEPARENT", "tracestate", "TraceState", "baggage"])
_VALUES = st.sampled_from(
    [
        SAMPLED_PARENT,
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # invalid: a zero trace id
        "not-a-traceparent",
        "vendor=abc,other=x-1",
        "tenant=acme,tier=gold",
        "",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    headers=st.dictionaries(st.one_of(_NAMES, st.sampled_from(["content-type", "reply_to", "x-cmn-tenant"])), _VALUES)
)
def test_extract_reads_what_the_w3c_propagators_read(headers: dict[str, str]) -> None:
    """The one-pass extract against the SDK's composite propagator with the old every-case getter:
    the same parent span context (valid or not, sampled or not, its trace state) and the same baggage."""
    provider = TracerProvider()
    lean = LeanTracer.of(provider, "t", BatchSpanProcessor(OTLPSpanExporter("http://127.0.0.1:9")), ALWAYS_ON)
    ours = OtelRequestTracer(lean).extract(headers)
    theirs = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()]).extract(
        headers, getter=_EveryCase()
    )
    assert get_current_span(ours).get_span_context() == get_current_span(theirs).get_span_context()
    assert baggage.get_all(ours) == baggage.get_all(theirs)
