"""The recent-latency quantile behind ``hedge: {after_ms: p95}`` (pure: the time is passed in)."""

from __future__ import annotations

import random

import pytest

from gateway.upstream.latency import LatencyTracker


def test_no_quantile_until_enough_samples() -> None:
    tracker = LatencyTracker(60.0, min_samples=5)
    for _ in range(4):
        tracker.record(0.0, 0.010)
    assert tracker.quantile(0.0, 0.95) is None
    tracker.record(0.0, 0.010)
    assert tracker.quantile(0.0, 0.95) is not None


@pytest.mark.parametrize("q", [0.5, 0.9, 0.95, 0.99])
def test_quantile_is_never_early_and_at_most_one_bin_late(q: float) -> None:
    rng = random.Random(3)
    samples = [rng.lognormvariate(-4.0, 1.0) for _ in range(5000)]  # median ~18 ms, long tail
    tracker = LatencyTracker(60.0, min_samples=1)
    for s in samples:
        tracker.record(10.0, s)
    exact = sorted(samples)[int(q * len(samples)) - 1]
    answer = tracker.quantile(10.0, q)
    assert answer is not None
    assert exact <= answer <= exact * 2 ** (1 / 8) * 1.0001


def test_p95_of_a_two_speed_upstream_is_the_slow_mode() -> None:
    tracker = LatencyTracker(60.0, min_samples=1)
    for i in range(100):
        tracker.record(0.0, 1.0 if i % 10 == 0 else 0.005)  # 10 % answer after 1 s
    p95 = tracker.quantile(0.0, 0.95)
    p50 = tracker.quantile(0.0, 0.5)
    assert p95 is not None and 1.0 <= p95 < 1.1
    assert p50 is not None and 0.005 <= p50 < 0.0055


def test_old_samples_leave_the_window() -> None:
    tracker = LatencyTracker(60.0, min_samples=10, buckets=6)
    for _ in range(20):
        tracker.record(0.0, 0.500)
    for _ in range(20):
        tracker.record(50.0, 0.020)
    p95_before = tracker.quantile(50.0, 0.95)
    assert p95_before is not None and p95_before >= 0.5
    p95_after = tracker.quantile(65.0, 0.95)  # the 0 s bucket has slid out; the 50 s one remains
    assert p95_after is not None and p95_after < 0.025
    assert tracker.quantile(200.0, 0.95) is None  # everything left: too few samples again


def test_extremes_land_in_the_first_and_last_bins() -> None:
    tracker = LatencyTracker(60.0, min_samples=1)
    tracker.record(0.0, 0.0)
    assert tracker.quantile(0.0, 1.0) == pytest.approx(0.001)
    tracker.record(0.0, 10_000.0)
    top = tracker.quantile(0.0, 1.0)
    assert top is not None and 100 < top < 200
    assert "2 samples" in repr(tracker)
