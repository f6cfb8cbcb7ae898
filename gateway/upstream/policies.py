"""The upstreams file resolved into the frozen policies each component takes (defaults filled in)."""

from __future__ import annotations

from gateway.upstream.breaker import BreakerPolicy
from gateway.upstream.bulkhead import BulkheadPolicy
from gateway.upstream.config import UpstreamConfig, UpstreamDefaults
from gateway.upstream.health import HealthPolicy
from gateway.upstream.outlier import OutlierPolicy
from gateway.upstream.pool import PoolPolicy
from gateway.upstream.ratelimit import Rate
from gateway.upstream.retry import BudgetPolicy, RetryPolicy
from gateway.upstream.router import RoutePolicy


def pool_policy(config: UpstreamConfig, defaults: UpstreamDefaults) -> PoolPolicy:
    pool = config.pool
    return PoolPolicy(
        max_size=pool.max_size or defaults.pool_size,
        acquire_timeout=pool.acquire_timeout,
        idle_timeout=pool.idle_timeout,
    )


def retry_policy(config: UpstreamConfig, defaults: UpstreamDefaults) -> RetryPolicy:
    retry = config.retry
    return RetryPolicy(
        attempts=retry.attempts or defaults.retry_attempts,
        backoff_base=retry.backoff_base,
        backoff_max=retry.backoff_max,
        on_statuses=retry.on_statuses,
        on_connect_error=retry.on_connect_error,
        on_timeout=retry.on_timeout,
        respect_retry_after=retry.respect_retry_after,
        max_retry_after=retry.max_retry_after,
    )


def budget_policy(config: UpstreamConfig) -> BudgetPolicy:
    retry = config.retry
    return BudgetPolicy(
        ratio=retry.budget_ratio, min_per_second=retry.budget_min_per_second, window=retry.budget_window
    )


def route_policy(config: UpstreamConfig, defaults: UpstreamDefaults) -> RoutePolicy:
    limits = config.limits
    return RoutePolicy(
        attempt_timeout=config.timeouts.attempt or defaults.request_timeout,
        connect_timeout=config.timeouts.connect or defaults.connect_timeout,
        max_request_bytes=_first(limits.max_request_bytes, defaults.max_request_bytes),
        max_response_bytes=_first(limits.max_response_bytes, defaults.max_response_bytes),
        retry=retry_policy(config, defaults),
    )


def breaker_policy(config: UpstreamConfig) -> BreakerPolicy | None:
    b = config.breaker
    if not b.enabled:
        return None
    return BreakerPolicy(
        window_type=b.window_type,
        window_size=b.window_size,
        minimum_calls=b.minimum_calls,
        failure_rate_threshold=b.failure_rate_threshold,
        slow_call_rate_threshold=b.slow_call_rate_threshold,
        slow_call_duration=b.slow_call_duration,
        open_duration=b.open_duration,
        half_open_calls=b.half_open_calls,
        failure_on=b.failure_on,
    )


def outlier_policy(config: UpstreamConfig) -> OutlierPolicy | None:
    o = config.outlier_detection
    if not o.enabled:
        return None
    return OutlierPolicy(
        consecutive_failures=o.consecutive_failures,
        base_ejection_time=o.base_ejection_time,
        max_ejection_time=o.max_ejection_time,
        max_ejection_percent=o.max_ejection_percent,
    )


def health_policy(config: UpstreamConfig) -> HealthPolicy | None:
    h = config.health_check
    if h is None:
        return None
    return HealthPolicy(
        path=h.path,
        interval=h.interval,
        timeout=h.timeout,
        healthy_threshold=h.healthy_threshold,
        unhealthy_threshold=h.unhealthy_threshold,
        expected_statuses=h.expected_statuses,
    )


def bulkhead_policy(config: UpstreamConfig) -> BulkheadPolicy | None:
    limits = config.limits
    if limits.max_concurrent is None:
        return None
    return BulkheadPolicy(max_concurrent=limits.max_concurrent, max_queued=limits.max_queued)


def rates(config: UpstreamConfig) -> tuple[Rate | None, Rate | None]:
    """(upstream-wide rate, per-tenant rate)."""
    limit = config.rate_limit
    upstream = Rate.of(limit.upstream.rate, limit.upstream.burst) if limit.upstream is not None else None
    tenant = Rate.of(limit.per_tenant.rate, limit.per_tenant.burst) if limit.per_tenant is not None else None
    return upstream, tenant


def _first(value: int | None, default: int) -> int:
    return default if value is None else value
