"""Finished spans to an OTLP ``ExportTraceServiceRequest``, written as protobuf bytes directly.

The SDK's encoder (``opentelemetry.exporter.otlp.proto.common``) builds a protobuf object for every
span, attribute and value through a dozen Python calls each, and hashes the ``Resource`` (a JSON dump
of its attributes) once per span to group them. In a gateway tracing every request that was 80 % of
the export thread's time, and the export thread holds the GIL the event loop needs. Here each span is
a few byte strings joined; the ``key = value`` pairs that repeat on every span (``messaging.system``,
``http.request.method``, ``server.address`` ...) are encoded once and reused; spans are grouped by the
value of their resource and scope, as the SDK groups them, hashing each distinct object once a batch.

The output decodes to the same message the SDK's encoder makes (checked field by field in
tests/telemetry/test_otlp_encode.py); ``LeanOtlpSpanExporter`` falls back to the SDK's own encoding
for anything this module does not know.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status

from gateway.telemetry.messaging import PER_MESSAGE
from gateway.telemetry.spans import LeanSpan, SpanRecord

_log = logging.getLogger(__name__)
# OTLP's SpanKind numbers (SPAN_KIND_INTERNAL = 1 ... SPAN_KIND_CONSUMER = 5).
_KIND = {
    SpanKind.INTERNAL: 1,
    SpanKind.SERVER: 2,
    SpanKind.CLIENT: 3,
    SpanKind.PRODUCER: 4,
    SpanKind.CONSUMER: 5,
}
_HAS_IS_REMOTE = 0x100  # SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
_IS_REMOTE = 0x200  # SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
_FIXED64 = struct.Struct("<Q")
_DOUBLE = struct.Struct("<d")
_FIXED32 = struct.Struct("<I")
_UNSET_STATUS = b"\x7a\x00"  # status: an empty Status message (UNSET, no description)
_CACHED_PAIRS = 4096  # distinct key = value pairs remembered (values that repeat come first and stay)


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 on the wire: two's complement, ten bytes
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field (string, bytes, message)."""
    return tag + _varint(len(payload)) + payload


def _text(tag: bytes, value: str | None) -> bytes:
    return _field(tag, value.encode()) if value else b""


class OtlpSpanEncoder:
    """Encodes batches of finished spans; keeps the encoded form of ``key = value`` pairs that repeat."""

    __slots__ = ("_heads", "_pairs")

    def __init__(self) -> None:
        self._pairs: dict[tuple[str, type, Any], bytes] = {}
        self._heads: dict[tuple[str, SpanKind], bytes] = {}  # a span name and kind, encoded

    def request(self, spans: Sequence[ReadableSpan]) -> bytes:
        """The serialized ``ExportTraceServiceRequest`` of ``spans``."""
        groups: dict[int, tuple[Resource, dict[int, tuple[InstrumentationScope | None, list[bytes]]]]] = {}
        canonical = _Canonical()
        # Each (resource, scope) pair of objects is looked up once: every span of a tracer shares both.
        # The spans hold them, so their ids stay theirs for the whole call.
        buckets: dict[tuple[int, int], list[bytes]] = {}
        for span in spans:
            sdk: ReadableSpan | None = None
            if type(span) is LeanSpan:
                record = span.record()
            else:
                record, sdk = _record_of(span), span
            resource, scope = record[9], record[10] or None
            encoded = self._write(record, sdk)
            bucket = buckets.get((id(resource), id(scope)))
            if bucket is None:
                scopes = groups.setdefault(canonical.of(resource), (resource, {}))[1]
                bucket = scopes.setdefault(canonical.of(scope), (scope, []))[1]
                buckets[(id(resource), id(scope))] = bucket
            bucket.append(_field(b"\x12", encoded))
        out = []
        for resource, scopes in groups.values():
            body = [_field(b"\x0a", self._attributes(resource.attributes, b"\x0a"))]
            for scope, encoded_spans in scopes.values():
                scope_spans = [_field(b"\x0a", self._scope(scope)), *encoded_spans]
                if scope is not None and scope.schema_url:
                    scope_spans.append(_text(b"\x1a", scope.schema_url))
                body.append(_field(b"\x12", b"".join(scope_spans)))
            body.append(_text(b"\x1a", resource.schema_url))
            out.append(_field(b"\x0a", b"".join(body)))
        return b"".join(out)

    def span(self, span: ReadableSpan) -> bytes:
        """One ``Span`` message."""
        return self._write(_record_of(span), span)

    def _write(self, record: SpanRecord, sdk: ReadableSpan | None) -> bytes:
        """One ``Span`` message from a span's record. ``sdk``: the SDK span it was read from, for what a
        ``LeanSpan`` never has (dropped counts, links); a ``LeanSpan``'s record is all there is of it."""
        context, parent, name, kind, start, end, attributes, events, status, _, _ = record
        head = self._heads.get((name, kind))  # the name and kind, encoded once per name
        if head is None:
            head = _text(b"\x2a", name) + b"\x30" + _varint(_KIND[kind])
            if len(self._heads) < _CACHED_PAIRS:
                self._heads[(name, kind)] = head
        ids = b"\x0a\x10" + context.trace_id.to_bytes(16, "big") + b"\x12\x08" + context.span_id.to_bytes(8, "big")
        parts = [ids]
        if context.trace_state:
            parts.append(_text(b"\x1a", ",".join(f"{k}={v}" for k, v in context.trace_state.items())))
        if parent is not None:
            parts.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
        parts.append(head)
        parts.append(b"\x39" + _FIXED64.pack(start) + b"\x41" + _FIXED64.pack(end))
        if attributes:
            parts.append(self._attributes(attributes, b"\x4a"))
        if sdk is not None and sdk.dropped_attributes:
            parts.append(b"\x50" + _varint(sdk.dropped_attributes))
        for event in events:
            parts.append(_field(b"\x5a", self._event(event)))
        if sdk is not None:
            if sdk.dropped_events:
                parts.append(b"\x60" + _varint(sdk.dropped_events))
            for link in sdk.links:
                parts.append(_field(b"\x6a", self._link(link)))
            if sdk.dropped_links:
                parts.append(b"\x70" + _varint(sdk.dropped_links))
        parts.append(_status(status))
        parts.append(b"\x85\x01" + _FIXED32.pack(_flags(parent)))
        return b"".join(parts)

    def _event(self, event: Event) -> bytes:
        parts = [b"\x09" + _FIXED64.pack(event.timestamp), _text(b"\x12", event.name)]
        if event.attributes:
            parts.append(self._attributes(event.attributes, b"\x1a"))
        if event.dropped_attributes:
            parts.append(b"\x20" + _varint(event.dropped_attributes))
        return b"".join(parts)

    def _link(self, link: Link) -> bytes:
        context = link.context
        parts = [
            b"\x0a\x10" + context.trace_id.to_bytes(16, "big"),
            b"\x12\x08" + context.span_id.to_bytes(8, "big"),
        ]
        if link.attributes:
            parts.append(self._attributes(link.attributes, b"\x22"))
        if link.dropped_attributes:
            parts.append(b"\x28" + _varint(link.dropped_attributes))
        parts.append(b"\x35" + _FIXED32.pack(_flags(context)))
        return b"".join(parts)

    def _scope(self, scope: InstrumentationScope | None) -> bytes:
        if scope is None:
            return b""
        parts = [_text(b"\x0a", scope.name), _text(b"\x12", scope.version)]
        if scope.attributes:
            parts.append(self._attributes(scope.attributes, b"\x1a"))
        return b"".join(parts)

    def _attributes(self, attributes: Mapping[str, Any], tag: bytes) -> bytes:
        """Every attribute as a repeated ``KeyValue`` field ``tag``.

        A message's own ids are encoded each time and not remembered: they never come again, and
        remembered they would fill the cache with the first few thousand messages' ids, leaving no
        room for a pair that repeats but first shows up later (an upstream first called after that)."""
        pairs = self._pairs
        out = []
        for key, value in attributes.items():
            cacheable = key not in PER_MESSAGE and isinstance(value, str | bool | int | float)
            cache_key = (key, type(value), value) if cacheable else None
            encoded = pairs.get(cache_key) if cache_key is not None else None
            if encoded is None:
                encoded = _field(tag, _text(b"\x0a", key) + _field(b"\x12", _any_value(value)))
                if cache_key is not None and len(pairs) < _CACHED_PAIRS:
                    pairs[cache_key] = encoded
            out.append(encoded)
        return b"".join(out)

    def __repr__(self) -> str:
        return f"<OtlpSpanEncoder {len(self._pairs)} pairs cached>"


class _Canonical:
    """Groups equal resources (scopes) as the SDK does, hashing each distinct object once per batch
    rather than once per span (a ``Resource`` hashes a JSON dump of its attributes)."""

    __slots__ = ("_by_id", "_by_value")

    def __init__(self) -> None:
        self._by_id: dict[int, int] = {}
        self._by_value: dict[object, int] = {}

    def of(self, value: object) -> int:
        key = self._by_id.get(id(value))
        if key is None:
            key = self._by_id[id(value)] = self._by_value.setdefault(value, id(value))
        return key


def _record_of(span: ReadableSpan) -> SpanRecord:
    """An SDK span's record, read through its ``ReadableSpan`` properties (``LeanSpan.record``'s shape)."""
    context = span.get_span_context()
    assert context is not None  # a finished SDK span always has one
    return (
        context,
        span.parent,
        span.name,
        span.kind,
        span.start_time or 0,
        span.end_time or 0,
        span.attributes or {},
        span.events,
        span.status,
        span.resource,
        span.instrumentation_scope,
    )


def _status(status: Status) -> bytes:
    code = status.status_code.value
    if not code and not status.description:
        return _UNSET_STATUS
    return _field(b"\x7a", _text(b"\x12", status.description) + (b"\x18" + _varint(code) if code else b""))


def _flags(parent: SpanContext | None) -> int:
    return _HAS_IS_REMOTE | _IS_REMOTE if parent is not None and parent.is_remote else _HAS_IS_REMOTE


def _any_value(value: Any) -> bytes:
    """An ``AnyValue`` message (the SDK's order of checks: bool before int, str before sequences)."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(b"\x0a", value.encode())
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE.pack(value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join(_field(b"\x0a", _any_value(v)) for v in value))
    if isinstance(value, Mapping):
        pairs = b"".join(
            _field(b"\x0a", _text(b"\x0a", str(k)) + _field(b"\x12", _any_value(v))) for k, v in value.items()
        )
        return _field(b"\x32", pairs)
    raise TypeError(f"cannot encode an attribute value of type {type(value).__name__}")


class LeanOtlpSpanExporter(OTLPSpanExporter):
    """The SDK's OTLP/HTTP exporter (endpoint, headers, TLS, compression, retries all its own), posting
    what ``OtlpSpanEncoder`` wrote instead of what the SDK's encoder builds.

    It reaches the SDK exporter's HTTP client (``_client``, opentelemetry-exporter-otlp-proto-http
    1.4x); where that is missing, or this encoder fails on a batch, the SDK's own ``export`` runs, so a
    batch is never lost to this module. The exporter's own self-metrics are not recorded on this path.
    """

    def __init__(self, endpoint: str) -> None:
        super().__init__(endpoint=endpoint)
        self._encoder = OtlpSpanEncoder()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        client = getattr(self, "_client", None)
        if client is None or getattr(self, "_shutdown", False):
            return super().export(spans)
        try:
            data = self._encoder.request(spans)
        except Exception:  # noqa: BLE001 - an attribute this encoder does not know: let the SDK try
            _log.debug("lean OTLP encoding failed; the SDK encodes this batch", exc_info=True)
            return super().export(spans)
        return SpanExportResult.SUCCESS if client.export(data).success else SpanExportResult.FAILURE

    def __repr__(self) -> str:
        return f"<LeanOtlpSpanExporter {self._encoder!r}>"
