"""CMN's own spans (gateway.telemetry.spans) against the SDK's: the same request, traced both ways with
the same ids, must export the same OTLP message (timestamps aside), and sample the same requests."""

from __future__ import annotations

import itertools
import random

import pytest
from opentelemetry import context as otel_context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, Span, SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway.telemetry.otlp_encode import OtlpSpanEncoder
from gateway.telemetry.spans import LeanSpan, LeanTracer

SCOPE = "gateway.telemetry"
PARENT = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tracestate": "vendor=x"}


class CountingIds(IdGenerator):
    """The same ids, in the same order, for both ways of tracing."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def generate_span_id(self) -> int:
        return self._rng.getrandbits(64)

    def generate_trace_id(self) -> int:
        return self._rng.getrandbits(128)


class Way:
    def __init__(self, lean: bool, ratio: float = 1.0, seed: int = 7) -> None:
        self.exported = InMemorySpanExporter()
        processor = SimpleSpanProcessor(self.exported)
        root = TraceIdRatioBased(ratio)
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": "cmn-test"}),
            sampler=ParentBased(root),
            id_generator=CountingIds(seed),
        )
        self.provider.add_span_processor(processor)
        self.lean = LeanTracer.of(self.provider, SCOPE, processor, root) if lean else None
        self.sdk = self.provider.get_tracer(SCOPE)

    def start(self, name: str, kind: SpanKind, attributes: dict[str, str | int], parent: object = None) -> Span:
        if self.lean is not None:
            return self.lean.start(name, kind, dict(attributes), parent)  # type: ignore[arg-type]
        return self.sdk.start_span(name, context=parent, kind=kind, attributes=attributes)  # type: ignore[arg-type]


def request(way: Way, *, fail: bool, headers: dict[str, str]) -> None:
    """What the gateway does for one request: a consumer span, current while an attempt span runs."""
    parent = TraceContextTextMapPropagator().extract(headers)
    consumer = way.start(
        "process cmn.requests",
        SpanKind.CONSUMER,
        {"messaging.system": "kafka", "messaging.destination.name": "cmn.requests", "messaging.message.id": "r-1"},
        parent,
    )
    token = otel_context.attach(set_span_in_context(consumer, parent))
    try:
        attempt = way.start(
            "GET",
            SpanKind.CLIENT,
            {"http.request.method": "GET", "url.full": "http://up/pay", "server.address": "up", "server.port": 80},
        )
        attempt.set_attribute("http.response.status_code", 503)
        attempt.set_attribute("error.type", "503")
        attempt.end()
        if fail:
            error = RuntimeError("bug")
            consumer.record_exception(error)
            consumer.set_status(Status(StatusCode.ERROR, f"RuntimeError: {error}"))
    finally:
        otel_context.detach(token)
        consumer.end()


def timeless(data: bytes) -> ExportTraceServiceRequest:
    message: ExportTraceServiceRequest = ExportTraceServiceRequest.FromString(data)
    for resource in message.resource_spans:
        for scope in resource.scope_spans:
            for span in scope.spans:
                span.start_time_unix_nano = span.end_time_unix_nano = 0
                for event in span.events:
                    event.time_unix_nano = 0
                    for pair in event.attributes:
                        if pair.key == "exception.stacktrace":
                            pair.value.string_value = "(differs by line)"
    return message


@pytest.mark.parametrize("fail", [False, True])
@pytest.mark.parametrize("headers", [PARENT, {}], ids=["continued", "new-trace"])
def test_the_same_request_exports_the_same_otlp_message_as_with_the_sdk_spans(
    fail: bool, headers: dict[str, str]
) -> None:
    sdk, lean = Way(lean=False), Way(lean=True)
    request(sdk, fail=fail, headers=headers)
    request(lean, fail=fail, headers=headers)
    sdk_spans, lean_spans = sdk.exported.get_finished_spans(), lean.exported.get_finished_spans()
    assert all(isinstance(span, LeanSpan) for span in lean_spans)
    expected = timeless(encode_spans(sdk_spans).SerializeToString())
    assert timeless(encode_spans(lean_spans).SerializeToString()) == expected  # the SDK's encoder (gRPC)
    assert timeless(OtlpSpanEncoder().request(lean_spans)) == expected  # CMN's lean one (OTLP/HTTP)
    assert len(expected.resource_spans[0].scope_spans[0].spans) == 2


def test_sampling_decides_as_the_sdk_does_and_an_unsampled_request_passes_its_context_on() -> None:
    sdk, lean = Way(lean=False, ratio=0.5, seed=11), Way(lean=True, ratio=0.5, seed=11)
    unsampled_parent = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"}
    for headers in itertools.chain(itertools.repeat({}, 40), [PARENT, unsampled_parent]):
        made = [
            way.start("process q", SpanKind.CONSUMER, {}, TraceContextTextMapPropagator().extract(headers))
            for way in (sdk, lean)
        ]
        contexts = [span.get_span_context() for span in made]
        assert contexts[0] == contexts[1]
        assert contexts[0].trace_flags.sampled == isinstance(made[1], LeanSpan)
        if not contexts[0].trace_flags.sampled:
            assert isinstance(made[1], NonRecordingSpan)
        for span in made:
            span.end()
    kept = [s.name for s in sdk.exported.get_finished_spans()]
    assert kept == [s.name for s in lean.exported.get_finished_spans()]
    assert 0 < len(kept) < 42  # the ratio kept some new traces and dropped others


def test_a_span_is_frozen_once_ended_and_ends_once() -> None:
    way = Way(lean=True)
    span = way.start("process q", SpanKind.CONSUMER, {"a": "1"})
    assert span.is_recording()
    span.end()
    span.set_attribute("late", "x")
    span.set_status(Status(StatusCode.ERROR, "late"))
    span.end()
    (finished,) = way.exported.get_finished_spans()
    assert isinstance(finished, ReadableSpan)
    assert not span.is_recording()
    assert dict(finished.attributes or {}) == {"a": "1"}
    assert finished.status.status_code is StatusCode.UNSET
