"""OpenTelemetry tracing: one trace from the requesting component, over the bus, to the upstream and back.

The tracers here satisfy ``gateway.pipeline.RequestTracer``, the one protocol of what the pipeline asks.

    component      "send cmn.requests"      GatewayClient     PRODUCER; context injected into the message
      └ gateway    "process cmn.requests"   request_span      CONSUMER; context extracted from the message
          ├ GET    aiohttp-client instrumentation             CLIENT, one per HTTP attempt (retries are siblings)
          └ reply  inject(reply headers)                      the reply and the telemetry event carry the context

Messaging spans are named and attributed after the OpenTelemetry messaging conventions
(``gateway.telemetry.messaging``), with the real queue or topic. HTTP client spans carry the stable
HTTP conventions' attributes (``http.request.method``, ``url.full``, ``server.address``,
``server.port``, ``http.response.status_code``, ``error.type``): the instrumentation only switches
to them through the process-wide ``OTEL_SEMCONV_STABILITY_OPT_IN=http``, so hooks set them on every
span, beside the older names the instrumentation still writes by default.

Context crosses the bus as W3C ``traceparent``/``tracestate`` headers, extracted by hand rather than
by the aio-pika/aiokafka instrumentations: the pipeline sees broker-neutral ``Delivery`` objects, so
one code path serves both brokers and no broker library leaks out of ``gateway.bus``.

With no OTLP endpoint, ``configure_tracing`` returns a ``NoopRequestTracer``: no provider, no
instrumentation, nothing on the request path but a ``nullcontext``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import yarl
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, SamplingResult, TraceIdRatioBased
from opentelemetry.trace import Link, Span, SpanKind, Tracer, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

from gateway.errors import ConfigError
from gateway.telemetry.messaging import messaging_span
from gateway.telemetry.redaction import redact_url

OtlpProtocol = Literal["http", "grpc"]
INSTRUMENTATION_SCOPE = "gateway.telemetry"


class _HeaderGetter(Getter[Mapping[str, str]]):
    """Reads message headers whatever case the publisher used (AMQP and Kafka keep it as sent)."""

    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(key)
        if value is None:
            value = next((v for k, v in carrier.items() if k.lower() == key), None)
        return None if value is None else [value]

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return list(carrier)


class OtelRequestTracer:
    """Spans for the gateway's side of a request, from an SDK ``TracerProvider``."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer
        self._propagator = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
        self._getter = _HeaderGetter()

    @contextlib.contextmanager
    def request_span(
        self, headers: Mapping[str, str], *, transport: str, destination: str, correlation_id: str | None
    ) -> Iterator[None]:
        """A CONSUMER span ``process <destination>`` continuing the trace context carried by the
        message headers (if any)."""
        parent = self._propagator.extract(headers, getter=self._getter)
        name, attributes = messaging_span(
            "process",
            system=transport,
            destination=destination,
            message_id=correlation_id,
            conversation_id=correlation_id,
        )
        with self._tracer.start_as_current_span(name, context=parent, kind=SpanKind.CONSUMER, attributes=attributes):
            yield

    def inject(self, carrier: dict[str, str]) -> None:
        """Writes ``traceparent`` (and ``tracestate``/``baggage`` when present) of the current span."""
        self._propagator.inject(carrier)

    def __repr__(self) -> str:
        return f"<OtelRequestTracer {self._tracer!r}>"


class NoopRequestTracer:
    """Tracing off: every method does nothing, as cheaply as possible."""

    __slots__ = ()

    def request_span(
        self, headers: Mapping[str, str], *, transport: str, destination: str, correlation_id: str | None
    ) -> AbstractContextManager[None]:
        return contextlib.nullcontext()

    def inject(self, carrier: dict[str, str]) -> None:
        return None

    def __repr__(self) -> str:
        return "<NoopRequestTracer>"


class NoRootClientSpans(Sampler):
    """Drops HTTP client spans that would start a trace of their own; defers everything else.

    Every aiohttp session is instrumented, so health probes and certificate fetches made outside
    any request would each become a one-span trace, drowning the request traces at sampling 1.0.
    """

    def __init__(self, delegate: Sampler) -> None:
        self._delegate = delegate

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if kind is SpanKind.CLIENT:
            return SamplingResult(Decision.DROP)
        return self._delegate.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"NoRootClientSpans{{{self._delegate.get_description()}}}"


class TracingHandle:
    """Owns the provider and the aiohttp-client instrumentation; ``aclose`` flushes pending spans."""

    def __init__(
        self,
        tracer: OtelRequestTracer | NoopRequestTracer,
        provider: TracerProvider | None = None,
        instrumentor: AioHttpClientInstrumentor | None = None,
    ) -> None:
        self.tracer = tracer
        self._provider = provider
        self._instrumentor = instrumentor
        self._closed = False

    @property
    def enabled(self) -> bool:
        return self._provider is not None

    async def flush(self, timeout_millis: int = 10_000) -> bool:
        """Exports every finished span now (off the event loop: the exporter does blocking I/O)."""
        if self._provider is None:
            return True
        return await asyncio.to_thread(self._provider.force_flush, timeout_millis)

    def shutdown(self) -> None:
        """Stops instrumenting new aiohttp sessions, flushes and shuts the provider down. Blocking."""
        if self._closed:
            return
        self._closed = True
        if self._instrumentor is not None:
            self._instrumentor.uninstrument()
        if self._provider is not None:
            self._provider.shutdown()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.shutdown)

    async def __aenter__(self) -> TracingHandle:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("exporting" if self.enabled else "off")
        return f"<TracingHandle {state} {self.tracer!r}>"


def configure_tracing(
    endpoint: str | None,
    *,
    protocol: OtlpProtocol = "http",
    sampling_ratio: float = 1.0,
    service_name: str = "cmn-gateway",
    export_interval: float = 5.0,
) -> TracingHandle:
    """Builds tracing for ``OTLP_ENDPOINT``; ``None`` turns it off entirely.

    Call it before any ``aiohttp.ClientSession`` is created: the instrumentation hooks sessions
    as they are constructed. Sampling is parent-based: a request whose publisher sampled its
    trace is always traced; new traces are kept with probability ``sampling_ratio``. Finished
    spans leave in batches every ``export_interval`` seconds (or sooner, when a batch fills).
    """
    if not endpoint:
        return TracingHandle(NoopRequestTracer())
    if not 0.0 <= sampling_ratio <= 1.0:
        raise ConfigError(f"trace sampling ratio must be within [0, 1], got {sampling_ratio}")
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: service_name}),
        sampler=ParentBased(NoRootClientSpans(TraceIdRatioBased(sampling_ratio))),
    )
    exporter = _exporter(endpoint, protocol)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=export_interval * 1000))
    instrumentor = AioHttpClientInstrumentor()
    owns_instrumentation = not instrumentor.is_instrumented_by_opentelemetry
    if owns_instrumentation:
        instrumentor.instrument(
            tracer_provider=provider,
            url_filter=_url_filter,
            request_hook=stable_http_request,
            response_hook=stable_http_response,
        )
    tracer = OtelRequestTracer(provider.get_tracer(INSTRUMENTATION_SCOPE))
    return TracingHandle(tracer, provider, instrumentor if owns_instrumentation else None)


def _exporter(endpoint: str, protocol: OtlpProtocol) -> SpanExporter:
    if protocol == "http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=http_traces_url(endpoint))
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcSpanExporter,
            )
        except ImportError as exc:
            raise ConfigError("OTLP over gRPC needs the opentelemetry-exporter-otlp-proto-grpc package") from exc
        return GrpcSpanExporter(endpoint=endpoint, insecure=urlsplit(endpoint).scheme != "https")
    raise ConfigError(f"unknown OTLP protocol {protocol!r} (expected 'http' or 'grpc')")


def http_traces_url(endpoint: str) -> str:
    """``http://collector:4318`` → ``http://collector:4318/v1/traces``; a full signal URL is kept."""
    parts = urlsplit(endpoint)
    if parts.path in ("", "/"):
        return urlunsplit(parts._replace(path="/v1/traces"))
    return endpoint


def _url_filter(url: yarl.URL) -> str:
    """Span ``url.full`` without credentials or secret query parameters."""
    return redact_url(str(url.with_user(None)))


HTTP_METHODS = frozenset({"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"})


def stable_http_request(span: Span, params: aiohttp.TraceRequestStartParams) -> None:
    """The stable HTTP client span attributes known when the request starts."""
    if not span.is_recording():
        return
    url = params.url
    method = params.method.upper()
    span.set_attributes(
        {
            "http.request.method": method if method in HTTP_METHODS else "_OTHER",
            "url.full": _url_filter(url),
            "server.address": url.host or "",
            "server.port": url.port or 0,
        }
    )


def stable_http_response(
    span: Span, params: aiohttp.TraceRequestEndParams | aiohttp.TraceRequestExceptionParams
) -> None:
    """``http.response.status_code``, and ``error.type`` for a 4xx/5xx or a failed request."""
    if not span.is_recording():
        return
    if isinstance(params, aiohttp.TraceRequestEndParams):
        status = params.response.status
        span.set_attribute("http.response.status_code", status)
        if status >= 400:
            span.set_attribute("error.type", str(status))
    else:
        span.set_attribute("error.type", type(params.exception).__qualname__)
