"""An upstream's endpoints: which host the next attempt goes to, and what its outcome teaches us.

Host selection is Envoy's: drop hosts behind an open breaker (none left: ``circuit_open`` at once,
without touching the network); among the rest prefer those neither ejected by outlier detection
nor failing active health checks (when none are, use them all: Envoy's "panic" routing beats
refusing everything); avoid the host the previous attempt just failed on; let the balancer pick.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from gateway.errors import CircuitOpenError
from gateway.upstream.balancer import Balancer
from gateway.upstream.health import HealthChecker
from gateway.upstream.host import Host
from gateway.upstream.kinds import FailureKind
from gateway.upstream.outlier import OutlierDetector
from gateway.upstream.pool import ConnectionPool
from gateway.upstream.snapshot import EndpointSnapshot


class Cluster:
    def __init__(
        self,
        name: str,
        hosts: Sequence[Host],
        *,
        balancer: Balancer,
        pool: ConnectionPool,
        outlier: OutlierDetector | None = None,
        health: HealthChecker | None = None,
    ) -> None:
        self.name = name
        self.hosts = list(hosts)
        self.balancer = balancer
        self.pool = pool
        self.outlier = outlier
        self.health = health

    def choose(self, avoid: Host | Collection[Host] | None = None) -> Host:
        """The host for the next attempt, with its breaker permit taken; release or record it after.

        ``avoid``: the host(s) to pass over unless nothing else is left (the one a retry follows,
        or every host a hedged request is already racing on)."""
        if self.outlier is not None:
            self.outlier.refresh()
        permitted = [h for h in self.hosts if h.breaker is None or h.breaker.permits()]
        if not permitted:
            raise self._refusal()
        candidates = [h for h in permitted if h.healthy and not h.ejected] or permitted
        if avoid is not None:
            avoided = (avoid,) if isinstance(avoid, Host) else avoid
            candidates = [h for h in candidates if h not in avoided] or candidates
        host = self.balancer.pick(candidates)
        if host.breaker is not None:
            host.breaker.try_acquire()  # cannot fail: permits() said yes and nothing ran since
        return host

    def _refusal(self) -> CircuitOpenError:
        """Every breaker refuses: an operator's forced open names its principal (the first endpoint's
        when all are forced open, as ``cmn breaker open UPSTREAM`` does)."""
        forced = [h.breaker.forced if h.breaker is not None else None for h in self.hosts]
        opened = [f for f in forced if f is not None and f.state == "open"]
        if opened and len(opened) == len(self.hosts):
            return CircuitOpenError(f"forced open by {opened[0].by}")
        return CircuitOpenError(f"upstream {self.name}: the circuit breaker of every endpoint is open")

    def record(self, host: Host, kind: FailureKind | None, duration: float) -> None:
        """The outcome of an attempt on ``host``: None for an answer below 500, else its failure kind."""
        if host.breaker is not None:
            host.breaker.record(kind, duration)
        if self.outlier is not None:
            self.outlier.record(host, kind)

    def release(self, host: Host) -> None:
        """An attempt that produced no outcome (no pool slot, cancelled): return its breaker permit."""
        if host.breaker is not None:
            host.breaker.release()

    def snapshot(self) -> tuple[EndpointSnapshot, ...]:
        """Every endpoint as its breaker, outlier detector, pool and health checker see it now."""
        outlier = self.outlier.snapshot() if self.outlier is not None else {}
        health = self.health.snapshot() if self.health is not None else {}
        return tuple(
            EndpointSnapshot(
                url=host.url,
                weight=host.weight,
                active=host.active,
                breaker=host.breaker.snapshot() if host.breaker is not None else None,
                outlier=outlier.get(host.url),
                pool=self.pool.snapshot(host.url),
                health=health.get(host.url),
            )
            for host in self.hosts
        )

    def start(self) -> None:
        if self.health is not None:
            self.health.start()

    async def aclose(self) -> None:
        if self.health is not None:
            await self.health.aclose()
        for host in self.hosts:
            if host.breaker is not None:
                await host.breaker.aclose()
        await self.pool.aclose()

    def __repr__(self) -> str:
        ejected = sum(1 for h in self.hosts if h.ejected)
        active = sum(h.active for h in self.hosts)
        return f"<Cluster {self.name} [{len(self.hosts)} endpoints, {ejected} ejected | {active} active]>"
