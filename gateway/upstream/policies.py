"""The upstreams file resolved into the frozen policies each component takes (defaults filled in).

A policy field takes the config field of the same name (``derive``); only what differs is written
out: a default from the environment, or a config field that carries a prefix.
"""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from gateway.tls import TlsSettings
from gateway.upstream.breaker import BreakerPolicy
from gateway.upstream.bulkhead import BulkheadPolicy
from gateway.upstream.config import UpstreamConfig, UpstreamDefaults, UpstreamsFile
from gateway.upstream.health import HealthPolicy
from gateway.upstream.hedge import HedgePolicy
from gateway.upstream.outlier import OutlierPolicy
from gateway.upstream.pool import PoolPolicy
from gateway.upstream.ratelimit import Rate
from gateway.upstream.retry import BudgetPolicy, RetryPolicy
from gateway.upstream.router import RoutePolicy

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

P = TypeVar("P", bound="DataclassInstance")


def derive(policy: type[P], config: BaseModel, *, prefix: str = "", **given: Any) -> P:
    """``policy`` with each field from ``config``'s field ``prefix + name``, unless ``given``.

    Every policy field must come from one or the other: a policy field the config lacks is a
    TypeError here, not a silent dataclass default.
    """
    known = type(config).model_fields
    values: dict[str, Any] = {}
    for f in fields(policy):
        if f.name in given:
            values[f.name] = given[f.name]
        elif prefix + f.name in known:
            values[f.name] = getattr(config, prefix + f.name)
        else:
            raise TypeError(f"{policy.__name__}.{f.name} has no {type(config).__name__}.{prefix}{f.name}")
    return policy(**values)


def pool_policy(config: UpstreamConfig, defaults: UpstreamDefaults) -> PoolPolicy:
    return derive(PoolPolicy, config.pool, max_size=config.pool.max_size or defaults.pool_size)


def retry_policy(config: UpstreamConfig, defaults: UpstreamDefaults) -> RetryPolicy:
    return derive(RetryPolicy, config.retry, attempts=config.retry.attempts or defaults.retry_attempts)


def budget_policy(config: UpstreamConfig) -> BudgetPolicy:
    return derive(BudgetPolicy, config.retry, prefix="budget_")


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
    return derive(BreakerPolicy, config.breaker) if config.breaker.enabled else None


def outlier_policy(config: UpstreamConfig) -> OutlierPolicy | None:
    outlier = config.outlier_detection
    return derive(OutlierPolicy, outlier) if outlier.enabled else None


def health_policy(config: UpstreamConfig) -> HealthPolicy | None:
    return None if config.health_check is None else derive(HealthPolicy, config.health_check)


def bulkhead_policy(config: UpstreamConfig) -> BulkheadPolicy | None:
    limits = config.limits
    if limits.max_concurrent is None:
        return None
    return derive(BulkheadPolicy, limits, max_concurrent=limits.max_concurrent)


def hedge_policy(config: UpstreamConfig) -> HedgePolicy | None:
    hedge = config.hedge
    if hedge is None:
        return None
    after = None if hedge.after_ms == "p95" else hedge.after_ms / 1000  # None: learned, the recent p95
    return HedgePolicy(after=after, max=hedge.max, quantile=0.95)


def rates(config: UpstreamConfig) -> tuple[Rate | None, Rate | None]:
    """(upstream-wide rate, per-tenant rate)."""
    limit = config.rate_limit
    upstream = Rate.of(limit.upstream.rate, limit.upstream.burst) if limit.upstream is not None else None
    tenant = Rate.of(limit.per_tenant.rate, limit.per_tenant.burst) if limit.per_tenant is not None else None
    return upstream, tenant


def tls_by_upstream(upstreams: UpstreamsFile) -> dict[str, TlsSettings]:
    """Each ``tls:`` block as the one TLS type; upstreams without one take ``TlsSettings()``."""
    return {name: derive(TlsSettings, u.tls) for name, u in upstreams.upstreams.items() if u.tls is not None}


def _first(value: int | None, default: int) -> int:
    return default if value is None else value
