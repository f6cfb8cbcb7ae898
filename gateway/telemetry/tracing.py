"""OpenTelemetry tracing: one trace from the requesting component, over the bus, to the upstream and back.

The tracers here satisfy ``gateway.pipeline.RequestTracer``, the one protocol of what the pipeline asks.

    component      "send cmn.requests"      GatewayClient     PRODUCER; context injected into the message
      └ gateway    "process cmn.requests"   request_span      CONSUMER; context extracted from the message
          ├ GET    OtelAttemptTracer                          CLIENT, one per HTTP attempt (retries are siblings)
          └ reply  inject(reply headers)                      the reply and the telemetry event carry the context

Messaging spans are named and attributed after the OpenTelemetry messaging conventions
(``gateway.telemetry.messaging``), with the real queue or topic. HTTP client spans carry the stable
HTTP conventions' attributes (``http.request.method``, ``url.full``, ``server.address``,
``server.port``, ``http.response.status_code``, ``error.type``).

The client spans are CMN's own, made around each attempt by ``gateway.upstream.http.exchange``
(the pool is handed ``TracingHandle.attempts``), not by the aiohttp-client instrumentation: that
one hooked every session through aiohttp's trace signals and cost about 100 µs per attempt, sampled
or not. An attempt outside a recording request span makes no span and costs one context lookup.

Both span kinds are CMN's own records (``gateway.telemetry.spans.LeanSpan``), not the SDK's spans: the
provider's sampler, id generator and resource decide and identify them exactly as ``Tracer.start_span``
would, and the batch processor exports them as any finished span, at a fraction of the SDK's per-span
cost (attribute validation, bounded lists, locks, a read-only copy at the end).

Context crosses the bus as W3C ``traceparent``/``tracestate`` headers, extracted by hand rather than
by the aio-pika/aiokafka instrumentations: the pipeline sees broker-neutral ``Delivery`` objects, so
one code path serves both brokers and no broker library leaks out of ``gateway.bus``.

Over OTLP/HTTP the spans are encoded by ``gateway.telemetry.otlp_encode`` (bytes written directly, about
6 times cheaper than the SDK's encoder, checked against it); gRPC keeps the SDK's exporter as it is.

With no OTLP endpoint, ``configure_tracing`` returns a ``NoopRequestTracer`` and no attempt tracer:
no provider, nothing on the request path but a ``nullcontext``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import yarl
from opentelemetry import baggage
from opentelemetry import context as otel_context
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import (
    SpanKind,
    Status,
    StatusCode,
    get_current_span,
    set_span_in_context,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway.errors import ConfigError
from gateway.telemetry.messaging import messaging_span
from gateway.telemetry.redaction import redact_url
from gateway.telemetry.spans import LeanSpan, LeanTracer, traceparent

OtlpProtocol = Literal["http", "grpc"]
_REMEMBERED_URLS = 1024
INSTRUMENTATION_SCOPE = "gateway.telemetry"


_CONTEXT_HEADERS = frozenset(("traceparent", "tracestate", "baggage"))


def context_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The W3C context headers of a message by their lower-case names, whatever case the publisher
    used (AMQP and Kafka keep it as sent); a name written exactly so wins over another spelling.

    One pass over the headers: the propagators' getter, asked for each of the three names, scanned
    every header again for each one that was absent (``tracestate`` and ``baggage`` mostly are),
    about a fifth of the request span's cost (issue 14)."""
    found: dict[str, str] = {}
    for key, value in headers.items():
        name = key.lower()
        if name in _CONTEXT_HEADERS and (name == key or name not in found):
            found[name] = value
    return found


class OtelRequestTracer:
    """Spans for the gateway's side of a request: CMN's own (``gateway.telemetry.spans``), decided,
    identified and exported as the SDK ``TracerProvider``'s would be."""

    def __init__(self, tracer: LeanTracer) -> None:
        self._tracer = tracer
        self._baggage = W3CBaggagePropagator()
        self._trace_context = TraceContextTextMapPropagator()

    @contextlib.contextmanager
    def request_span(
        self, headers: Mapping[str, str], *, transport: str, destination: str, correlation_id: str | None
    ) -> Iterator[None]:
        """A CONSUMER span ``process <destination>`` continuing the trace context carried by the
        message headers (if any)."""
        parent = self.extract(headers)
        name, attributes = messaging_span(
            "process",
            system=transport,
            destination=destination,
            message_id=correlation_id,
            conversation_id=correlation_id,
        )
        # start + one attach rather than start_as_current_span: the same span and context, without the
        # two nested generator context managers the SDK wraps around it (measurable at 1,000s req/s).
        span = self._tracer.start(name, SpanKind.CONSUMER, dict(attributes), parent)
        token = otel_context.attach(set_span_in_context(span, parent))
        try:
            yield
        except BaseException as exc:
            if span.is_recording() and not isinstance(exc, asyncio.CancelledError):
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            otel_context.detach(token)
            span.end()

    def extract(self, headers: Mapping[str, str]) -> Context:
        """The context the message carries: what the W3C trace-context and baggage propagators extract
        (they still parse and validate), asked only for the headers that are there."""
        found = context_headers(headers)
        context = Context()
        if "traceparent" in found:
            context = self._trace_context.extract(found, context)
        if "baggage" in found:
            context = self._baggage.extract(found, context)
        return context

    def inject(self, carrier: dict[str, str]) -> None:
        """Writes ``traceparent`` (and ``tracestate``/``baggage`` when present) of the current span.

        What the W3C propagators write, without their generic setter and composite walk (twice per
        request: the upstream's headers and the reply's); baggage goes through its propagator, when any.
        """
        span = get_current_span()
        context = span.get_span_context()
        if context.is_valid:
            carrier["traceparent"] = span.traceparent if isinstance(span, LeanSpan) else traceparent(context)
            if context.trace_state:
                carrier["tracestate"] = context.trace_state.to_header()
        if baggage.get_all():
            self._baggage.inject(carrier)

    def __repr__(self) -> str:
        return f"<OtelRequestTracer {self._tracer!r}>"


class OtelAttemptSpan:
    """The CLIENT span of one HTTP attempt (``gateway.upstream.http.AttemptSpan``)."""

    __slots__ = ("_span",)

    def __init__(self, span: LeanSpan) -> None:
        self._span = span

    def inject(self, headers: dict[str, str]) -> None:
        """The attempt's own ``traceparent``: the upstream sees this span as its parent. ``tracestate``
        and ``baggage`` are the request's, already in the headers (a child span keeps its parent's)."""
        headers["traceparent"] = self._span.traceparent

    def answered(self, status: int) -> None:
        span = self._span
        span.set_attribute("http.response.status_code", status)
        if status >= 400:
            span.set_attribute("error.type", str(status))
        span.end()

    def failed(self, error: BaseException) -> None:
        """A request that got no answer; a cancelled one (a hedging loser, a shutdown) is no error."""
        if not isinstance(error, asyncio.CancelledError):
            self._span.set_attribute("error.type", type(error).__qualname__)
        self._span.end()

    def __repr__(self) -> str:
        return f"<OtelAttemptSpan {self._span!r}>"


class OtelAttemptTracer:
    """CLIENT spans for HTTP attempts (``gateway.upstream.http.AttemptTracer``), only inside a sampled request.

    This replaces the aiohttp-client instrumentation, which hooked every session (health probes,
    certificate fetches) and paid its aiohttp trace signals on every attempt, sampled or not. Here an
    attempt outside a recording request span costs one context lookup and makes nothing.
    """

    __slots__ = ("_tracer", "_urls")

    def __init__(self, tracer: LeanTracer) -> None:
        self._tracer = tracer
        self._urls: dict[str, str] = {}  # URL → its redacted form: the same few URLs come again and again

    def start(self, method: str, url: yarl.URL) -> OtelAttemptSpan | None:
        request_span = get_current_span()
        if not request_span.is_recording():
            return None
        full = str(url)
        redacted = self._urls.get(full)
        if redacted is None:
            redacted = _url_filter(url)
            if len(self._urls) < _REMEMBERED_URLS:
                self._urls[full] = redacted
        method = method.upper()
        known = method if method in HTTP_METHODS else "_OTHER"
        span = self._tracer.start(
            method if known != "_OTHER" else "HTTP",
            SpanKind.CLIENT,
            {
                "http.request.method": known,
                "url.full": redacted,
                "server.address": url.host or "",
                "server.port": url.port or 0,
            },
            parent_span=request_span,
        )
        # Inside a recording request span the parent-based sampler always records (a non-recording
        # span here would mean a custom sampler): then, as for an unsampled request, no attempt span.
        return OtelAttemptSpan(span) if isinstance(span, LeanSpan) else None

    def __repr__(self) -> str:
        return f"<OtelAttemptTracer {self._tracer!r}>"


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


class TracingHandle:
    """Owns the provider; ``attempts`` makes the HTTP attempts' spans; ``aclose`` flushes pending spans."""

    def __init__(
        self,
        tracer: OtelRequestTracer | NoopRequestTracer,
        provider: TracerProvider | None = None,
        attempts: OtelAttemptTracer | None = None,
    ) -> None:
        self.tracer = tracer
        self.attempts = attempts
        self._provider = provider
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
        """Flushes and shuts the provider down. Blocking."""
        if self._closed:
            return
        self._closed = True
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


# The export worker thread wakes when this many spans wait (or every export_interval): big batches
# make few OTLP posts, and the queue holds several seconds of a busy gateway's spans (two or three per
# request at a few thousand requests a second) before the SDK drops any.
EXPORT_BATCH = 2048
EXPORT_QUEUE = 32_768


def configure_tracing(
    endpoint: str | None,
    *,
    protocol: OtlpProtocol = "http",
    sampling_ratio: float = 1.0,
    service_name: str = "cmn-gateway",
    export_interval: float = 5.0,
) -> TracingHandle:
    """Builds tracing for ``OTLP_ENDPOINT``; ``None`` turns it off entirely.

    Sampling is parent-based: a request whose publisher sampled its trace is always traced; new
    traces are kept with probability ``sampling_ratio``. Finished spans leave in batches from the
    SDK's worker thread every ``export_interval`` seconds (or sooner, when a batch fills): encoding
    and the OTLP post never run on the event loop.
    """
    if not endpoint:
        return TracingHandle(NoopRequestTracer())
    if not 0.0 <= sampling_ratio <= 1.0:
        raise ConfigError(f"trace sampling ratio must be within [0, 1], got {sampling_ratio}")
    root = TraceIdRatioBased(sampling_ratio)
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}), sampler=ParentBased(root))
    exporter = _exporter(endpoint, protocol)
    processor = BatchSpanProcessor(
        exporter,
        max_queue_size=EXPORT_QUEUE,
        max_export_batch_size=EXPORT_BATCH,
        schedule_delay_millis=export_interval * 1000,
    )
    provider.add_span_processor(processor)  # flushed and shut down with the provider
    tracer = LeanTracer.of(provider, INSTRUMENTATION_SCOPE, processor, root)
    return TracingHandle(OtelRequestTracer(tracer), provider, OtelAttemptTracer(tracer))


def _exporter(endpoint: str, protocol: OtlpProtocol) -> SpanExporter:
    if protocol == "http":
        from gateway.telemetry.otlp_encode import LeanOtlpSpanExporter

        return LeanOtlpSpanExporter(http_traces_url(endpoint))
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
