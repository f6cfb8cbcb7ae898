"""The lean OTLP encoder against the SDK's: the same spans must decode to the same request, field by field."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway.telemetry.messaging import PER_MESSAGE
from gateway.telemetry.otlp_encode import LeanOtlpSpanExporter, OtlpSpanEncoder

PARENT = {
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "tracestate": "vendor=abc,other=x-1",
}


@pytest.fixture
def recorded() -> Iterator[tuple[Tracer, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: "cmn-test", "deployment": "ci"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield (
        provider.get_tracer("gateway.telemetry", "1.0", schema_url="https://opentelemetry.io/schemas/1.21.0"),
        exporter,
    )
    provider.shutdown()


def same_as_sdk(spans: Sequence[ReadableSpan], encoder: OtlpSpanEncoder | None = None) -> None:
    lean = ExportTraceServiceRequest.FromString((encoder or OtlpSpanEncoder()).request(spans))
    assert lean == encode_spans(spans)


def test_the_gateways_spans_encode_as_the_sdk_encodes_them(recorded: tuple[Tracer, InMemorySpanExporter]) -> None:
    """A consumer span continuing a remote parent (with tracestate), a client span per attempt, an error."""
    tracer, exporter = recorded
    parent = TraceContextTextMapPropagator().extract(PARENT)
    messaging = {"messaging.system": "rabbitmq", "messaging.destination.name": "cmn.requests", "id": "r-1"}
    with tracer.start_as_current_span("process cmn.requests", context=parent, kind=SpanKind.CONSUMER) as consumer:
        consumer.set_attributes(messaging)
        for status in (503, 200):
            with tracer.start_as_current_span("GET", kind=SpanKind.CLIENT) as client:
                client.set_attributes({"http.request.method": "GET", "server.port": 8080, "url.full": "http://u/é"})
                client.set_attribute("http.response.status_code", status)
    with pytest.raises(RuntimeError), tracer.start_as_current_span("process boom", kind=SpanKind.CONSUMER):
        raise RuntimeError("bug ünïcode")  # an exception event with attributes, status ERROR with description
    spans = exporter.get_finished_spans()
    assert len(spans) == 4
    assert spans[-1].status.status_code is StatusCode.ERROR and spans[-1].events
    encoder = OtlpSpanEncoder()
    same_as_sdk(spans, encoder)
    same_as_sdk(spans, encoder)  # again, now from the cached pairs


def test_links_events_statuses_and_every_value_type(recorded: tuple[Tracer, InMemorySpanExporter]) -> None:
    tracer, exporter = recorded
    with tracer.start_as_current_span("first") as first:
        linked = first.get_span_context()
    values: dict[str, Any] = {
        "s": "",
        "b": False,
        "t": True,
        "i": -7,
        "zero": 0,
        "big": 2**62,
        "f": -1.5,
        "strs": ("a", ""),
        "ints": [1, -2],
        "floats": (0.25,),
        "bools": [True, False],
    }
    span = tracer.start_span(
        "everything", kind=SpanKind.PRODUCER, attributes=values, links=[Link(linked, {"why": "retry"})]
    )
    span.add_event("e", {"n": 1}, timestamp=123)
    span.set_status(Status(StatusCode.OK))
    span.end()
    for kind in (SpanKind.INTERNAL, SpanKind.SERVER):
        tracer.start_span(kind.name, kind=kind).end()
    same_as_sdk(exporter.get_finished_spans())


def test_spans_of_several_providers_and_scopes_are_grouped_as_the_sdk_groups_them() -> None:
    exporter = InMemorySpanExporter()
    for service in ("a", "b"):
        provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        for scope in ("one", "two"):
            provider.get_tracer(scope).start_span(f"{service}-{scope}").end()
        provider.get_tracer("one").start_span("again").end()  # the first scope again, after the second
    spans = list(exporter.get_finished_spans())
    assert len(spans) == 6
    same_as_sdk([spans[0], spans[3], spans[1], spans[4], spans[2], spans[5]])


_values = st.one_of(
    st.text(max_size=20),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.lists(st.text(max_size=5), max_size=3).map(tuple),
    st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=3),
)


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(
        st.one_of(st.text(min_size=1, max_size=12), st.sampled_from(sorted(PER_MESSAGE))), _values, max_size=8
    ),
    st.text(max_size=30),
)
def test_any_attributes_and_name_encode_as_the_sdk_encodes_them(attributes: dict[str, Any], name: str) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.get_tracer("t").start_span(name, attributes=attributes).end()
    same_as_sdk(exporter.get_finished_spans())


def test_a_messages_own_ids_are_encoded_but_not_remembered() -> None:
    """They never come again: remembered, the first few thousand messages' ids would fill the cache and
    leave no room for a pair that repeats but shows up later (an upstream first called after them)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    encoder = OtlpSpanEncoder()

    def cached() -> int:
        return int(repr(encoder).split()[1])

    for n in range(50):
        message_id = f"r-{n}-é" if n else ""  # the empty string too: a oneof member, written even when empty
        attributes = {"messaging.system": "kafka", "messaging.message.id": message_id,
                      "messaging.message.conversation_id": message_id}  # fmt: skip
        tracer.start_span("process", attributes=attributes).end()
        same_as_sdk(exporter.get_finished_spans(), encoder)
        exporter.clear()
        if n == 0:
            first = cached()  # messaging.system = kafka, and the resource's pairs
        assert cached() == first
    tracer.start_span("process", attributes={"messaging.system": "rabbitmq"}).end()
    same_as_sdk(exporter.get_finished_spans(), encoder)
    assert cached() == first + 1  # a pair first seen after all those ids is still remembered


def test_the_exporter_says_what_it_is() -> None:
    exporter = LeanOtlpSpanExporter("http://127.0.0.1:4318/v1/traces")
    assert repr(exporter) == "<LeanOtlpSpanExporter <OtlpSpanEncoder 0 pairs cached>>"
