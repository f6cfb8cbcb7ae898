"""One endpoint of an upstream as the egress path sees it (Envoy's "host")."""

from __future__ import annotations

from gateway.upstream.breaker import CircuitBreaker


class Host:
    """Mutable per-endpoint state: in-flight count, active health, outlier ejection.

    Only the event loop thread touches it, and every change is a plain assignment, so there is no lock.
    """

    __slots__ = (
        "active",
        "breaker",
        "consecutive_failures",
        "ejected_until",
        "ejections",
        "healthy",
        "url",
        "weight",
    )

    def __init__(self, url: str, weight: int = 1, breaker: CircuitBreaker | None = None) -> None:
        self.url = url
        self.weight = weight
        self.breaker = breaker
        self.active = 0  # requests in flight, for least-request balancing
        self.healthy = True  # active health checks; stays True when none are configured
        self.ejected_until: float | None = None  # monotonic time; None when not ejected
        self.ejections = 0  # how many times in a row it was ejected, for growing ejection time
        self.consecutive_failures = 0

    @property
    def ejected(self) -> bool:
        return self.ejected_until is not None

    def __repr__(self) -> str:
        state = "ejected" if self.ejected else ("healthy" if self.healthy else "unhealthy")
        breaker = self.breaker.state.value if self.breaker is not None else "no breaker"
        return f"<Host {self.url} w={self.weight} {state} {breaker} active={self.active}>"
