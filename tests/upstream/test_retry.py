"""Retry decisions, full-jitter backoff, Retry-After and the retry budget (fake clock)."""

from __future__ import annotations

import random

import pytest

from gateway.testing import FakeClock
from gateway.upstream.outcome import AttemptTimeoutError, ConnectFailedError, ConnectionDroppedError
from gateway.upstream.retry import BudgetPolicy, RetryBudget, RetryPolicy, replayable
from gateway.upstream.window import TimeWindow

POLICY = RetryPolicy(attempts=3, backoff_base=0.1, backoff_max=1.0)


@pytest.mark.parametrize(
    ("replay", "status", "error", "reason"),
    [
        (False, None, ConnectFailedError("refused"), "connect_error"),
        (False, None, AttemptTimeoutError("connect", sent=False), "connect_error"),
        (False, None, AttemptTimeoutError("read", sent=True), None),
        (True, None, AttemptTimeoutError("read", sent=True), "timeout"),
        (False, None, ConnectionDroppedError("reset"), None),
        (True, None, ConnectionDroppedError("reset"), "reset"),
        (True, 503, None, "status_503"),
        (True, 500, None, None),
        (False, 503, None, None),
        (True, 200, None, None),
    ],
)
def test_what_is_retried(replay: bool, status: int | None, error: Exception | None, reason: str | None) -> None:
    assert POLICY.reason(replayable=replay, status=status, error=error) == reason


def test_idempotent_methods_or_a_key_make_a_request_replayable() -> None:
    assert replayable("GET", None)
    assert replayable("PUT", None)
    assert not replayable("POST", None)
    assert replayable("POST", "key-1")


def test_backoff_is_full_jitter_under_a_growing_capped_ceiling() -> None:
    rng = random.Random(7)
    for retry, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (9, 1.0)]:
        samples = [POLICY.backoff(retry, rng) for _ in range(400)]
        assert all(0.0 <= s <= ceiling for s in samples)
        assert max(samples) > ceiling * 0.9  # it spreads over the whole range
        assert min(samples) < ceiling * 0.1


def test_retry_after_seconds_and_http_date_are_capped() -> None:
    now = 1_800_000_000.0
    assert POLICY.retry_after("2", now) == 2.0
    assert POLICY.retry_after("600", now) == 5.0
    assert POLICY.retry_after("Fri, 15 Jan 2027 08:00:03 GMT", now) == 3.0  # now is 08:00:00
    assert POLICY.retry_after("Sat, 01 Jan 2000 00:00:00 GMT", now) == 0.0
    assert POLICY.retry_after("soon", now) is None
    assert RetryPolicy(respect_retry_after=False).retry_after("2", now) is None


def test_budget_allows_a_share_of_requests_plus_a_floor() -> None:
    clock = FakeClock()
    budget = RetryBudget(BudgetPolicy(ratio=0.2, min_per_second=0.5, window=10.0))  # floor: 5 per window
    for _ in range(50):
        budget.on_request(clock.monotonic())
    spent = sum(budget.try_spend(clock.monotonic()) for _ in range(100))
    assert spent == 15  # 5 + 0.2 * 50


def test_budget_recovers_as_the_window_slides() -> None:
    clock = FakeClock()
    budget = RetryBudget(BudgetPolicy(ratio=0.0, min_per_second=0.2, window=10.0))  # 2 per window
    assert budget.try_spend(clock.monotonic())
    assert budget.try_spend(clock.monotonic())
    assert not budget.try_spend(clock.monotonic())
    clock.advance(10.5)
    assert budget.try_spend(clock.monotonic())


def test_time_window_drops_whole_buckets_only_when_they_leave() -> None:
    w = TimeWindow(10.0, fields=1, buckets=10)
    w.add(0.0, 1)
    w.add(5.0, 1)
    assert w.totals(9.9) == (2,)
    assert w.totals(10.0) == (1,)
    assert w.totals(15.0) == (0,)
    w.add(100.0, 3)
    assert w.totals(100.0) == (3,)
