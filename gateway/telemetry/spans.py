"""CMN's own span records for its two span kinds (the consumer span of a request, the client span of
an attempt), made without the SDK's per-span machinery but sampled, identified, parented, exported
and encoded exactly as the SDK's spans are.

The SDK's ``Tracer.start_span`` and ``Span`` cost about 20 µs per span on the gateway's hot path
(issue 14, docs/performance.md): attribute validation into ``BoundedAttributes``, bounded event and
link lists, a lock per span, the span processors' ``on_start`` walk, and at ``end`` a second,
read-only copy of the span for the processors. CMN's spans carry a handful of attributes it wrote
itself, no links and at most one event, so ``LeanSpan`` is that copy from the start: a
``ReadableSpan`` (what every exporter and both OTLP encoders read) that is also an
``opentelemetry.trace.Span`` (so it is the current span in the OpenTelemetry context, and
``get_current_span`` works for anything else that asks). ``LeanTracer.start`` makes the same
decisions as ``Tracer.start_span``: the provider's sampler (parent-based ratio) and id generator,
the parent from the context, the sampler's trace state, and a ``NonRecordingSpan`` carrying the
context on when the request is not sampled. A finished span goes straight to the span processor
(the batch processor's queue; its ``on_start`` does nothing, so it is not called). No lock: a span
is written only by the event loop's thread, and read by the export thread once it has ended.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping, Sequence
from time import time_ns

from opentelemetry import trace as trace_api
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import Decision, Sampler
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    get_current_span,
)
from opentelemetry.util import types

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_UNSET = Status(StatusCode.UNSET)


# (context, parent, name, kind, start ns, end ns, attributes, events, status, resource, scope)
SpanRecord = tuple[
    SpanContext,
    SpanContext | None,
    str,
    SpanKind,
    int,
    int,
    Mapping[str, types.AttributeValue],
    Sequence[Event],
    Status,
    Resource,
    InstrumentationScope | None,
]


def traceparent(context: SpanContext) -> str:
    """The W3C ``traceparent`` of a span context."""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


class LeanSpan(trace_api.Span, ReadableSpan):
    """A recording span of CMN's: mutable until ``end``, then handed, as it is, to the span processor."""

    def __init__(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, types.AttributeValue],
        tracer: LeanTracer,
    ) -> None:
        ReadableSpan.__init__(
            self,
            name,
            context,
            parent,
            tracer.resource,
            attributes,
            kind=kind,
            status=_UNSET,
            start_time=time_ns(),
            instrumentation_scope=tracer.scope,
        )
        self._events: list[Event] = []
        self._processor = tracer.processor
        self.traceparent = traceparent(context)  # written into two or three carriers per request: once

    # -- opentelemetry.trace.Span --------------------------------------------------------------
    def get_span_context(self) -> SpanContext:
        return self._context  # type: ignore[return-value]  # always set: LeanTracer.start gives one

    def is_recording(self) -> bool:
        return self._end_time is None

    def set_attribute(self, key: str, value: types.AttributeValue) -> None:
        if self._end_time is None:
            self._attributes[key] = value  # type: ignore[index]  # a dict, made by LeanTracer.start

    def set_attributes(self, attributes: Mapping[str, types.AttributeValue]) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def add_event(self, name: str, attributes: types.Attributes = None, timestamp: int | None = None) -> None:
        if self._end_time is None:  # as the SDK's: attributes bounded and immutable, the time now by default
            bounded = BoundedAttributes(attributes=attributes, immutable=True, max_value_len=None)
            self._events.append(Event(name, bounded, time_ns() if timestamp is None else timestamp))

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        raise NotImplementedError("CMN's spans carry no links")

    def update_name(self, name: str) -> None:
        if self._end_time is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """The SDK's rules: OK is final, UNSET changes nothing."""
        if self._end_time is not None or self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, StatusCode):
            status = Status(status, description)
        if status.status_code is not StatusCode.UNSET:
            self._status = status

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """The SDK's ``exception`` event, attribute for attribute."""
        module = type(exception).__module__
        qualname = type(exception).__qualname__
        recorded: dict[str, types.AttributeValue] = {
            "exception.type": f"{module}.{qualname}" if module and module != "builtins" else qualname,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            recorded.update(attributes)
        self.add_event("exception", recorded, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None:
            return
        self._end_time = time_ns() if end_time is None else end_time
        self._processor.on_end(self)

    def record(self) -> SpanRecord:
        """What an encoder reads of a finished span, in one call: the ``ReadableSpan`` properties
        copy or wrap (a read-only view of the attributes, a tuple of the events) and check for
        dropped counts a ``LeanSpan`` never has (plain dict and list, no links)."""
        return (
            self._context,  # type: ignore[return-value]  # always set: LeanTracer.start gives one
            self._parent,
            self._name,
            self._kind,
            self._start_time or 0,
            self._end_time or 0,
            self._attributes,  # a dict, made by LeanTracer.start
            self._events,
            self._status,
            self._resource,
            self._instrumentation_scope,
        )

    def __repr__(self) -> str:
        return f"<LeanSpan {self._name!r} {self.traceparent}>"


class LeanTracer:
    """Starts ``LeanSpan``s with the decisions of a provider whose sampler is ``ParentBased(root)``
    (its default delegates: a valid parent's sampled flag decides, and its trace state is kept; a new
    trace asks ``root``). The parent-based rule is applied here rather than through the sampler's
    ``should_sample``, which looks the parent up in the context again and builds a result per span."""

    __slots__ = ("_ids", "_root", "processor", "resource", "scope")

    def __init__(
        self,
        *,
        root: Sampler,
        ids: IdGenerator,
        resource: Resource,
        scope: InstrumentationScope,
        processor: SpanProcessor,
    ) -> None:
        self._root = root
        self._ids = ids
        self.resource = resource
        self.scope = scope
        self.processor = processor

    @classmethod
    def of(cls, provider: TracerProvider, scope: str, processor: SpanProcessor, root: Sampler) -> LeanTracer:
        """The id generator and resource of ``provider``, whose sampler is ``ParentBased(root)``;
        ``processor`` receives the finished spans."""
        return cls(
            root=root,
            ids=provider.id_generator,
            resource=provider.resource,
            scope=InstrumentationScope(scope),
            processor=processor,
        )

    def start(
        self,
        name: str,
        kind: SpanKind,
        attributes: dict[str, types.AttributeValue],
        context: Context | None = None,
        parent_span: trace_api.Span | None = None,
    ) -> LeanSpan | NonRecordingSpan:
        """A span under ``parent_span`` (default: ``context``'s current span, the current context's
        when None), or a non-recording one carrying its context on when it is not sampled."""
        if parent_span is None:
            parent_span = get_current_span(context)
        parent: SpanContext | None = parent_span.get_span_context()
        if parent is not None and parent.is_valid:  # ParentBased: follow the parent, keep its trace state
            trace_id = parent.trace_id
            recording = bool(parent.trace_flags.sampled)
            flags = _SAMPLED if recording else _NOT_SAMPLED
            trace_state: TraceState | None = parent.trace_state
        else:
            parent = None
            trace_id = self._ids.generate_trace_id()
            links: Sequence[Link] = ()
            decided = self._root.should_sample(context, trace_id, name, kind, attributes, links)
            recording = decided.decision is not Decision.DROP
            flags = _SAMPLED if decided.decision is Decision.RECORD_AND_SAMPLE else _NOT_SAMPLED
            trace_state = decided.trace_state
            if decided.attributes:
                attributes = {**attributes, **decided.attributes}
        span_context = SpanContext(
            trace_id, self._ids.generate_span_id(), is_remote=False, trace_flags=flags, trace_state=trace_state
        )
        if not recording:
            return NonRecordingSpan(span_context)
        return LeanSpan(name, span_context, parent, kind, attributes, self)

    def __repr__(self) -> str:
        return f"<LeanTracer {self.scope.name} ParentBased({self._root.get_description()})>"
