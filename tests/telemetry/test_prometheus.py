"""A real Prometheus scrapes a MetricsServer on loopback; PromQL through its HTTP API sees what happened."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry

from gateway.events import SECURITY_KINDS, BreakerStateChanged, RequestCompleted, RequestReceived, SecurityRefused
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.server import MetricsServer
from tests.fixtures.prometheus import PrometheusServer, StartPrometheus
from tests.telemetry.promql import RULES, alert_rules

JOB = '{job="cmn-gateway"}'


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    return Metrics(registry, version="9.9.9")


@pytest.fixture
async def server(registry: CollectorRegistry) -> AsyncIterator[MetricsServer]:
    async with MetricsServer(registry, host="127.0.0.1", port=0, readiness=lambda: True) as server:
        yield server


def answer(metrics: Metrics, n: int, *, status: int | None = 200, error_code: str | None = None) -> None:
    for i in range(n):
        metrics.on_event(RequestReceived("rabbitmq"))
        metrics.on_event(
            RequestCompleted(f"r-{i}", "payments", "POST", status, 0.02, error_code=error_code, transport="rabbitmq")
        )


async def test_prometheus_scrapes_the_requests_the_gateway_answered(
    metrics: Metrics, server: MetricsServer, prometheus_server: StartPrometheus
) -> None:
    answer(metrics, 17)
    answer(metrics, 3, status=None, error_code="timeout")
    prometheus = await prometheus_server([f"127.0.0.1:{server.port}"], rule_files=[RULES])

    assert await prometheus.wait_for_value(f"sum(cmn_requests_total{JOB})", 20) == 20
    by_code = await prometheus.values(f"sum by (error_code) (cmn_requests_total{JOB})", by="error_code")
    assert by_code == {"none": 17, "timeout": 3}
    assert await prometheus.values(f"cmn_requests_in_flight{JOB}", by="transport") == {"rabbitmq": 0}
    assert await prometheus.values(f"cmn_build_info{JOB}", by="version") == {"9.9.9": 1}
    p95 = await prometheus.values(
        f"histogram_quantile(0.95, sum by (le) (cmn_request_duration_seconds_bucket{JOB}))", by=""
    )
    assert 0.01 < p95[""] <= 0.025  # every request took 20 ms: the (10 ms, 25 ms] bucket

    # Scraping goes on: more requests and a breaker opening show up in the next samples.
    answer(metrics, 5)
    metrics.on_event(BreakerStateChanged("payments", "10.0.0.1:443", "closed", "open"))
    assert await prometheus.wait_for_value(f"sum(cmn_requests_total{JOB})", 25) == 25
    assert await prometheus.wait_for_value('max(cmn_breaker_state{state="open"})', 1) == 1

    await rules_are_loaded_and_healthy(prometheus)


async def test_the_first_security_refusal_of_a_kind_shows_in_increase(
    metrics: Metrics, server: MetricsServer, prometheus_server: StartPrometheus
) -> None:
    prometheus = await prometheus_server([f"127.0.0.1:{server.port}"])
    # Every kind is scraped at 0 before anything happens, so increase() has a sample to start from.
    assert await prometheus.wait_for_value(f"count(cmn_security_events_total{JOB})", len(SECURITY_KINDS) + 1) == 8
    metrics.on_event(SecurityRefused("reply_to_refused", "reply_to cmn.telemetry", "billing", transport="kafka"))
    refused = 'sum(cmn_security_events_total{job="cmn-gateway", kind="reply_to_refused"})'
    assert await prometheus.wait_for_value(refused, 1) == 1
    rising = await prometheus.values(f"sum by (kind) (increase(cmn_security_events_total{JOB}[1m])) > 0", by="kind")
    assert set(rising) == {"reply_to_refused"}


async def rules_are_loaded_and_healthy(prometheus: PrometheusServer) -> None:
    groups = (await prometheus.api("/api/v1/rules"))["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert {rule["name"] for rule in rules} == {rule["alert"] for rule in alert_rules()}
    assert {rule["health"] for rule in rules} <= {"ok", "unknown"}  # "err" when PromQL fails to evaluate
