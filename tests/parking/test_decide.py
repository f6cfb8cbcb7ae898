"""The parking decision: which failures park, on which tier, and when a request is answered instead."""

from __future__ import annotations

import pytest

from gateway.parking.decide import LastTry, Park, ParkPolicy, decide, may_park, retry_after_seconds

TIERS = ParkPolicy((1, 5, 30), max_retry_after=5.0)


def park(
    last: LastTry, *, method: str = "GET", key: str | None = None, remaining: float = 60.0, parks: int = 0
) -> Park | None:
    return decide(last, TIERS, method=method, idempotency_key=key, remaining=remaining, parks=parks)


@pytest.mark.parametrize("code", ["timeout", "upstream_unavailable", "circuit_open"])
def test_retryable_errors_park_on_the_first_tier(code: str) -> None:
    assert park(LastTry(error_code=code)) == Park(0, 1)


def test_a_try_cut_by_its_budget_parks_while_the_request_has_time() -> None:
    assert park(LastTry(error_code="deadline_exceeded"), remaining=30.0) == Park(0, 1)
    assert park(LastTry(error_code="deadline_exceeded"), remaining=0.0) is None  # the request's own deadline


def test_only_a_try_that_could_park_is_held_to_the_budget() -> None:
    assert may_park(TIERS, method="GET", idempotency_key=None, parks=0)
    assert not may_park(TIERS, method="POST", idempotency_key=None, parks=0)
    assert not may_park(TIERS, method="GET", idempotency_key=None, parks=3)
    assert not may_park(None, method="GET", idempotency_key=None, parks=0)


@pytest.mark.parametrize("status", [502, 503, 504])
def test_retryable_statuses_park(status: int) -> None:
    assert park(LastTry(status=status)) == Park(0, 1)


@pytest.mark.parametrize(
    "last",
    [
        LastTry(status=200),
        LastTry(status=500),
        LastTry(status=404),
        LastTry(error_code="invalid_request"),
        LastTry(error_code="rate_limited"),
        LastTry(error_code="pool_exhausted"),
        LastTry(error_code="forbidden"),
    ],
)
def test_other_outcomes_are_answered(last: LastTry) -> None:
    assert park(last) is None


def test_a_retry_after_beyond_the_in_process_budget_parks() -> None:
    assert park(LastTry(status=429, retry_after=20.0)) == Park(0, 1)
    assert park(LastTry(status=429, retry_after=5.0)) is None  # within what the in-process retries wait
    assert park(LastTry(status=429)) is None


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_a_non_idempotent_request_never_parks(method: str) -> None:
    assert park(LastTry(error_code="upstream_unavailable"), method=method) is None
    assert park(LastTry(status=503), method=method) is None


def test_an_idempotency_key_makes_a_post_safe_to_park() -> None:
    assert park(LastTry(status=503), method="POST", key="k1") == Park(0, 1)


def test_the_park_count_picks_the_tier_until_none_is_left() -> None:
    last = LastTry(error_code="timeout")
    assert [park(last, parks=n) for n in range(4)] == [Park(0, 1), Park(1, 5), Park(2, 30), None]


def test_the_deadline_must_outlast_the_tier() -> None:
    last = LastTry(error_code="circuit_open")
    assert park(last, remaining=5.0, parks=1) is None
    assert park(last, remaining=5.01, parks=1) == Park(1, 5)
    assert park(last, remaining=0.5) is None


def test_no_policy_no_parking() -> None:
    last = LastTry(error_code="timeout")
    assert decide(last, None, method="GET", idempotency_key=None, remaining=60.0, parks=0) is None


def test_a_forged_negative_count_parks_nowhere() -> None:
    assert park(LastTry(error_code="timeout"), parks=-1) is None


def test_retry_after_reads_seconds_and_dates_in_any_case() -> None:
    assert retry_after_seconds({"Retry-After": "12"}, 0.0) == 12.0
    assert retry_after_seconds({"retry-after": "Thu, 01 Jan 1970 00:01:00 GMT"}, 30.0) == 30.0
    assert retry_after_seconds({"retry-after": "soon"}, 0.0) is None
    assert retry_after_seconds(None, 0.0) is None
