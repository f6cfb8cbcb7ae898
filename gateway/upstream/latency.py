"""An upstream's recent attempt latency, as a quantile: what ``hedge: {after_ms: p95}`` waits for.

A log-bucketed histogram over a sliding time window (the retry budget's ``TimeWindow``, one field
per bin): memory is fixed (bins times time buckets) whatever the traffic, ``record`` is O(1) and
``quantile`` one pass over the bins. Bins grow by 2^(1/8) (about 9 %) from 1 ms to about 2 minutes;
a quantile is answered with its bin's upper edge, so it errs at most one bin late, never early.
Pure: the caller passes the time.
"""

from __future__ import annotations

import math

from gateway.upstream.window import TimeWindow

_FLOOR = 0.001  # seconds: the first bin holds everything up to 1 ms
_PER_DOUBLING = 8
_BINS = _PER_DOUBLING * 17 + 1  # up to 1 ms * 2^17 ≈ 131 s; the last bin also takes anything longer


def _upper_edge(index: int) -> float:
    return float(_FLOOR * 2 ** (index / _PER_DOUBLING))


def _bin(seconds: float) -> int:
    if seconds <= _FLOOR:
        return 0
    return min(_BINS - 1, math.ceil(_PER_DOUBLING * math.log2(seconds / _FLOOR) - 1e-9))


class LatencyTracker:
    """Latencies seen over the last ``window`` seconds; a quantile once ``min_samples`` are in."""

    __slots__ = ("_window", "min_samples", "window")

    def __init__(self, window: float = 60.0, *, min_samples: int = 20, buckets: int = 6) -> None:
        self.window = window
        self.min_samples = min_samples
        self._window = TimeWindow(window, fields=_BINS, buckets=buckets)

    def record(self, now: float, seconds: float) -> None:
        self._window.add_one(now, _bin(seconds))

    def quantile(self, now: float, q: float) -> float | None:
        """The ``q`` quantile (0 < q ≤ 1) of the window's latencies, in seconds; None while too few."""
        counts = self._window.totals(now)
        total = sum(counts)
        if total < self.min_samples:
            return None
        rank = math.ceil(q * total)
        seen = 0
        for index, count in enumerate(counts):
            seen += count
            if seen >= rank:
                return _upper_edge(index)
        return _upper_edge(_BINS - 1)  # unreachable: the bins add up to total

    def __repr__(self) -> str:
        return f"<LatencyTracker last {self.window:g}s, {self.samples} samples (min {self.min_samples})>"

    @property
    def samples(self) -> int:
        """Samples in the window as of the last record or quantile (no clock read: for reprs)."""
        return self._window.total_so_far()
