"""Structured logs: JSON lines for machines, a console renderer for people, secrets never written.

Every line carries ``timestamp``, ``level``, ``event``, the request's ``request_id``/``upstream``
when bound (``structlog.contextvars.bound_contextvars``) and ``trace_id``/``span_id`` of the
current OpenTelemetry span. Standard-library loggers (aio-pika, aiokafka, aiohttp) go through the
same processors, so the whole process speaks one format.

Per request the gateway writes one info line (``RequestLog``); anything rarer and worth a look
(ejections, breakers opening, rate-limit fallbacks, failed renewals, security refusals) is a warning.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Literal, TextIO

import orjson
import structlog
from opentelemetry import trace
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

from gateway.events import (
    BreakerForced,
    BreakerStateChanged,
    CertificateRenewalFailed,
    CertificateRenewed,
    ControlChannelChanged,
    EndpointEjected,
    EndpointRestored,
    Event,
    MessageDeadLettered,
    RateLimitBackendFallback,
    ReplyUnroutable,
    RequestCompleted,
    RequestParked,
    SecurityRefused,
)
from gateway.telemetry.redaction import Redactor

LogFormat = Literal["json", "console", "auto"]
_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING, "ERROR": logging.ERROR}


def add_trace_context(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """``trace_id``/``span_id`` of the current span, in the hex form trace backends search by."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict.setdefault("trace_id", format(context.trace_id, "032x"))
        event_dict.setdefault("span_id", format(context.span_id, "016x"))
    return event_dict


class RedactSecrets:
    """The structlog processor that keeps secrets out of every line (see ``gateway.telemetry.redaction``)."""

    def __init__(self) -> None:
        self._redactor = Redactor()

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        return self._redactor.mapping(event_dict)


def _json_dumps(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj, default=repr, option=orjson.OPT_NON_STR_KEYS).decode()


def _processors(console: bool) -> tuple[list[Processor], Processor]:
    """The shared chain (also run for stdlib records) and the renderer."""
    chain: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        add_trace_context,
    ]
    if console:
        # Locals stay out of tracebacks: they are where secrets live.
        formatter = structlog.dev.RichTracebackFormatter(show_locals=False)
        return [*chain, RedactSecrets()], structlog.dev.ConsoleRenderer(exception_formatter=formatter)
    chain += [structlog.processors.format_exc_info, RedactSecrets()]
    return chain, structlog.processors.JSONRenderer(serializer=_json_dumps)


LIFECYCLE = "cmn.lifecycle"
"""The stdlib logger of a process's start-up and shutdown lines (``cmn_serving`` ...): fields go in
``extra``; they are JSON like every other line."""


class _GatewayHandler(logging.StreamHandler[TextIO]):
    """Marks the root handler we installed, so reconfiguring replaces ours and no one else's."""


def configure_logging(level: str = "INFO", fmt: LogFormat = "auto", *, stream: TextIO | None = None) -> None:
    """Configures structlog and the root stdlib logger to write to ``stream`` (default stderr).

    ``auto`` renders for people when the stream is a terminal and JSON lines otherwise.
    Call once at start-up, before loggers are first used (bound loggers cache their configuration).
    """
    out = stream if stream is not None else sys.stderr
    console = fmt == "console" or (fmt == "auto" and out.isatty())
    number = _LEVELS.get(level.upper())
    if number is None:
        raise ValueError(f"unknown log level {level!r}")
    chain, renderer = _processors(console)
    structlog.configure(
        processors=[*chain, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(number),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )
    handler = _GatewayHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, structlog.stdlib.ExtraAdder(), *chain],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _GatewayHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(number)
    # Start-up and shutdown lines are written whatever LOG_LEVEL says: an operator (or a supervisor
    # waiting for readiness) needs them even when request lines are turned off.
    logging.getLogger(LIFECYCLE).setLevel(min(number, logging.INFO))


class RequestLog:
    """An ``Observer`` writing one info line per answered request and a warning per notable change."""

    def __init__(self, logger: FilteringBoundLogger | None = None) -> None:
        self._log: FilteringBoundLogger = logger if logger is not None else structlog.get_logger("cmn.requests")

    def on_event(self, event: Event) -> None:
        with contextlib.suppress(Exception):  # logging must never fail the request that emitted the event
            self._write(event)

    def _write(self, event: Event) -> None:
        match event:
            case RequestCompleted():
                if self._log.is_enabled_for(logging.INFO):  # don't build a line the level drops
                    self._log.info(event.type, **request_fields(event))
            case EndpointEjected(upstream=upstream, endpoint=endpoint, duration=duration, reason=reason):
                self._log.warning(
                    event.type, upstream=upstream, endpoint=endpoint, ejected_for_s=duration, reason=reason
                )
            case EndpointRestored(upstream=upstream, endpoint=endpoint):
                self._log.info(event.type, upstream=upstream, endpoint=endpoint)
            case BreakerStateChanged(upstream=upstream, endpoint=endpoint, old=old, new=new):
                write = self._log.warning if new.lower() == "open" else self._log.info
                write(event.type, upstream=upstream, endpoint=endpoint, old=old, new=new)
            case BreakerForced():
                self._log.warning(
                    event.type,
                    upstream=event.upstream,
                    endpoint=event.endpoint,
                    state=event.state,
                    principal=event.principal,
                    until=event.until,
                    expired=event.expired,
                )
            case RateLimitBackendFallback(reason=reason):
                self._log.warning(event.type, reason=reason)
            case ControlChannelChanged(transport=transport, available=True):
                self._log.info(event.type, transport=transport, available=True)
            case ControlChannelChanged(transport=transport, reason=reason):
                # Loud: this replica answers no `cmn status`, `cmn breaker` or replay until it opens.
                self._log.warning(event.type, transport=transport, available=False, reason=reason)
            case MessageDeadLettered(transport=transport, error_code=code, reason=reason):
                self._log.warning(event.type, transport=transport, error_code=code, reason=reason)
            case ReplyUnroutable(transport=transport, destination=destination, correlation_id=correlation_id):
                self._log.warning(
                    event.type, transport=transport, destination=destination, correlation_id=correlation_id
                )
            case RequestParked():
                self._log.info(
                    event.type, request_id=event.request_id, upstream=event.upstream, tier=event.tier,
                    delay_s=event.delay, park_count=event.park_count, attempts=event.attempts, reason=event.reason,
                )  # fmt: skip
            case CertificateRenewalFailed(name=name, source=source, reason=reason):
                self._log.warning(event.type, certificate=name, source=source, reason=reason)
            case CertificateRenewed(name=name, source=source, version=version, not_after=not_after):
                self._log.info(event.type, certificate=name, source=source, version=version, not_after=not_after)
            case SecurityRefused():
                self._log.warning(event.type, **security_fields(event))
            case _:
                return  # hot-path events (received, retries, pool stats) are for metrics only

    def __repr__(self) -> str:
        return f"<RequestLog {self._log!r}>"


def security_fields(event: SecurityRefused) -> MutableMapping[str, Any]:
    """Who was refused what, and why; a field the event left out stays out of the line."""
    fields: dict[str, Any] = {"kind": event.kind, "reason": event.reason}
    optional = {
        "principal": event.principal,
        "upstream": event.upstream,
        "transport": event.transport,
        "request_id": event.request_id,
    }
    fields.update((k, v) for k, v in optional.items() if v is not None)
    return fields


def request_fields(event: RequestCompleted) -> MutableMapping[str, Any]:
    fields: dict[str, Any] = {
        "request_id": event.request_id,
        "upstream": event.upstream,
        "method": event.method,
        "status": event.status_code,
        "duration_ms": round(event.duration * 1000, 3),
        "attempts": event.attempts,
    }
    optional = {
        "error_code": event.error_code,
        "upstream_ms": None if event.upstream_duration is None else round(event.upstream_duration * 1000, 3),
        "transport": event.transport,
        "endpoint": event.endpoint,
        "tenant": event.tenant,
        "principal": event.principal,
        "trace_id": event.trace_id,
        "dead_lettered": event.dead_lettered or None,
    }
    fields.update((k, v) for k, v in optional.items() if v is not None)
    return fields
