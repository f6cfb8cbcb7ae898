"""The egress side as the pipeline sees it: upstream name → router → response.

``build_forwarder`` is what ``app.py`` calls (inside the running loop), with the upstreams'
credentials already resolved (``gateway.upstream.auth.resolve_upstream_auth``). The forwarder owns
every pool, breaker timer, health checker and Redis client it was built with; ``aclose`` releases them.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio as aioredis

from gateway.clock import Clock
from gateway.errors import ConfigError, InvalidRequestError, UnknownUpstreamError
from gateway.events import BreakerForced, BreakerStateChanged, Observer
from gateway.upstream import policies
from gateway.upstream.auth import Credential
from gateway.upstream.balancer import make_balancer
from gateway.upstream.base import OutboundRequest, UpstreamResponse
from gateway.upstream.breaker import FORCED_DURATION, BreakerState, CircuitBreaker, ForcedKind, ForcedState
from gateway.upstream.bulkhead import Bulkhead
from gateway.upstream.cluster import Cluster
from gateway.upstream.config import UpstreamConfig, UpstreamDefaults, UpstreamsFile
from gateway.upstream.health import HealthChecker
from gateway.upstream.hedge import Hedging
from gateway.upstream.host import Host
from gateway.upstream.http import AttemptTracer
from gateway.upstream.outlier import OutlierDetector
from gateway.upstream.pool import ConnectionPool
from gateway.upstream.ratelimit import BucketBackend, LocalBuckets, RateLimiter
from gateway.upstream.ratelimit_redis import RedisBuckets
from gateway.upstream.retry import RetryBudget
from gateway.upstream.router import Router
from gateway.upstream.snapshot import UpstreamSnapshot, wall_time
from gateway.upstream.tls import StaticTlsContexts, TlsContextProvider

log = logging.getLogger(__name__)


class GatewayForwarder:
    """Implements ``gateway.upstream.base.Forwarder`` over one ``Router`` per configured upstream."""

    def __init__(
        self,
        routers: Mapping[str, Router],
        *,
        observer: Observer,
        clock: Clock,
        redis: RedisBuckets | None = None,
        stats_interval: float | None = None,
    ) -> None:
        self._routers = dict(routers)
        self._observer = observer
        self._clock = clock
        self._redis = redis
        self._stats_task: asyncio.Task[None] | None = None
        if stats_interval is not None:
            self._stats_task = asyncio.get_running_loop().create_task(self._emit_stats(stats_interval))
        for router in self._routers.values():
            router.cluster.start()

    def knows(self, upstream: str) -> bool:
        return upstream in self._routers

    def router(self, upstream: str) -> Router:
        try:
            return self._routers[upstream]
        except KeyError:
            raise UnknownUpstreamError(f"upstream {upstream!r} is not configured") from None

    def forward(self, request: OutboundRequest) -> Coroutine[Any, Any, UpstreamResponse]:
        # The router's own coroutine, not one awaiting it: a frame fewer for every resume of the request.
        return self.router(request.upstream).forward(request)

    def snapshot(self, upstream: str | None = None) -> tuple[UpstreamSnapshot, ...]:
        """Every upstream's live state (or only ``upstream``'s: UnknownUpstreamError when not configured)."""
        if upstream is not None:
            return (self.router(upstream).snapshot(),)
        return tuple(router.snapshot() for router in self._routers.values())

    def force_breakers(
        self,
        upstream: str,
        state: ForcedKind | Literal["automatic"],
        *,
        principal: str,
        endpoint: str | None = None,
        duration: float = FORCED_DURATION,
    ) -> list[tuple[str, str]]:
        """Force the breakers of ``upstream`` (or of its one ``endpoint``) "open" or "closed" for
        ``duration`` seconds, or put them back to "automatic"; the (upstream, endpoint) pairs changed.

        UnknownUpstreamError for an upstream not configured; InvalidRequestError for an endpoint it
        does not have, or an upstream without breakers (``breaker.enabled: false``).
        """
        breakers = self._breakers(upstream, endpoint)
        if state == "automatic":
            return [(upstream, url) for url, breaker in breakers if breaker.reset(principal)]
        for _, breaker in breakers:
            breaker.force(state, principal, duration)
        return [(upstream, url) for url, _ in breakers]

    def _breakers(self, upstream: str, endpoint: str | None) -> list[tuple[str, CircuitBreaker]]:
        hosts = self.router(upstream).cluster.hosts
        if endpoint is not None:
            hosts = [h for h in hosts if h.url == endpoint]
            if not hosts:
                raise InvalidRequestError(f"upstream {upstream!r} has no endpoint {endpoint!r}")
        breakers = [(h.url, h.breaker) for h in hosts if h.breaker is not None]
        if not breakers:
            raise InvalidRequestError(f"upstream {upstream!r} has no circuit breaker (breaker.enabled is false)")
        return breakers

    def take_out(self, upstream: str, endpoint: str, reason: str) -> bool:
        """Take one endpoint out of this replica's rotation because the fleet's quorum says it is down:
        its breaker trips open (half-open probes bring it back), or, without a breaker, the outlier
        detector ejects it (the ejection runs out). False when there is nothing to do: unknown here,
        already out, forced by an operator, or neither breaker nor outlier detection configured."""
        router = self._routers.get(upstream)
        hosts = [h for h in router.cluster.hosts if h.url == endpoint] if router is not None else []
        if router is None or not hosts:
            return False
        host = hosts[0]
        if host.breaker is not None:
            return host.breaker.trip()
        outlier = router.cluster.outlier
        return outlier.eject(host, reason) if outlier is not None else False

    def forced_states(self) -> list[dict[str, Any]]:
        """Every forcing in force, JSON-ready with its absolute expiry (epoch seconds): what a replica
        that starts later applies with ``apply_forced_states``."""
        states = []
        for name, router in self._routers.items():
            for host in router.cluster.hosts:
                forced = host.breaker.forced if host.breaker is not None else None
                if forced is not None:
                    states.append(_forced_json(name, host.url, forced, self._clock))
        return states

    def apply_forced_states(self, states: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
        """Apply forcings exported by ``forced_states`` (a peer's), each for the time it has left;
        expired ones, and upstreams or endpoints this replica does not have, are skipped."""
        applied = []
        now = self._clock.time()
        for item in states:
            left = float(item["until"]) - now
            if left <= 0 or item.get("state") not in ("open", "closed") or not self.knows(str(item["upstream"])):
                continue
            try:
                applied += self.force_breakers(
                    str(item["upstream"]),
                    item["state"],
                    principal=str(item["by"]),
                    endpoint=str(item["endpoint"]),
                    duration=left,
                )
            except InvalidRequestError:
                continue  # an endpoint or breaker this replica's upstreams file does not have
        return applied

    def emit_pool_stats(self) -> None:
        for router in self._routers.values():
            for stats in router.cluster.pool.all_stats():
                self._observer.on_event(stats)

    async def _emit_stats(self, interval: float) -> None:
        while True:
            await self._clock.sleep(interval)
            self.emit_pool_stats()

    async def aclose(self) -> None:
        if self._stats_task is not None:
            self._stats_task.cancel()
            await asyncio.gather(self._stats_task, return_exceptions=True)
        for router in self._routers.values():
            await router.aclose()
        if self._redis is not None:
            await self._redis.aclose()

    async def __aenter__(self) -> GatewayForwarder:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<GatewayForwarder {sorted(self._routers)}>"


@dataclass(frozen=True, slots=True)
class _Shared:
    """What every upstream's parts are built with."""

    defaults: UpstreamDefaults
    clock: Clock
    observer: Observer
    tls: TlsContextProvider
    rng: random.Random
    local_buckets: LocalBuckets
    shared_buckets: BucketBackend
    credentials: Mapping[str, Credential]
    attempts: AttemptTracer | None = None


def build_forwarder(
    upstreams: UpstreamsFile,
    defaults: UpstreamDefaults,
    *,
    clock: Clock,
    observer: Observer,
    tls: TlsContextProvider | None = None,
    redis_url: str | None = None,
    rng: random.Random | None = None,
    stats_interval: float | None = 10.0,
    credentials: Mapping[str, Credential] | None = None,
    attempts: AttemptTracer | None = None,
) -> GatewayForwarder:
    """Build every upstream's router; ``redis_url`` makes ``rate_limit.shared`` limits shared (else local).

    ``credentials`` holds the resolved credential of every upstream with ``auth:``; one missing is a
    ConfigError (an upstream must never be called without the credential its file asks for).
    """
    credentials = dict(credentials or {})
    if missing := sorted(n for n, c in upstreams.upstreams.items() if c.auth is not None and n not in credentials):
        raise ConfigError(f"upstreams {', '.join(missing)} have auth: but no resolved credential was given")
    local = LocalBuckets(clock)
    redis = _redis_buckets(redis_url, local, clock, observer) if redis_url else None
    shared = _Shared(
        defaults=defaults,
        clock=clock,
        observer=observer,
        tls=tls or StaticTlsContexts(policies.tls_by_upstream(upstreams)),
        rng=rng or random.Random(),  # nosec B311  # balancer picks and backoff jitter, not secrets
        local_buckets=local,
        shared_buckets=redis or local,
        credentials=credentials,
        attempts=attempts,
    )
    routers = {name: _router(name, config, shared) for name, config in upstreams.upstreams.items()}
    return GatewayForwarder(routers, observer=observer, clock=clock, redis=redis, stats_interval=stats_interval)


def _forced_json(upstream: str, endpoint: str, forced: ForcedState, clock: Clock) -> dict[str, Any]:
    return {
        "upstream": upstream,
        "endpoint": endpoint,
        "state": forced.state,
        "by": forced.by,
        "until": wall_time(clock, forced.until),
    }


def _redis_buckets(url: str, local: LocalBuckets, clock: Clock, observer: Observer) -> RedisBuckets:
    client = aioredis.Redis.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.25)
    return RedisBuckets(client, fallback=local, clock=clock, observer=observer)


def _router(name: str, config: UpstreamConfig, shared: _Shared) -> Router:
    return Router(
        _cluster(name, config, shared),
        policies.route_policy(config, shared.defaults),
        budget=RetryBudget(policies.budget_policy(config)),
        clock=shared.clock,
        observer=shared.observer,
        rng=shared.rng,
        limiter=_limiter(name, config, shared),
        bulkhead=_bulkhead(name, config, shared),
        credential=shared.credentials.get(name),
        hedging=_hedging(config, shared),
    )


def _hedging(config: UpstreamConfig, shared: _Shared) -> Hedging | None:
    policy = policies.hedge_policy(config)
    return Hedging(policy, clock=shared.clock) if policy is not None else None


def _cluster(name: str, config: UpstreamConfig, shared: _Shared) -> Cluster:
    hosts = [Host(e.url, e.weight, _breaker(name, e.url, config, shared)) for e in config.endpoints]
    pool = ConnectionPool(
        name,
        [h.url for h in hosts],
        policies.pool_policy(config, shared.defaults),
        clock=shared.clock,
        tls=shared.tls,
        attempts=shared.attempts,
    )
    outlier_policy = policies.outlier_policy(config)
    outlier = (
        OutlierDetector(
            name,
            hosts,
            outlier_policy,
            clock=shared.clock,
            observer=shared.observer,
            on_eject=lambda h: pool.reset(h.url),
        )
        if outlier_policy is not None
        else None
    )
    health_policy = policies.health_policy(config)
    health = (
        HealthChecker(
            name,
            hosts,
            health_policy,
            clock=shared.clock,
            observer=shared.observer,
            tls=shared.tls,
            credential=shared.credentials.get(name),
        )
        if health_policy is not None
        else None
    )
    balancer = make_balancer(config.load_balancer, shared.rng)
    return Cluster(name, hosts, balancer=balancer, pool=pool, outlier=outlier, health=health)


def _breaker(upstream: str, endpoint: str, config: UpstreamConfig, shared: _Shared) -> CircuitBreaker | None:
    policy = policies.breaker_policy(config)
    if policy is None:
        return None
    observer = shared.observer

    clock = shared.clock

    def changed(old: BreakerState, new: BreakerState) -> None:
        observer.on_event(BreakerStateChanged(upstream, endpoint, old.value, new.value))

    def forced(new: ForcedState | None, principal: str, expired: bool) -> None:
        state, until = (new.state, wall_time(clock, new.until)) if new is not None else ("automatic", None)
        observer.on_event(BreakerForced(upstream, endpoint, state, principal, until, expired))

    return CircuitBreaker(policy, clock=clock, on_change=changed, on_forced=forced)


def _limiter(name: str, config: UpstreamConfig, shared: _Shared) -> RateLimiter | None:
    upstream_rate, tenant_rate = policies.rates(config)
    if upstream_rate is None and tenant_rate is None:
        return None
    if config.rate_limit.shared and shared.shared_buckets is shared.local_buckets:
        log.warning("upstream %s asks for shared rate limits but no Redis URL is set: limits are per replica", name)
    return RateLimiter(
        name,
        upstream_rate=upstream_rate,
        tenant_rate=tenant_rate,
        wait=config.rate_limit.wait,
        backend=shared.shared_buckets if config.rate_limit.shared else shared.local_buckets,
        clock=shared.clock,
        observer=shared.observer,
    )


def _bulkhead(name: str, config: UpstreamConfig, shared: _Shared) -> Bulkhead | None:
    policy = policies.bulkhead_policy(config)
    return Bulkhead(name, policy, clock=shared.clock) if policy is not None else None
