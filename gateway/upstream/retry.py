"""When to retry, how long to back off, and how many retries an upstream can afford.

A retry must name what it retries on (stamina's rule): connect errors, timeouts, or one of the
configured statuses. Only idempotent methods, or requests carrying an idempotency key, are
retried after the upstream may have seen them; a connect that failed never reached the upstream,
so that one is retried for any method.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

from gateway.access.policy import METHOD_OVERRIDES
from gateway.upstream.outcome import (
    AttemptTimeoutError,
    ConnectFailedError,
    ConnectionDroppedError,
    never_sent,
)
from gateway.upstream.window import TimeWindow

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 3  # total, the first one included
    backoff_base: float = 0.025
    backoff_max: float = 1.0
    on_statuses: frozenset[int] = field(default_factory=lambda: frozenset({502, 503, 504}))
    on_connect_error: bool = True
    on_timeout: bool = True
    respect_retry_after: bool = True
    max_retry_after: float = 5.0

    def reason(self, *, replayable: bool, status: int | None, error: Exception | None) -> str | None:
        """Why this outcome may be retried ("connect_error", "timeout", "reset", "status_503"), or None."""
        if isinstance(error, ConnectFailedError) or (isinstance(error, AttemptTimeoutError) and never_sent(error)):
            return "connect_error" if self.on_connect_error else None
        if not replayable:
            return None
        if isinstance(error, AttemptTimeoutError):
            return "timeout" if self.on_timeout else None
        if isinstance(error, ConnectionDroppedError):
            return "reset" if self.on_connect_error else None
        if error is None and status in self.on_statuses:
            return f"status_{status}"
        return None

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Full jitter: uniform over [0, min(max, base * 2**(retry-1))]; ``retry`` counts from 1."""
        ceiling = min(self.backoff_max, self.backoff_base * (2 ** (retry - 1)))
        return rng.uniform(0.0, ceiling)

    def retry_after(self, value: str | None, now_epoch: float) -> float | None:
        """Seconds the upstream asked us to wait, capped at ``max_retry_after``; None when unusable."""
        if not self.respect_retry_after or not value:
            return None
        seconds = parse_retry_after(value.strip(), now_epoch)
        return None if seconds is None else min(max(seconds, 0.0), self.max_retry_after)


def replayable(method: str, idempotency_key: str | None, headers: Mapping[str, str] | None = None) -> bool:
    """Whether the request is safe to send more than once (retry, hedge, park). ``headers`` are the
    request's: a method override some frameworks obey (``X-HTTP-Method-Override: POST`` on a GET)
    must be idempotent too, else the upstream would run a POST twice that the gateway took for a GET."""
    if idempotency_key is not None:
        return True
    overrides = (v.strip().upper() for k, v in (headers or {}).items() if k.lower() in METHOD_OVERRIDES)
    return method in IDEMPOTENT_METHODS and all(m in IDEMPOTENT_METHODS for m in overrides)


def parse_retry_after(value: str, now_epoch: float) -> float | None:
    if value.isdigit():
        return float(value)
    try:
        return parsedate_to_datetime(value).timestamp() - now_epoch
    except (TypeError, ValueError, IndexError):
        return None


@dataclass(frozen=True, slots=True)
class BudgetPolicy:
    ratio: float = 0.2  # retries allowed per request seen in the window
    min_per_second: float = 10.0  # so a quiet upstream can still retry at all
    window: float = 10.0


class RetryBudget:
    """Finagle/linkerd-style budget: retries in the window stay under ``min + ratio * requests``.

    Envoy's budget counts concurrent retries instead; counting over a window keeps a storm from
    building up across many short requests, and it is a pure function of the clock, so it is tested
    with a fake one.
    """

    __slots__ = ("_window", "policy")

    def __init__(self, policy: BudgetPolicy) -> None:
        self.policy = policy
        self._window = TimeWindow(policy.window, fields=2)  # (requests, retries)

    def on_request(self, now: float) -> None:
        self._window.add(now, 1, 0)

    def try_spend(self, now: float) -> bool:
        requests, retries = self._window.totals(now)
        allowed = self.policy.min_per_second * self.policy.window + self.policy.ratio * requests
        if retries + 1 > allowed:
            return False
        self._window.add(now, 0, 1)
        return True

    def __repr__(self) -> str:
        return f"<RetryBudget ratio={self.policy.ratio} window={self.policy.window}s {self._window!r}>"
