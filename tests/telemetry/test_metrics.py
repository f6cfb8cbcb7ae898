"""Metrics: each event moves the right series, labels stay bounded, pulled values appear at scrape time."""

from __future__ import annotations

import platform

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from gateway.events import (
    SECURITY_KINDS,
    BreakerStateChanged,
    CertificateRenewalFailed,
    CertificateRenewed,
    ControlChannelChanged,
    EndpointEjected,
    EndpointRestored,
    MessageDeadLettered,
    PoolStats,
    RateLimitBackendFallback,
    RateLimited,
    ReplyUnroutable,
    RequestCompleted,
    RequestReceived,
    RetryAttempted,
    RetryBudgetExhausted,
    SecurityRefused,
)
from gateway.telemetry.metrics import DURATION_BUCKETS, Metrics


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    return Metrics(registry, version="1.2.3")


def value(registry: CollectorRegistry, metric: str, **labels: str) -> float | None:
    return registry.get_sample_value(metric, labels)


def completed(**overrides: object) -> RequestCompleted:
    fields: dict[str, object] = {
        "request_id": "r-1",
        "upstream": "payments",
        "method": "GET",
        "status_code": 200,
        "duration": 0.042,
        "upstream_duration": 0.030,
        "transport": "rabbitmq",
    }
    fields.update(overrides)
    return RequestCompleted(**fields)  # type: ignore[arg-type]  # test builder over the dataclass fields


def test_a_bus_request_moves_in_flight_up_then_down_and_counts_consumed_and_replied(
    metrics: Metrics, registry: CollectorRegistry
) -> None:
    metrics.on_event(RequestReceived("kafka"))
    metrics.on_event(RequestReceived("kafka"))
    assert value(registry, "cmn_requests_in_flight", transport="kafka") == 2
    metrics.on_event(completed(transport="kafka"))
    assert value(registry, "cmn_requests_in_flight", transport="kafka") == 1
    assert value(registry, "cmn_messages_consumed_total", transport="kafka") == 2
    assert value(registry, "cmn_replies_published_total", transport="kafka") == 1


def test_requests_are_counted_by_upstream_method_status_class_error_code_and_transport(
    metrics: Metrics, registry: CollectorRegistry
) -> None:
    metrics.on_event(completed(status_code=204))
    metrics.on_event(completed(status_code=503))
    metrics.on_event(completed(status_code=None, error_code="timeout"))
    ok = {"upstream": "payments", "method": "GET", "transport": "rabbitmq"}
    assert value(registry, "cmn_requests_total", status_class="2xx", error_code="none", **ok) == 1
    assert value(registry, "cmn_requests_total", status_class="5xx", error_code="none", **ok) == 1
    assert value(registry, "cmn_requests_total", status_class="none", error_code="timeout", **ok) == 1


def test_durations_are_observed_in_seconds_with_the_objective_as_a_bucket_edge(
    metrics: Metrics, registry: CollectorRegistry
) -> None:
    assert 0.1 in DURATION_BUCKETS
    metrics.on_event(completed(duration=0.099, upstream_duration=0.080))
    metrics.on_event(completed(duration=0.101, upstream_duration=None))
    where = {"upstream": "payments", "transport": "rabbitmq"}
    assert value(registry, "cmn_request_duration_seconds_bucket", le="0.1", **where) == 1
    assert value(registry, "cmn_request_duration_seconds_count", **where) == 2
    assert value(registry, "cmn_request_duration_seconds_sum", **where) == pytest.approx(0.2)
    assert value(registry, "cmn_upstream_duration_seconds_count", upstream="payments") == 1


def test_a_direct_record_request_without_transport_leaves_in_flight_alone(
    metrics: Metrics, registry: CollectorRegistry
) -> None:
    metrics.on_event(completed(transport=None))
    assert value(registry, "cmn_requests_in_flight", transport="none") is None
    assert value(registry, "cmn_replies_published_total", transport="none") is None
    labels = {"upstream": "payments", "method": "GET", "status_class": "2xx", "error_code": "none"}
    assert value(registry, "cmn_requests_total", transport="none", **labels) == 1


def requests_total(registry: CollectorRegistry, upstream: str, method: str, status: str, code: str) -> float | None:
    labels = {"upstream": upstream, "method": method, "status_class": status, "error_code": code}
    return value(registry, "cmn_requests_total", transport="rabbitmq", **labels)


def test_untrusted_label_values_are_folded(metrics: Metrics, registry: CollectorRegistry) -> None:
    metrics.on_event(completed(upstream="../etc/passwd", status_code=None, error_code="unknown_upstream"))
    metrics.on_event(completed(method="BREW", error_code="made_up", status_code=None))
    metrics.on_event(completed(status_code=42))
    assert requests_total(registry, "unknown", "GET", "none", "unknown_upstream") == 1
    assert requests_total(registry, "payments", "other", "none", "other") == 1
    assert requests_total(registry, "payments", "GET", "none", "none") == 1


def test_upstream_names_past_the_cap_become_other(registry: CollectorRegistry) -> None:
    metrics = Metrics(registry, label_limit=2)
    for name in ("a", "b", "c", "d", "a"):
        metrics.on_event(completed(upstream=name))
    upstreams = {s.labels["upstream"] for m in registry.collect() if m.name == "cmn_requests" for s in m.samples}
    assert upstreams == {"a", "b", "other"}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.text(min_size=1, max_size=12), st.text(min_size=1, max_size=8), st.integers(-5, 1000)),
        max_size=40,
    )
)
def test_series_count_stays_bounded_whatever_arrives(requests: list[tuple[str, str, int]]) -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry, label_limit=5)
    for upstream, method, status in requests:
        metrics.on_event(completed(upstream=upstream, method=method, status_code=status))
    series = {
        tuple(sorted(s.labels.items()))
        for m in registry.collect()
        if m.name == "cmn_requests"
        for s in m.samples
        if s.name == "cmn_requests_total"
    }
    # upstream: 5 admitted + other; method: 9 standard + other; status class: 5 + none.
    assert len(series) <= 6 * 10 * 6
    assert {dict(s)["upstream"] for s in series} <= {u for u, _, _ in requests} | {"other"}


def test_breaker_state_is_one_hot_and_transitions_are_counted(metrics: Metrics, registry: CollectorRegistry) -> None:
    where = {"upstream": "payments", "endpoint": "10.0.0.1:443"}
    metrics.on_event(BreakerStateChanged(old="closed", new="open", **where))
    assert value(registry, "cmn_breaker_state", state="open", **where) == 1
    assert value(registry, "cmn_breaker_state", state="closed", **where) == 0
    metrics.on_event(BreakerStateChanged(old="open", new="HALF-OPEN", **where))
    assert value(registry, "cmn_breaker_state", state="half_open", **where) == 1
    assert value(registry, "cmn_breaker_state", state="open", **where) == 0
    assert value(registry, "cmn_breaker_transitions_total", state="open", **where) == 1


def test_ejection_sets_the_gauge_and_counts_restoration_clears_it(
    metrics: Metrics, registry: CollectorRegistry
) -> None:
    where = {"upstream": "payments", "endpoint": "10.0.0.1:443"}
    metrics.on_event(EndpointEjected(duration=30.0, reason="consecutive_5xx", **where))
    assert value(registry, "cmn_endpoint_ejected", **where) == 1
    metrics.on_event(EndpointRestored(**where))
    metrics.on_event(EndpointEjected(duration=60.0, reason="consecutive_5xx", **where))
    assert value(registry, "cmn_endpoint_ejections_total", **where) == 2
    metrics.on_event(EndpointRestored(**where))
    assert value(registry, "cmn_endpoint_ejected", **where) == 0


def test_pool_stats_give_connections_by_state_and_waiters(metrics: Metrics, registry: CollectorRegistry) -> None:
    where = {"upstream": "payments", "endpoint": "10.0.0.1:443"}
    metrics.on_event(PoolStats(in_use=7, idle=3, waiting=2, **where))
    assert value(registry, "cmn_pool_connections", state="in_use", **where) == 7
    assert value(registry, "cmn_pool_connections", state="idle", **where) == 3
    assert value(registry, "cmn_pool_waiting_requests", **where) == 2


def test_retries_limits_and_dead_letters_are_counted(metrics: Metrics, registry: CollectorRegistry) -> None:
    metrics.on_event(RetryAttempted(upstream="payments", endpoint="e", attempt=2, reason="status_503"))
    metrics.on_event(RetryBudgetExhausted(upstream="payments"))
    metrics.on_event(RateLimited(upstream="payments", tenant="acme", scope="tenant"))
    metrics.on_event(RateLimitBackendFallback(reason="redis_unavailable"))
    metrics.on_event(MessageDeadLettered(transport="kafka", error_code="invalid_request", reason="bad json"))
    metrics.on_event(ReplyUnroutable(transport="rabbitmq", destination="replies.gone", correlation_id="c-1"))
    assert value(registry, "cmn_retries_total", upstream="payments", reason="status_503") == 1
    assert value(registry, "cmn_replies_unroutable_total", transport="rabbitmq") == 1
    assert value(registry, "cmn_retry_budget_exhausted_total", upstream="payments") == 1
    assert value(registry, "cmn_rate_limited_total", upstream="payments", scope="tenant") == 1
    assert value(registry, "cmn_rate_limit_backend_fallbacks_total", reason="redis_unavailable") == 1
    assert value(registry, "cmn_messages_dead_lettered_total", transport="kafka", error_code="invalid_request") == 1


def test_dead_letter_series_start_at_zero_once_a_transport_is_seen(
    metrics: Metrics, registry: CollectorRegistry
) -> None:
    assert value(registry, "cmn_messages_dead_lettered_total", transport="kafka", error_code="internal") is None
    metrics.on_event(RequestReceived("kafka"))
    assert value(registry, "cmn_messages_dead_lettered_total", transport="kafka", error_code="internal") == 0


def test_certificate_expiry_comes_from_renewals_and_the_bound_source_wins(
    metrics: Metrics, registry: CollectorRegistry
) -> None:
    metrics.on_event(CertificateRenewed(name="api", source="keyvault", version="v2", not_after=2_000_000_000.0))
    metrics.on_event(CertificateRenewalFailed(name="other", source="keyvault", reason="403"))
    assert value(registry, "cmn_certificate_expiry_timestamp_seconds", name="api") == 2_000_000_000.0
    assert value(registry, "cmn_certificate_renewals_total", name="api", outcome="success") == 1
    assert value(registry, "cmn_certificate_renewals_total", name="other", outcome="failure") == 1
    metrics.bind_certificate_expiries(lambda: {"api": 2_100_000_000.0, "mtls": 1_900_000_000.0})
    assert value(registry, "cmn_certificate_expiry_timestamp_seconds", name="api") == 2_100_000_000.0
    assert value(registry, "cmn_certificate_expiry_timestamp_seconds", name="mtls") == 1_900_000_000.0


def test_consumer_lag_is_read_at_scrape_time(metrics: Metrics, registry: CollectorRegistry) -> None:
    lag = {0: 5, 1: 0}
    metrics.bind_consumer_lag(lambda: lag)
    assert value(registry, "cmn_kafka_consumer_lag", partition="0") == 5
    lag[0] = 9
    assert value(registry, "cmn_kafka_consumer_lag", partition="0") == 9


def test_a_failing_pulled_source_does_not_break_the_scrape(metrics: Metrics, registry: CollectorRegistry) -> None:
    def broken() -> dict[str, int]:
        raise RuntimeError("consumer closed")

    metrics.bind_consumer_lag(broken)
    metrics.on_event(completed())
    text = generate_latest(registry).decode()
    assert "cmn_requests_total{" in text
    assert "cmn_kafka_consumer_lag{" not in text


def test_on_event_never_raises(metrics: Metrics, registry: CollectorRegistry) -> None:
    metrics.on_event(completed(duration=None))  # a producer bug: observe(None) fails inside
    metrics.on_event(object())  # type: ignore[arg-type]  # not an event at all
    metrics.on_event(completed(duration=0.5))
    where = {"upstream": "payments", "transport": "rabbitmq"}
    assert value(registry, "cmn_request_duration_seconds_count", **where) == 1
    assert value(registry, "cmn_request_duration_seconds_sum", **where) == 0.5


def test_build_info_carries_the_version(metrics: Metrics, registry: CollectorRegistry) -> None:
    assert value(registry, "cmn_build_info", version="1.2.3", python_version=platform.python_version()) == 1


def test_repr_tells_what_it_has_seen(metrics: Metrics) -> None:
    metrics.on_event(completed())
    assert repr(metrics) == "<Metrics [1 events | 1 upstreams, 0 endpoints]>"


def test_active_health_verdict_is_a_gauge() -> None:
    from prometheus_client import CollectorRegistry

    from gateway.events import EndpointHealthChanged
    from gateway.telemetry.metrics import Metrics

    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.on_event(EndpointHealthChanged("payments", "http://10.0.0.5:8080", healthy=False))
    labels = {"upstream": "payments", "endpoint": "http://10.0.0.5:8080"}
    assert registry.get_sample_value("cmn_endpoint_healthy", labels) == 0
    metrics.on_event(EndpointHealthChanged("payments", "http://10.0.0.5:8080", healthy=True))
    assert registry.get_sample_value("cmn_endpoint_healthy", labels) == 1


def security_kinds_counted(registry: CollectorRegistry) -> dict[str, float]:
    return {
        s.labels["kind"]: s.value
        for m in registry.collect()
        if m.name == "cmn_security_events"
        for s in m.samples
        if s.name == "cmn_security_events_total"
    }


def test_every_security_kind_starts_at_zero_so_rate_sees_the_first_refusal(
    metrics: Metrics, registry: CollectorRegistry
) -> None:
    assert security_kinds_counted(registry) == {kind: 0.0 for kind in (*SECURITY_KINDS, "other")}


def test_security_refusals_are_counted_by_kind(metrics: Metrics, registry: CollectorRegistry) -> None:
    metrics.on_event(SecurityRefused("forbidden", "billing may not use payroll", "billing", "payroll", "kafka", "r-1"))
    metrics.on_event(SecurityRefused("forbidden", "tenant acme not allowed", "billing", "payments"))
    metrics.on_event(SecurityRefused("tls_verification_failed", "certificate verify failed", upstream="payments"))
    counted = security_kinds_counted(registry)
    assert (counted["forbidden"], counted["tls_verification_failed"], counted["unauthenticated"]) == (2, 1, 0)


def test_security_events_never_label_principal_reason_or_unknown_kinds(
    metrics: Metrics, registry: CollectorRegistry
) -> None:
    metrics.on_event(SecurityRefused("made_up_kind", "password=hunter2 in reason", principal="mallory"))
    metrics.on_event(SecurityRefused("x" * 200, "another", principal="trudy", upstream="payments"))
    assert security_kinds_counted(registry)["other"] == 2
    text = generate_latest(registry).decode()
    security_lines = [line for line in text.splitlines() if line.startswith("cmn_security_events_total{")]
    assert len(security_lines) == len(SECURITY_KINDS) + 1  # every kind and other, nothing more
    for leaked in ("mallory", "trudy", "hunter2", "made_up_kind", "payments"):
        assert leaked not in "\n".join(security_lines), leaked


def test_observer_failures_are_counted_by_observer() -> None:
    from gateway.events import ObserverGroup

    class Broken:
        def on_event(self, event: object) -> None:
            raise RuntimeError("a bug in a sink")

    registry = CollectorRegistry()
    metrics = Metrics(registry)
    group = ObserverGroup([Broken(), metrics])
    metrics.bind_observer_failures(group.failures_by_observer)
    group.on_event(RetryBudgetExhausted(upstream="payments"))
    group.on_event(RetryBudgetExhausted(upstream="payments"))
    text = generate_latest(registry).decode()
    assert 'cmn_observer_failures_total{observer="Broken"} 2.0' in text
    assert 'cmn_retry_budget_exhausted_total{upstream="payments"} 2.0' in text  # the others still ran


def test_the_control_channel_gauge_follows_each_transport(metrics: Metrics, registry: CollectorRegistry) -> None:
    metrics.on_event(ControlChannelChanged("rabbitmq", available=False, reason="ACCESS_REFUSED"))
    metrics.on_event(ControlChannelChanged("kafka", available=True))
    assert registry.get_sample_value("cmn_control_channel_up", {"transport": "rabbitmq"}) == 0
    assert registry.get_sample_value("cmn_control_channel_up", {"transport": "kafka"}) == 1
    metrics.on_event(ControlChannelChanged("rabbitmq", available=True))
    assert registry.get_sample_value("cmn_control_channel_up", {"transport": "rabbitmq"}) == 1
