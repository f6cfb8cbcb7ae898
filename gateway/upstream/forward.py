"""The egress side as the pipeline sees it: upstream name → router → response.

``build_forwarder`` is what ``app.py`` calls; it owns every pool, task and session it creates,
and ``aclose`` releases them all.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from gateway.clock import Clock
from gateway.errors import UnknownUpstreamError
from gateway.events import Observer
from gateway.upstream import policies
from gateway.upstream.balancer import make_balancer
from gateway.upstream.base import OutboundRequest, UpstreamResponse
from gateway.upstream.cluster import Cluster
from gateway.upstream.config import UpstreamConfig, UpstreamDefaults, UpstreamsFile
from gateway.upstream.host import Host
from gateway.upstream.pool import ConnectionPool
from gateway.upstream.retry import RetryBudget
from gateway.upstream.router import Router
from gateway.upstream.tls import StaticTlsContexts, TlsContextProvider


class GatewayForwarder:
    """Implements ``gateway.upstream.base.Forwarder`` over one ``Router`` per configured upstream."""

    def __init__(self, routers: Mapping[str, Router]) -> None:
        self._routers = dict(routers)

    def knows(self, upstream: str) -> bool:
        return upstream in self._routers

    def router(self, upstream: str) -> Router:
        try:
            return self._routers[upstream]
        except KeyError:
            raise UnknownUpstreamError(f"upstream {upstream!r} is not configured") from None

    async def forward(self, request: OutboundRequest) -> UpstreamResponse:
        return await self.router(request.upstream).forward(request)

    async def aclose(self) -> None:
        for router in self._routers.values():
            await router.aclose()

    async def __aenter__(self) -> GatewayForwarder:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<GatewayForwarder {sorted(self._routers)}>"


def build_forwarder(
    upstreams: UpstreamsFile,
    defaults: UpstreamDefaults,
    *,
    clock: Clock,
    observer: Observer,
    tls: TlsContextProvider | None = None,
    redis_url: str | None = None,
    rng: random.Random | None = None,
) -> GatewayForwarder:
    """Build every upstream's router. Must be called inside the running event loop."""
    rng = rng or random.Random()
    if tls is None:
        tls = StaticTlsContexts({n: c.tls for n, c in upstreams.upstreams.items() if c.tls is not None})
    routers = {
        name: _router(name, config, defaults, clock=clock, observer=observer, tls=tls, rng=rng)
        for name, config in upstreams.upstreams.items()
    }
    return GatewayForwarder(routers)


def _router(
    name: str,
    config: UpstreamConfig,
    defaults: UpstreamDefaults,
    *,
    clock: Clock,
    observer: Observer,
    tls: TlsContextProvider,
    rng: random.Random,
) -> Router:
    hosts = [Host(e.url, e.weight) for e in config.endpoints]
    pool = ConnectionPool(
        name, [h.url for h in hosts], policies.pool_policy(config, defaults), clock=clock, tls=tls
    )
    cluster = Cluster(name, hosts, balancer=make_balancer(config.load_balancer, rng), pool=pool, clock=clock)
    return Router(
        cluster,
        policies.route_policy(config, defaults),
        budget=RetryBudget(policies.budget_policy(config)),
        clock=clock,
        observer=observer,
        rng=rng,
    )
