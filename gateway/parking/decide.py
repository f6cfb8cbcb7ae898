"""Whether a failed request parks, and on which tier: a pure function of what the last try came to.

A request parks instead of failing when all of these hold:

- its last try ended in a retryable outcome: a connect error, a timeout, an upstream that was
  unreachable or reset (``upstream_unavailable``), ``circuit_open`` (every endpoint's breaker open
  or ejected), an answer 502/503/504, or an answer whose ``Retry-After`` asks for longer than the
  in-process retries may wait; or ``deadline_exceeded`` while the request's own deadline has
  time left, which is the try budget running out (``park.try_budget``: one try of a request that
  may park holds a worker slot that long at most, then parks instead of waiting on);
- it is safe to send again: an idempotent method or an ``idempotency_key`` (``retry.replayable``;
  unlike an in-process retry, even a connect error does not make a POST safe to park: the copy
  travels the bus and may be answered by another replica while this one still holds the original);
- a tier is left: park count n goes to tier n (0-based), so ``delays: [1, 5, 30]`` parks 3 times;
- the deadline has more left than that tier's delay, so the copy comes back with time to try.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gateway.upstream.retry import parse_retry_after, replayable

# deadline_exceeded with time left on the request's own deadline (which ``decide`` requires) can only
# be the try budget's: the try was cut short to free its worker slot, exactly what parking is for.
RETRYABLE_CODES = frozenset({"timeout", "upstream_unavailable", "circuit_open", "deadline_exceeded"})
RETRYABLE_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True, slots=True)
class ParkPolicy:
    """One upstream's ``park:`` block: the tiers' delays in seconds, in order, the try budget, and
    how long the in-process retries may wait on a ``Retry-After`` (``retry.max_retry_after``)."""

    delays: tuple[int, ...]
    max_retry_after: float = 5.0
    try_budget: float | None = None  # seconds one try may hold a worker slot before it parks


@dataclass(frozen=True, slots=True)
class LastTry:
    """What the request's last try came to: an error code, or an answer's status and Retry-After."""

    error_code: str | None = None
    status: int | None = None
    retry_after: float | None = None  # seconds the answer asked for, when it carried Retry-After


@dataclass(frozen=True, slots=True)
class Park:
    tier: int  # 0-based
    delay: int  # seconds


def may_park(
    policy: ParkPolicy | None,
    *,
    method: str,
    idempotency_key: str | None,
    parks: int,
    headers: Mapping[str, str] | None = None,
) -> bool:
    """Whether a failure of this try could park at all (a tier left, safe to send again, a method
    override in ``headers`` included): only such a try is held to the try budget."""
    return policy is not None and 0 <= parks < len(policy.delays) and replayable(method, idempotency_key, headers)


def retryable(last: LastTry, policy: ParkPolicy) -> bool:
    if last.error_code is not None:
        return last.error_code in RETRYABLE_CODES
    if last.status in RETRYABLE_STATUSES:
        return True
    return last.retry_after is not None and last.retry_after > policy.max_retry_after


def decide(
    last: LastTry,
    policy: ParkPolicy | None,
    *,
    method: str,
    idempotency_key: str | None,
    remaining: float,
    parks: int,
    headers: Mapping[str, str] | None = None,
) -> Park | None:
    """The tier this request parks on, or None: it is answered as it stands."""
    if policy is None or not may_park(
        policy, method=method, idempotency_key=idempotency_key, parks=parks, headers=headers
    ):
        return None
    if not retryable(last, policy):
        return None
    delay = policy.delays[parks]
    if remaining <= delay:
        return None
    return Park(parks, delay)


def retry_after_seconds(headers: Mapping[str, str] | None, now_epoch: float) -> float | None:
    """An answer's Retry-After (delta seconds or an HTTP date) in seconds, None when absent or unusable."""
    if not headers:
        return None
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    return None if not value else parse_retry_after(value.strip(), now_epoch)
