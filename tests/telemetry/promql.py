"""What the deploy artefacts' PromQL may refer to: every sample name the Metrics class really exposes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from gateway.events import (
    BreakerStateChanged,
    CertificateRenewalFailed,
    CertificateRenewed,
    ControlChannelChanged,
    EndpointEjected,
    EndpointRestored,
    EndpointTakenOut,
    Event,
    HedgeSent,
    HedgeWon,
    MessageDeadLettered,
    PoolStats,
    RateLimitBackendFallback,
    RateLimited,
    ReplyUnroutable,
    RequestCompleted,
    RequestParked,
    RequestReceived,
    RetryAttempted,
    RetryBudgetExhausted,
    SecurityRefused,
    SharedHealthChanged,
)
from gateway.telemetry.metrics import Metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
METRIC = re.compile(r"\bcmn_[a-z0-9_]+")

ONE_OF_EACH: tuple[Event, ...] = (
    RequestReceived("rabbitmq"),
    RequestCompleted("r", "payments", "GET", 200, 0.01, upstream_duration=0.005, transport="rabbitmq"),
    BreakerStateChanged("payments", "e:443", "closed", "open"),
    EndpointEjected("payments", "e:443", 30.0, "consecutive_5xx"),
    EndpointRestored("payments", "e:443"),
    RetryAttempted("payments", "e:443", 2, "status_503"),
    RetryBudgetExhausted("payments"),
    HedgeSent("payments", "e:443", 2),
    HedgeWon("payments", "e:443"),
    RequestParked("r", "payments", "GET", 0, 1, 1, 3, "status_503", 55.0, "rabbitmq"),
    EndpointTakenOut("payments", "e:443", 2, 2, 3),
    SharedHealthChanged(degraded=False, live_peers=2, reason="heard"),
    RateLimited("payments", "acme", "tenant"),
    RateLimitBackendFallback("redis down"),
    CertificateRenewed("api", "keyvault", "v1", 2e9),
    CertificateRenewalFailed("api", "keyvault", "403"),
    MessageDeadLettered("kafka", "invalid_request", "bad json"),
    ReplyUnroutable("rabbitmq", "replies.gone", "c-1"),
    PoolStats("payments", "e:443", 1, 2, 0),
    SecurityRefused("forbidden", "not on the allow list", "billing", "payments", "rabbitmq", "r"),
    ControlChannelChanged("rabbitmq", available=False, reason="ACCESS_REFUSED"),
)


def exposed_sample_names() -> frozenset[str]:
    """Sample names (``_total``, ``_bucket`` ... included) after one of every event and bound source."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    for event in ONE_OF_EACH:
        metrics.on_event(event)
    metrics.bind_consumer_lag(lambda: {0: 1})
    metrics.bind_certificate_expiries(lambda: {"api": 2e9})
    return frozenset(s.name for family in registry.collect() for s in family.samples)


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def metric_names(promql: str) -> set[str]:
    return set(METRIC.findall(promql))
