"""Prometheus metrics for the gateway, fed by core events and by values pulled at scrape time.

``Metrics`` is an ``Observer``: the core emits typed events and never imports Prometheus. Values
that are cheaper to read when Prometheus asks (Kafka consumer lag, certificate expiries) are
bound as callables and read by a collector during the scrape.

Naming follows the Prometheus conventions: prefix ``cmn_``, base units (seconds), counters end in
``_total``. Every label value is bounded: methods fold onto the standard set, error codes onto the
wire contract's codes, security refusals onto ``SECURITY_KINDS`` (who and why go to the log, never
to a label), and names the gateway does not control (upstreams that failed routing,
retry reasons) pass through a per-label cap, so a misbehaving publisher cannot grow the series count.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway.errors import ERROR_CODES
from gateway.events import (
    SECURITY_KINDS,
    BreakerForced,
    BreakerStateChanged,
    CertificateRenewalFailed,
    CertificateRenewed,
    ControlChannelChanged,
    EndpointEjected,
    EndpointHealthChanged,
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

# Fine around the 100 ms objective (0.1 is a bucket edge, so the SLO ratio needs no interpolation),
# coarse out to the longest sensible route timeout.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BREAKER_STATES = ("closed", "open", "half_open")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
NONE = "none"  # label value for "absent" (no status, no error, no transport)
OTHER = "other"  # label value once a label's cap is reached
UNROUTED = "unknown"  # upstream label of requests that never reached routing
_UNROUTED_CODES = frozenset({"invalid_request", "unknown_upstream"})

LagByPartition = Mapping[str, int] | Mapping[int, int]


@dataclass(slots=True)
class LabelCap:
    """Admits the first ``limit`` distinct values of a label; later newcomers become ``other``."""

    limit: int
    seen: set[str] = field(default_factory=set)

    def __call__(self, value: str) -> str:
        if value in self.seen:
            return value
        if len(self.seen) >= self.limit:
            return OTHER
        self.seen.add(value)
        return value


def status_class(status: int | None) -> str:
    if status is None or not 100 <= status <= 599:
        return NONE
    return f"{status // 100}xx"


def breaker_state(raw: str) -> str:
    state = raw.lower().replace("-", "_").replace(" ", "_")
    return state if state in BREAKER_STATES else OTHER


def build_version() -> str:
    try:
        return metadata.version("cmn-gateway")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True, slots=True)
class _RequestSeries:
    """The children one answered request updates, for one label set."""

    requests: Counter
    duration: Histogram
    upstream_duration: Histogram
    in_flight: Gauge | None  # None for direct record_request calls, which never were in flight
    replies: Counter | None


class _Pulled:
    """Collector for values read at scrape time from callables bound after construction."""

    def __init__(self) -> None:
        self.consumer_lag: Callable[[], LagByPartition] | None = None
        self.certificate_expiries: Callable[[], Mapping[str, float]] | None = None
        self.observer_failures: Callable[[], Mapping[str, float]] | None = None
        self.renewed: dict[str, float] = {}  # not_after of certificates seen renewing, by name

    def describe(self) -> Iterable[Metric]:
        return [self._lag_family(), self._expiry_family(), self._observer_family()]

    def collect(self) -> Iterable[Metric]:
        lag = self._lag_family()
        for partition, value in _read(self.consumer_lag).items():
            lag.add_metric([str(partition)], float(value))
        expiry = self._expiry_family()
        for name, not_after in {**self.renewed, **_read(self.certificate_expiries)}.items():
            expiry.add_metric([name], float(not_after))
        failures = self._observer_family()
        for observer, count in _read(self.observer_failures).items():
            failures.add_metric([observer], float(count))
        return [lag, expiry, failures]

    @staticmethod
    def _observer_family() -> CounterMetricFamily:
        return CounterMetricFamily(
            "cmn_observer_failures", "Events an observer (metrics, log, stream) failed on.", labels=["observer"]
        )

    @staticmethod
    def _lag_family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "cmn_kafka_consumer_lag", "Messages behind the partition's high watermark.", labels=["partition"]
        )

    @staticmethod
    def _expiry_family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "cmn_certificate_expiry_timestamp_seconds",
            "Certificate notAfter, in epoch seconds.",
            labels=["name"],
        )


def _read(source: Callable[[], Mapping[Any, float]] | None) -> Mapping[Any, float]:
    if source is None:
        return {}
    try:
        return source()
    except Exception:  # noqa: BLE001 - a failing source must not fail the whole scrape
        return {}


class Metrics:
    """Every ``cmn_*`` metric, registered on the registry it is given; an ``Observer`` of core events.

    ``on_event`` is synchronous, cheap (a few label lookups) and never raises.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        version: str | None = None,
        label_limit: int = 200,
        upstreams: Iterable[str] = (),
    ) -> None:
        # Configured upstreams hold their label from the start: requests refused before routing carry
        # whatever upstream name the caller wrote, and must not crowd the real ones out into "other".
        self._upstream = LabelCap(label_limit, set(upstreams))
        self._endpoint = LabelCap(label_limit)
        self._certificate = LabelCap(label_limit)
        self._retry_reason = LabelCap(32)
        self._scope = LabelCap(8)
        self._fallback_reason = LabelCap(32)
        self._pulled = _Pulled()
        self._events = 0
        self._series: dict[tuple[str, str, str, str, str], _RequestSeries] = {}
        self._received: dict[str, tuple[Gauge, Counter]] = {}
        self._define_request_metrics(registry)
        self._define_egress_metrics(registry)
        self._define_lifecycle_metrics(registry)
        registry.register(self._pulled)
        build = Gauge(
            "cmn_build_info",
            "Always 1; labels carry the gateway version.",
            ["version", "python_version"],
            registry=registry,
        )
        build.labels(version or build_version(), platform.python_version()).set(1)

    def _define_request_metrics(self, r: CollectorRegistry) -> None:
        self.in_flight = Gauge(
            "cmn_requests_in_flight",
            "Requests taken off the bus and not yet answered.",
            ["transport"],
            registry=r,
        )
        self.consumed = Counter(
            "cmn_messages_consumed", "Request messages taken off the bus.", ["transport"], registry=r
        )
        self.requests = Counter(
            "cmn_requests",
            "Requests answered, by outcome.",
            ["upstream", "method", "status_class", "error_code", "transport"],
            registry=r,
        )
        self.duration = Histogram(
            "cmn_request_duration_seconds",
            "Time from taking a request off the bus to having answered it.",
            ["upstream", "transport"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.upstream_duration = Histogram(
            "cmn_upstream_duration_seconds",
            "Time spent in HTTP attempts to the upstream (backoff excluded).",
            ["upstream"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.replies = Counter("cmn_replies_published", "Replies published.", ["transport"], registry=r)
        self.unroutable = Counter(
            "cmn_replies_unroutable",
            "Replies the broker returned because no queue took them (the requester went away).",
            ["transport"],
            registry=r,
        )
        self.parked = Counter(
            "cmn_requests_parked",
            "Failed tries parked on a tier to come back later instead of being answered (park:).",
            ["upstream", "tier"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "cmn_messages_dead_lettered",
            "Request messages copied to the dead-letter queue.",
            ["transport", "error_code"],
            registry=r,
        )

    def _define_egress_metrics(self, r: CollectorRegistry) -> None:
        where = ["upstream", "endpoint"]
        self.breaker_state = Gauge(
            "cmn_breaker_state",
            "1 for the breaker's current state, 0 for the others.",
            [*where, "state"],
            registry=r,
        )
        self.breaker_transitions = Counter(
            "cmn_breaker_transitions", "Breaker state changes, by new state.", [*where, "state"], registry=r
        )
        self.breaker_forced = Gauge(
            "cmn_breaker_forced",
            "1 while an operator forces the breaker into this state (open, closed), 0 otherwise.",
            [*where, "state"],
            registry=r,
        )
        self.ejected = Gauge("cmn_endpoint_ejected", "1 while the endpoint is ejected.", where, registry=r)
        self.control_up = Gauge(
            "cmn_control_channel_up",
            "1 while this replica answers commands on cmn.control over the transport, 0 while refused or down.",
            ["transport"],
            registry=r,
        )
        self.ejections = Counter("cmn_endpoint_ejections", "Outlier ejections of an endpoint.", where, registry=r)
        self.healthy = Gauge(
            "cmn_endpoint_healthy", "Active health check verdict: 1 healthy, 0 unhealthy.", where, registry=r
        )
        self.retries = Counter("cmn_retries", "Retried upstream attempts.", ["upstream", "reason"], registry=r)
        self.budget_exhausted = Counter(
            "cmn_retry_budget_exhausted", "Retries refused by the retry budget.", ["upstream"], registry=r
        )
        self.hedges = Counter(
            "cmn_hedges",
            "Hedged attempts: sent, and won (the hedge's answer was the one returned).",
            ["upstream", "outcome"],
            registry=r,
        )
        self.pool_connections = Gauge(
            "cmn_pool_connections", "Pooled connections, by state.", [*where, "state"], registry=r
        )
        self.pool_waiting = Gauge(
            "cmn_pool_waiting_requests", "Requests waiting for a pooled connection.", where, registry=r
        )

    def _define_lifecycle_metrics(self, r: CollectorRegistry) -> None:
        self.rate_limited = Counter(
            "cmn_rate_limited", "Requests refused by a rate limit.", ["upstream", "scope"], registry=r
        )
        self.rate_limit_fallbacks = Counter(
            "cmn_rate_limit_backend_fallbacks",
            "Times the shared rate-limit backend failed and the local limiter took over.",
            ["reason"],
            registry=r,
        )
        self.renewals = Counter(
            "cmn_certificate_renewals", "Certificate renewal attempts.", ["name", "outcome"], registry=r
        )
        self.security_events = Counter(
            "cmn_security_events",
            "Requests refused for security's sake, by kind (principal and reason go to the log, never here).",
            ["kind"],
            registry=r,
        )
        for kind in (*SECURITY_KINDS, OTHER):
            # At 0 from the start, so rate() and increase() see the very first refusal of each kind.
            self.security_events.labels(kind)
        self._define_shared_health_metrics(r)

    def _define_shared_health_metrics(self, r: CollectorRegistry) -> None:
        self.shared_health_degraded = Gauge(
            "cmn_shared_health_degraded",
            "1 while shared health hears nothing from the control channel: local decisions only.",
            registry=r,
        )
        self.shared_health_live_peers = Gauge(
            "cmn_shared_health_live_peers", "Other replicas heard on cmn.control in the last 30 s.", registry=r
        )
        self.shared_health_takeouts = Counter(
            "cmn_shared_health_takeouts",
            "Endpoints this replica took out because the fleet's quorum said they are down.",
            ["upstream"],
            registry=r,
        )

    # -- pulled values ----------------------------------------------------------------------
    def bind_consumer_lag(self, source: Callable[[], LagByPartition]) -> None:
        """Read at every scrape: messages behind the high watermark, by partition."""
        self._pulled.consumer_lag = source

    def bind_certificate_expiries(self, source: Callable[[], Mapping[str, float]]) -> None:
        """Read at every scrape: certificate notAfter (epoch seconds) by name; wins over renewal events."""
        self._pulled.certificate_expiries = source

    def bind_observer_failures(self, source: Callable[[], Mapping[str, float]]) -> None:
        """Read at every scrape: events each observer class failed on (the group logs the first)."""
        self._pulled.observer_failures = source

    # -- events -----------------------------------------------------------------------------
    def on_event(self, event: Event) -> None:
        try:
            self._dispatch(event)
            self._events += 1
        except Exception:  # noqa: BLE001  # nosec B110  # metrics must never fail the request that emitted the event
            pass

    def _dispatch(self, event: Event) -> None:
        match event:
            case RequestReceived(transport=transport):
                in_flight, consumed = self._received.get(transport) or self._new_received(transport)
                in_flight.inc()
                consumed.inc()
            case RequestCompleted():
                self._completed(event)
            case BreakerStateChanged():
                self._breaker(event)
            case EndpointEjected(upstream=upstream, endpoint=endpoint):
                self.ejections.labels(*self._where(upstream, endpoint)).inc()
                self.ejected.labels(*self._where(upstream, endpoint)).set(1)
            case EndpointRestored(upstream=upstream, endpoint=endpoint):
                self.ejected.labels(*self._where(upstream, endpoint)).set(0)
            case PoolStats():
                self._pool(event)
            case _:
                self._dispatch_rare(event)

    def _dispatch_rare(self, event: Event) -> None:
        match event:
            case RetryAttempted(upstream=upstream, reason=reason):
                self.retries.labels(self._upstream(upstream), self._retry_reason(reason)).inc()
            case RetryBudgetExhausted(upstream=upstream):
                self.budget_exhausted.labels(self._upstream(upstream)).inc()
            case HedgeSent(upstream=upstream):
                self.hedges.labels(self._upstream(upstream), "sent").inc()
            case HedgeWon(upstream=upstream):
                self.hedges.labels(self._upstream(upstream), "won").inc()
            case RateLimited(upstream=upstream, scope=scope):
                self.rate_limited.labels(self._upstream(upstream), self._scope(scope)).inc()
            case RateLimitBackendFallback(reason=reason):
                self.rate_limit_fallbacks.labels(self._fallback_reason(reason)).inc()
            case MessageDeadLettered(transport=transport, error_code=code):
                self.dead_lettered.labels(transport, _error_code(code)).inc()
            case ReplyUnroutable(transport=transport):
                self.unroutable.labels(transport).inc()
            case RequestParked(upstream=upstream, tier=tier, transport=transport):
                self.parked.labels(self._upstream(upstream), str(tier)).inc()
                self.in_flight.labels(transport or NONE).dec()  # it left this worker without a reply
            case SecurityRefused(kind=kind):
                self.security_events.labels(kind if kind in SECURITY_KINDS else OTHER).inc()
            case CertificateRenewed(name=name, not_after=not_after):
                self.renewals.labels(self._certificate(name), "success").inc()
                self._pulled.renewed[self._certificate(name)] = not_after
            case CertificateRenewalFailed(name=name):
                self.renewals.labels(self._certificate(name), "failure").inc()
            case EndpointHealthChanged(upstream=upstream, endpoint=endpoint, healthy=healthy):
                self.healthy.labels(*self._where(upstream, endpoint)).set(1 if healthy else 0)
            case ControlChannelChanged(transport=transport, available=available):
                self.control_up.labels(transport).set(1 if available else 0)
            case EndpointTakenOut(upstream=upstream):
                self.shared_health_takeouts.labels(self._upstream(upstream)).inc()
            case SharedHealthChanged(degraded=degraded, live_peers=live):
                self.shared_health_degraded.set(int(degraded))
                self.shared_health_live_peers.set(live)
            case BreakerForced(upstream=upstream, endpoint=endpoint, state=forced):
                for state in ("open", "closed"):
                    self.breaker_forced.labels(*self._where(upstream, endpoint), state).set(int(state == forced))

    def _completed(self, event: RequestCompleted) -> None:
        transport = event.transport or NONE
        upstream = UNROUTED if event.error_code in _UNROUTED_CODES else self._upstream(event.upstream or UNROUTED)
        method = event.method if event.method in METHODS else OTHER
        key = (upstream, method, status_class(event.status_code), _error_code(event.error_code), transport)
        series = self._series.get(key) or self._new_series(key)
        series.requests.inc()
        series.duration.observe(event.duration)
        if event.upstream_duration is not None:
            series.upstream_duration.observe(event.upstream_duration)
        if series.in_flight is not None and series.replies is not None:
            series.in_flight.dec()
            series.replies.inc()

    def _new_series(self, key: tuple[str, str, str, str, str]) -> _RequestSeries:
        """Label lookups are most of a metric update's cost; each label set is looked up once."""
        upstream, _, _, _, transport = key
        from_bus = transport != NONE  # only bus requests had a RequestReceived
        series = _RequestSeries(
            requests=self.requests.labels(*key),
            duration=self.duration.labels(upstream, transport),
            upstream_duration=self.upstream_duration.labels(upstream),
            in_flight=self.in_flight.labels(transport) if from_bus else None,
            replies=self.replies.labels(transport) if from_bus else None,
        )
        self._series[key] = series
        return series

    def _new_received(self, transport: str) -> tuple[Gauge, Counter]:
        children = (self.in_flight.labels(transport), self.consumed.labels(transport))
        for code in ERROR_CODES:
            # Series that exist at 0 before the first dead letter let increase() see that first one.
            self.dead_lettered.labels(transport, code)
        self._received[transport] = children
        return children

    def _breaker(self, event: BreakerStateChanged) -> None:
        upstream, endpoint = self._where(event.upstream, event.endpoint)
        new = breaker_state(event.new)
        self.breaker_transitions.labels(upstream, endpoint, new).inc()
        for state in BREAKER_STATES:
            self.breaker_state.labels(upstream, endpoint, state).set(1 if state == new else 0)

    def _pool(self, event: PoolStats) -> None:
        upstream, endpoint = self._where(event.upstream, event.endpoint)
        self.pool_connections.labels(upstream, endpoint, "in_use").set(event.in_use)
        self.pool_connections.labels(upstream, endpoint, "idle").set(event.idle)
        self.pool_waiting.labels(upstream, endpoint).set(event.waiting)

    def _where(self, upstream: str, endpoint: str) -> tuple[str, str]:
        return self._upstream(upstream), self._endpoint(endpoint)

    def __repr__(self) -> str:
        return (
            f"<Metrics [{self._events} events | {len(self._upstream.seen)} upstreams, "
            f"{len(self._endpoint.seen)} endpoints]>"
        )


def _error_code(code: str | None) -> str:
    if code is None:
        return NONE
    return code if code in ERROR_CODES else OTHER
