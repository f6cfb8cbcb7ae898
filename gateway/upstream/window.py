"""A time-bucketed sliding window of counters (resilience4j's time-based window, Finagle's budget window).

``add`` and ``totals`` cost O(1) amortised: buckets that time has left behind are cleared lazily.
"""

from __future__ import annotations


class TimeWindow:
    __slots__ = ("_bucket_width", "_buckets", "_current", "_epoch", "_totals", "fields")

    def __init__(self, seconds: float, fields: int, buckets: int = 10) -> None:
        self.fields = fields
        self._bucket_width = seconds / buckets
        self._buckets = [[0] * fields for _ in range(buckets)]
        self._totals = [0] * fields
        self._epoch: int | None = None  # index of the newest bucket, in bucket widths since 0

    def add(self, now: float, *counts: int) -> None:
        bucket = self._advance(now)
        for i, n in enumerate(counts):
            bucket[i] += n
            self._totals[i] += n

    def add_one(self, now: float, index: int, n: int = 1) -> None:
        """``add`` for one field only: O(1) however many fields the window has (a histogram's bins)."""
        self._advance(now)[index] += n
        self._totals[index] += n

    def total_so_far(self) -> int:
        """Every field summed as of the last add or totals call (stale buckets not yet dropped)."""
        return sum(self._totals)

    def add_and_total(self, now: float, *counts: int) -> tuple[int, ...]:
        self.add(now, *counts)
        return tuple(self._totals)

    def totals(self, now: float) -> tuple[int, ...]:
        self._advance(now)
        return tuple(self._totals)

    def clear(self) -> None:
        for bucket in self._buckets:
            bucket[:] = [0] * self.fields
        self._totals = [0] * self.fields

    def _advance(self, now: float) -> list[int]:
        epoch = int(now // self._bucket_width)
        size = len(self._buckets)
        if self._epoch is None:
            self._epoch = epoch
        elif epoch > self._epoch:
            for step in range(1, min(epoch - self._epoch, size) + 1):
                stale = self._buckets[(self._epoch + step) % size]
                for i, n in enumerate(stale):
                    self._totals[i] -= n
                stale[:] = [0] * self.fields
            self._epoch = epoch
        return self._buckets[self._epoch % size]

    def __repr__(self) -> str:
        return f"<TimeWindow {self._bucket_width * len(self._buckets):g}s totals={self._totals}>"
