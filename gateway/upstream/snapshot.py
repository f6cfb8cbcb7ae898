"""One gateway instance's live state, as ``/admin/upstreams`` serves it and ``cmn status`` shows it.

Each part is made by the component that owns it, with a synchronous ``snapshot()`` that only reads
(no I/O, no events, no transitions):

    InstanceSnapshot                      Gateway (app.py): instance, version, uptime, transports, drain
    └─ UpstreamSnapshot                   Router: rate limit, bulkhead, and its cluster's endpoints
       ├─ RateLimitSnapshot               RateLimiter (bucket levels from LocalBuckets)
       ├─ BulkheadSnapshot                Bulkhead
       └─ EndpointSnapshot                Cluster, from its Host and the parts below
          ├─ BreakerSnapshot              CircuitBreaker
          ├─ OutlierSnapshot              OutlierDetector
          ├─ PoolSnapshot                 ConnectionPool
          ├─ HealthSnapshot               HealthChecker
          └─ PeersSnapshot                SharedHealth (gateway/control), added by the Gateway

Times an operator compares with a clock (``ejected_until``, ``open_until``, ``checked_at``, ``time``)
are wall-clock epoch seconds, converted from the monotonic clock with the injected clock; durations
are seconds. ``to_json`` gives the JSON-ready dict (the wire form; the table renderer reads that).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from gateway.clock import Clock

DrainState = Literal["starting", "consuming", "draining", "stopped"]


@dataclass(frozen=True, slots=True)
class ForcedSnapshot:
    """An operator's override of a breaker (``cmn breaker open|close``)."""

    state: Literal["open", "closed"]
    by: str  # the principal who forced it
    until: float  # epoch seconds when it expires and the breaker is automatic again


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """The rates are those of the window that decides the state: while closed the sliding window,
    while half-open the probes so far, while open the window that opened it (why it is open)."""

    state: Literal["closed", "open", "half_open"]
    window: str  # "count:50" (the last 50 calls) or "time:60s" (the calls of the last 60 s)
    calls: int
    failure_rate: float | None  # percent; None before any call in the window
    slow_call_rate: float | None
    open_until: float | None  # epoch seconds when an open breaker lets its first probes through
    forced: ForcedSnapshot | None = None  # an operator's override; ``state`` is the automatic state under it


@dataclass(frozen=True, slots=True)
class OutlierSnapshot:
    ejected_until: float | None  # epoch seconds; None when not ejected
    ejections: int  # ejections in a row (each lasts longer)
    consecutive_failures: int


@dataclass(frozen=True, slots=True)
class PoolSnapshot:
    size: int
    in_use: int
    idle: int  # keep-alive connections open and unused
    waiting: int


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    healthy: bool
    last: Literal["passed", "failed"] | None  # None before the first check
    consecutive_passes: int
    consecutive_failures: int
    checked_at: float | None  # epoch seconds of the last check


@dataclass(frozen=True, slots=True)
class PeersSnapshot:
    """The fleet's quorum on this endpoint (shared health: gateway/control/shared_health.py): ``votes`` of
    the ``live`` replicas, this one counted, say it is down; ``quorum`` of them take it out."""

    votes: int
    quorum: int
    live: int
    down: bool


@dataclass(frozen=True, slots=True)
class EndpointSnapshot:
    url: str
    weight: int
    active: int  # requests on the wire to it now
    breaker: BreakerSnapshot | None
    outlier: OutlierSnapshot | None
    pool: PoolSnapshot
    health: HealthSnapshot | None
    peers: PeersSnapshot | None = None  # filled by the gateway when shared health is on and a replica says down


@dataclass(frozen=True, slots=True)
class BucketSnapshot:
    tokens: float  # left now, refill included
    burst: float
    rate: float  # tokens per second


@dataclass(frozen=True, slots=True)
class TenantBucketSnapshot:
    tenant: str
    tokens: float
    burst: float
    rate: float


@dataclass(frozen=True, slots=True)
class RateLimitSnapshot:
    """Bucket levels as this replica holds them. With ``scope == "shared"`` the real buckets live in
    Redis: the levels here are the local view (the fallback buckets, used while Redis is out)."""

    scope: Literal["local", "shared"]
    degraded: bool  # shared, but Redis is unreachable: the local buckets decide
    upstream: BucketSnapshot | None
    tenants: tuple[TenantBucketSnapshot, ...]  # the emptiest first, at most a few
    tenant_buckets: int  # tenant buckets held locally in all


@dataclass(frozen=True, slots=True)
class BulkheadSnapshot:
    max_concurrent: int
    max_queued: int
    in_flight: int
    queued: int


@dataclass(frozen=True, slots=True)
class ParkingSnapshot:
    """This replica's parking of one upstream (park:): tries it parked, and parked copies it took back.
    Over the fleet, parked minus returned is about what waits on the park tiers now."""

    delays: tuple[int, ...]
    parked: int
    returned: int


@dataclass(frozen=True, slots=True)
class UpstreamSnapshot:
    name: str
    endpoints: tuple[EndpointSnapshot, ...]
    rate_limit: RateLimitSnapshot | None
    bulkhead: BulkheadSnapshot | None
    parking: ParkingSnapshot | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class TransportSnapshot:
    name: str
    ready: bool
    in_flight: int


@dataclass(frozen=True, slots=True)
class InstanceSnapshot:
    instance: str
    version: str
    time: float  # epoch seconds when the snapshot was taken
    uptime: float  # seconds since the gateway started
    transports: tuple[TransportSnapshot, ...]
    in_flight: int
    drain: DrainState
    upstreams: tuple[UpstreamSnapshot, ...]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def rate(part: int, whole: int) -> float | None:
    """``part`` as a percentage of ``whole``, to 0.1; None when there is no whole."""
    return round(part * 100 / whole, 1) if whole else None


def wall_time(clock: Clock, monotonic_at: float) -> float:
    """A point on ``clock``'s monotonic scale as epoch seconds (to the millisecond)."""
    return round(clock.time() + (monotonic_at - clock.monotonic()), 3)
