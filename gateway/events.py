"""Typed, frozen events the core emits. Observers (metrics, logs, the cmn.telemetry stream) consume them.

The core never imports Prometheus or OpenTelemetry: it calls ``Observer.on_event`` and whoever was
wired in by ``app.py`` reacts.
"""

from __future__ import annotations

import logging
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

log = logging.getLogger("cmn.events")


class _Event:
    """What every event shares. ``on_stream``: the stream sink publishes it, best effort, as it is
    observed. Request events say no: the pipeline publishes ``request.completed`` itself and waits for
    the broker's confirm; ``request.received`` and ``pool.stats`` are for metrics only."""

    __slots__ = ()
    on_stream: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class RequestReceived(_Event):
    """A request message was taken off the bus (in-flight starts)."""

    type = "request.received"
    on_stream = False
    transport: str


@dataclass(frozen=True, slots=True)
class RequestCompleted(_Event):
    """One request envelope answered (successfully or with an error reply)."""

    type = "request.completed"
    on_stream = False  # published by the pipeline, confirmed, before the request is settled
    request_id: str
    upstream: str
    method: str
    status_code: int | None
    duration: float  # seconds, end to end inside the gateway
    error_code: str | None = None
    attempts: int = 0
    upstream_duration: float | None = None
    transport: str | None = None
    tenant: str | None = None
    endpoint: str | None = None
    dead_lettered: bool = False
    principal: str | None = None  # who called: the broker's user_id or the signing key's principal
    trace_id: str | None = None


@dataclass(frozen=True, slots=True)
class RequestParked(_Event):
    """A failed try of a request that may be sent again was parked on a tier, to come back after
    ``delay`` seconds, instead of being answered (gateway.parking)."""

    type = "request.parked"
    on_stream = False  # published by the pipeline, confirmed, before the original is settled
    request_id: str
    upstream: str
    method: str
    tier: int  # 0-based
    delay: int  # seconds
    park_count: int  # parks so far, this one included
    attempts: int  # HTTP attempts so far, over every try
    reason: str  # the last try's error code, or status_<n>
    remaining: float  # seconds of deadline left when it parked
    transport: str | None = None
    principal: str | None = None


@dataclass(frozen=True, slots=True)
class BreakerStateChanged(_Event):
    type = "breaker.state_changed"
    upstream: str
    endpoint: str
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class BreakerForced(_Event):
    """An operator forced a breaker open or closed, reset it, or its forcing expired (``state``
    "automatic" then, ``expired`` saying which)."""

    type = "breaker.forced"
    upstream: str
    endpoint: str
    state: str  # "open", "closed" or "automatic"
    principal: str  # who forced or reset it; for an expiry, who had forced it
    until: float | None  # epoch seconds when the forcing expires; None once automatic
    expired: bool = False


@dataclass(frozen=True, slots=True)
class ControlChannelChanged(_Event):
    """This replica's control channel on ``transport`` became usable, or the broker refused it (or is
    unreachable): the replica then serves requests as before, but answers no ``cmn`` command there
    and keeps trying to open it. Metrics and the log only: the stream may be down for the same reason."""

    type = "control.channel"
    on_stream = False
    transport: str
    available: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class EndpointEjected(_Event):
    type = "endpoint.ejected"
    upstream: str
    endpoint: str
    duration: float
    reason: str


@dataclass(frozen=True, slots=True)
class EndpointRestored(_Event):
    type = "endpoint.restored"
    upstream: str
    endpoint: str


@dataclass(frozen=True, slots=True)
class RetryAttempted(_Event):
    type = "upstream.retry"
    upstream: str
    endpoint: str
    attempt: int
    reason: str


@dataclass(frozen=True, slots=True)
class RetryBudgetExhausted(_Event):
    type = "upstream.retry_budget_exhausted"
    upstream: str


@dataclass(frozen=True, slots=True)
class HedgeSent(_Event):
    """A hedge: another attempt of a slow request started on ``endpoint``, the first still running."""

    type = "upstream.hedge"
    upstream: str
    endpoint: str
    attempt: int  # the attempt number it is, hedges and retries included


@dataclass(frozen=True, slots=True)
class HedgeWon(_Event):
    """A hedge's answer was the one returned (the attempts it raced were cancelled)."""

    type = "upstream.hedge_won"
    upstream: str
    endpoint: str


@dataclass(frozen=True, slots=True)
class RateLimited(_Event):
    type = "ratelimit.rejected"
    upstream: str
    tenant: str | None
    scope: str  # "upstream" | "tenant"


@dataclass(frozen=True, slots=True)
class RateLimitBackendFallback(_Event):
    type = "ratelimit.backend_fallback"
    reason: str


@dataclass(frozen=True, slots=True)
class CertificateRenewed(_Event):
    type = "certificate.renewed"
    name: str
    source: str
    version: str
    not_after: float  # epoch seconds


@dataclass(frozen=True, slots=True)
class CertificateRenewalFailed(_Event):
    type = "certificate.renewal_failed"
    name: str
    source: str
    reason: str


@dataclass(frozen=True, slots=True)
class MessageDeadLettered(_Event):
    type = "message.dead_lettered"
    transport: str
    error_code: str
    reason: str


@dataclass(frozen=True, slots=True)
class ReplyUnroutable(_Event):
    """The broker returned a reply: no queue took it (its requester went away)."""

    type = "reply.unroutable"
    transport: str
    destination: str
    correlation_id: str | None


SecurityKind = str
"""unauthenticated, forbidden, reply_to_refused, invalid_path, invalid_header, idempotency_mismatch,
tls_verification_failed: the ``kind`` label of ``cmn_security_events_total``."""

SECURITY_KINDS: tuple[SecurityKind, ...] = (
    "unauthenticated",
    "forbidden",
    "reply_to_refused",
    "invalid_path",
    "invalid_header",
    "idempotency_mismatch",
    "tls_verification_failed",
)


@dataclass(frozen=True, slots=True)
class SecurityRefused(_Event):
    """A refusal for security's sake; ``security.<kind>`` on cmn.telemetry. Never carries a secret:
    ``reason`` is the gateway's own message, ``principal`` a name the broker or a signature proved."""

    kind: SecurityKind
    reason: str
    principal: str | None = None
    upstream: str | None = None
    transport: str | None = None
    request_id: str | None = None

    @property
    def type(self) -> str:
        return f"security.{self.kind}"


@dataclass(frozen=True, slots=True)
class PoolStats(_Event):
    """Periodic snapshot of one endpoint's pool (emitted by the pool, consumed by metrics)."""

    type = "pool.stats"
    on_stream = False
    upstream: str
    endpoint: str
    in_use: int
    idle: int
    waiting: int


@dataclass(frozen=True, slots=True)
class EndpointHealthChanged(_Event):
    """An active health check flipped an endpoint between healthy and unhealthy."""

    type = "endpoint.health_changed"
    upstream: str
    endpoint: str
    healthy: bool


@dataclass(frozen=True, slots=True)
class EndpointTakenOut(_Event):
    """The fleet's quorum said an endpoint is down and this replica took it out (gateway/control/shared_health.py):
    ``votes`` of the ``live`` replicas said so, ``quorum`` were needed."""

    type = "endpoint.taken_out"
    upstream: str
    endpoint: str
    votes: int
    quorum: int
    live: int


@dataclass(frozen=True, slots=True)
class SharedHealthChanged(_Event):
    """Shared health's view of the fleet changed: ``degraded`` (the control channel is silent, so only
    local decisions count) or the number of live peers."""

    type = "shared_health.changed"
    degraded: bool
    live_peers: int
    reason: str


Event = (
    RequestReceived
    | RequestCompleted
    | RequestParked
    | BreakerStateChanged
    | BreakerForced
    | ControlChannelChanged
    | EndpointEjected
    | EndpointRestored
    | RetryAttempted
    | RetryBudgetExhausted
    | HedgeSent
    | HedgeWon
    | RateLimited
    | RateLimitBackendFallback
    | CertificateRenewed
    | CertificateRenewalFailed
    | MessageDeadLettered
    | ReplyUnroutable
    | SecurityRefused
    | PoolStats
    | EndpointHealthChanged
    | EndpointTakenOut
    | SharedHealthChanged
)


class Observer(Protocol):
    def on_event(self, event: Event) -> None:
        """Called synchronously on the event loop; must not block or raise."""
        ...


@dataclass(slots=True)
class ObserverGroup:
    """Fans one event out to several observers; a failing observer never breaks the caller.

    A failure is logged once per (observer, event type), with its traceback but not its message (which
    may quote what a caller sent), and counted every time in ``failures``.
    """

    observers: list[Observer] = field(default_factory=list)
    failures: Counter[tuple[str, str]] = field(default_factory=Counter)  # (observer class, event type) -> count

    def on_event(self, event: Event) -> None:
        for observer in self.observers:
            try:
                observer.on_event(event)
            except Exception as exc:  # noqa: BLE001  # an observer bug must never fail a request
                self._failed(observer, event, exc)

    def _failed(self, observer: Observer, event: Event, exc: Exception) -> None:
        key = (type(observer).__name__, event.type)
        self.failures[key] += 1
        if self.failures[key] == 1:
            where = "".join(traceback.format_tb(exc.__traceback__)).rstrip()
            log.error(
                "observer %s failed on %s with %s; later failures of this pair are only counted\n%s",
                key[0],
                key[1],
                type(exc).__name__,
                where,
            )

    @property
    def failed(self) -> int:
        """Every observer failure so far."""
        return sum(self.failures.values())

    def failures_by_observer(self) -> dict[str, float]:
        """Failures summed per observer class (what ``cmn_observer_failures`` shows)."""
        totals: dict[str, float] = {}
        for (observer, _), count in self.failures.items():
            totals[observer] = totals.get(observer, 0.0) + count
        return totals

    def add(self, observer: Observer) -> None:
        self.observers.append(observer)

    def __repr__(self) -> str:
        return f"<ObserverGroup [{len(self.observers)} observers, {self.failed} failures]>"


class NullObserver:
    __slots__ = ()

    def on_event(self, event: Event) -> None:
        return None


class RecordingObserver:
    """Keeps every event; for tests and for ``cmn demo``."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def on_event(self, event: Event) -> None:
        self.events.append(event)

    def of_type(self, kind: type[Event]) -> list[Event]:
        return [e for e in self.events if isinstance(e, kind)]
