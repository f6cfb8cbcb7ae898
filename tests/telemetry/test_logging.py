"""Structured logs, captured and parsed: JSON lines with request and trace fields, secrets redacted."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider

from gateway.events import (
    SECURITY_KINDS,
    BreakerStateChanged,
    CertificateRenewalFailed,
    EndpointEjected,
    PoolStats,
    RateLimitBackendFallback,
    RequestCompleted,
    RetryAttempted,
    SecurityRefused,
)
from gateway.telemetry.logging import RequestLog, configure_logging
from tests.fixtures.logs import Captured


def test_a_request_line_has_every_field_operators_search_by(captured: Captured) -> None:
    log = RequestLog()
    log.on_event(
        RequestCompleted(
            "req-42", "payments", "POST", 201, 0.0421, attempts=2, upstream_duration=0.03, transport="kafka"
        )
    )
    (line,) = captured.lines()
    assert line["event"] == "request.completed"
    assert line["level"] == "info"
    assert line["timestamp"].endswith("Z")
    assert (line["request_id"], line["upstream"], line["status"], line["attempts"]) == (
        "req-42",
        "payments",
        201,
        2,
    )
    assert (line["duration_ms"], line["upstream_ms"], line["transport"]) == (42.1, 30.0, "kafka")
    assert "error_code" not in line  # absent fields stay out of the line


def test_lines_inside_a_span_carry_its_trace_and_span_ids(captured: Captured) -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        structlog.get_logger("t").info("inside")
        context = span.get_span_context()
    structlog.get_logger("t").info("outside")
    inside, outside = captured.lines()
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")
    assert "trace_id" not in outside


def test_bound_request_context_reaches_every_line(captured: Captured) -> None:
    with structlog.contextvars.bound_contextvars(request_id="req-7", upstream="ledger"):
        structlog.get_logger("t").warning("slow upstream")
    (line,) = captured.lines()
    assert (line["request_id"], line["upstream"], line["level"]) == ("req-7", "ledger", "warning")


def test_secrets_are_redacted_at_any_depth(captured: Captured) -> None:
    structlog.get_logger("t").info(
        "forwarding",
        headers={"Authorization": "Bearer abc.def", "Cookie": "sid=1", "X-Api-Key": "k-1", "Accept": "json"},
        config={"azure": {"client_secret": "s3cr3t", "tenant": "t-1"}, "db_password": "pw"},
        response_headers=[("Set-Cookie", "sid=2"), ("Content-Type", "text/plain")],
        url="https://user:hunter2@api.example.com/pay?token=tok-9&amount=5",
        note="retrying with Bearer eyJhbGciOi.payload.sig",
    )
    (line,) = captured.lines()
    text = json.dumps(line)
    for secret in ("abc.def", "sid=1", "k-1", "s3cr3t", "pw", "sid=2", "hunter2", "tok-9", "eyJhbGciOi"):
        assert secret not in text, secret
    assert line["headers"]["Accept"] == "json"
    assert line["config"]["azure"]["tenant"] == "t-1"
    assert line["response_headers"][1] == ["Content-Type", "text/plain"]
    assert line["url"].endswith("api.example.com/pay?token=[REDACTED]&amount=5")


def test_exception_text_is_scrubbed_too(captured: Captured) -> None:
    try:
        raise PermissionError("401 for Authorization: Bearer leaked-token")
    except PermissionError:
        structlog.get_logger("t").exception("upstream refused")
    (line,) = captured.lines()
    assert "PermissionError" in line["exception"]
    assert "leaked-token" not in line["exception"]


def test_standard_library_loggers_write_the_same_json(captured: Captured) -> None:
    logging.getLogger("aiokafka.consumer").warning("heartbeat failed for %s", "group-1")
    logging.getLogger("aiokafka.consumer").debug("below the level")
    (line,) = captured.lines()
    assert (line["event"], line["level"], line["logger"]) == (
        "heartbeat failed for group-1",
        "warning",
        "aiokafka.consumer",
    )


def test_level_filters_structlog_lines(captured: Captured) -> None:
    out = Captured()
    configure_logging("WARNING", "json", stream=out)
    structlog.get_logger("t").info("quiet")
    structlog.get_logger("t").error("loud")
    assert [line["event"] for line in out.lines()] == ["loud"]


def test_notable_events_are_warnings_and_hot_path_events_are_not_logged(captured: Captured) -> None:
    log = RequestLog()
    log.on_event(EndpointEjected("payments", "10.0.0.1:443", 30.0, "consecutive_5xx"))
    log.on_event(BreakerStateChanged("payments", "10.0.0.1:443", "closed", "open"))
    log.on_event(BreakerStateChanged("payments", "10.0.0.1:443", "open", "half_open"))
    log.on_event(RateLimitBackendFallback("redis unavailable"))
    log.on_event(CertificateRenewalFailed("api", "keyvault", "403 Forbidden"))
    log.on_event(RetryAttempted("payments", "10.0.0.1:443", 2, "status_503"))
    log.on_event(PoolStats("payments", "10.0.0.1:443", 1, 1, 0))
    assert [(line["event"], line["level"]) for line in captured.lines()] == [
        ("endpoint.ejected", "warning"),
        ("breaker.state_changed", "warning"),
        ("breaker.state_changed", "info"),
        ("ratelimit.backend_fallback", "warning"),
        ("certificate.renewal_failed", "warning"),
    ]


def test_console_format_is_for_people() -> None:
    out = io.StringIO()
    try:
        configure_logging("INFO", "console", stream=out)
        structlog.get_logger("t").info("hello", authorization="Bearer nope")
    finally:
        structlog.reset_defaults()
    text = out.getvalue()
    assert "hello" in text
    assert "nope" not in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_auto_format_picks_json_when_not_a_terminal(captured: Captured) -> None:
    out = Captured()
    configure_logging("INFO", "auto", stream=out)
    structlog.get_logger("t").info("machine readable")
    assert out.lines()[0]["event"] == "machine readable"


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="log level"):
        configure_logging("LOUD", "json", stream=io.StringIO())


def test_a_security_refusal_is_one_warning_with_who_what_and_why(captured: Captured) -> None:
    log = RequestLog()
    log.on_event(
        SecurityRefused(
            "forbidden",
            "principal billing may not use upstream payroll",
            principal="billing",
            upstream="payroll",
            transport="rabbitmq",
            request_id="req-9",
        )
    )
    (line,) = captured.lines()
    assert (line["event"], line["level"]) == ("security.forbidden", "warning")
    fields = ("kind", "principal", "upstream", "transport", "request_id", "reason")
    assert {k: line[k] for k in fields} == {
        "kind": "forbidden",
        "principal": "billing",
        "upstream": "payroll",
        "transport": "rabbitmq",
        "request_id": "req-9",
        "reason": "principal billing may not use upstream payroll",
    }


def test_a_security_line_without_a_principal_leaves_it_out_and_its_reason_is_redacted(captured: Captured) -> None:
    with structlog.contextvars.bound_contextvars(request_id="from-context"):
        RequestLog().on_event(
            SecurityRefused("invalid_path", "dot segment in /api/../admin?token=tok-123 with Bearer abc.def")
        )
    (line,) = captured.lines()
    assert (line["event"], line["kind"], line["request_id"]) == (
        "security.invalid_path",
        "invalid_path",
        "from-context",
    )
    assert "principal" not in line and "upstream" not in line
    assert "tok-123" not in line["reason"] and "abc.def" not in line["reason"]
    assert line["reason"].startswith("dot segment in /api/../admin?token=[REDACTED]")


def test_every_security_kind_is_logged_and_other_events_keep_their_lines(captured: Captured) -> None:
    log = RequestLog()
    for kind in SECURITY_KINDS:
        log.on_event(SecurityRefused(kind, f"refused: {kind}"))
    log.on_event(RetryAttempted("payments", "10.0.0.1:443", 2, "status_503"))  # still not logged
    log.on_event(RateLimitBackendFallback("redis unavailable"))
    assert [(line["event"], line["level"]) for line in captured.lines()] == [
        *((f"security.{kind}", "warning") for kind in SECURITY_KINDS),
        ("ratelimit.backend_fallback", "warning"),
    ]
