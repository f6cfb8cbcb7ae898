"""An upstream's endpoints: which host the next attempt goes to, and what its outcome teaches us.

Host selection is Envoy's: drop hosts that are ejected, failing active health checks or behind an
open breaker; prefer not to reuse the host the previous attempt just failed on; let the balancer
pick among the rest. When every host is behind an open breaker the answer is ``circuit_open``,
at once and without touching the network.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.clock import Clock
from gateway.errors import CircuitOpenError
from gateway.upstream.balancer import Balancer
from gateway.upstream.host import Host
from gateway.upstream.pool import ConnectionPool


class Cluster:
    def __init__(
        self,
        name: str,
        hosts: Sequence[Host],
        *,
        balancer: Balancer,
        pool: ConnectionPool,
        clock: Clock,
    ) -> None:
        self.name = name
        self.hosts = list(hosts)
        self.balancer = balancer
        self.pool = pool
        self._clock = clock

    def choose(self, avoid: Host | None = None) -> Host:
        """The host for the next attempt; ``avoid`` is used only when nothing else is available."""
        candidates = [h for h in self.hosts if self._available(h)]
        if not candidates:
            raise CircuitOpenError(f"upstream {self.name}: every endpoint is unavailable")
        if avoid is not None and len(candidates) > 1:
            candidates = [h for h in candidates if h is not avoid] or candidates
        return self.balancer.pick(candidates)

    def _available(self, host: Host) -> bool:
        return host.healthy and not host.ejected

    async def aclose(self) -> None:
        await self.pool.aclose()

    def __repr__(self) -> str:
        ejected = sum(1 for h in self.hosts if h.ejected)
        active = sum(h.active for h in self.hosts)
        return f"<Cluster {self.name} [{len(self.hosts)} endpoints, {ejected} ejected | {active} active]>"
