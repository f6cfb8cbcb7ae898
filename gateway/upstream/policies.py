"""The upstreams file resolved into the frozen policies each component takes (defaults filled in)."""

from __future__ import annotations

from gateway.upstream.config import UpstreamConfig, UpstreamDefaults
from gateway.upstream.pool import PoolPolicy
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


def _first(value: int | None, default: int) -> int:
    return default if value is None else value
