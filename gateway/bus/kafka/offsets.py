"""Which offset a Kafka consumer may commit, when handlers finish out of order. Pure, synchronous.

Kafka keeps one committed offset per partition: "everything below this is done". Handlers run
concurrently and finish in any order, so the committable offset is the lowest offset still in
flight (or one past the highest settled offset when nothing is in flight). Committing anything
higher would skip a request that has not been answered yet.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class PartitionOffsets:
    """Offsets of one partition: begun, settled, committed."""

    __slots__ = ("_committed", "_heap", "_highest_begun", "_highest_settled", "_pending")

    def __init__(self) -> None:
        self._pending: set[int] = set()
        self._heap: list[int] = []  # may hold settled offsets; dropped lazily in _lowest_pending
        self._highest_begun: int | None = None
        self._highest_settled: int | None = None
        self._committed: int | None = None

    def begin(self, offset: int) -> None:
        """A record was handed to a handler."""
        if offset in self._pending:
            return
        self._pending.add(offset)
        heapq.heappush(self._heap, offset)
        if self._highest_begun is None or offset > self._highest_begun:
            self._highest_begun = offset

    def settle(self, offset: int) -> bool:
        """The record's work is confirmed. Returns False for an offset not in flight (a repeat,
        or one begun before a rebalance dropped this partition's state): nothing to do then."""
        if offset not in self._pending:
            return False
        self._pending.discard(offset)
        if self._highest_settled is None or offset > self._highest_settled:
            self._highest_settled = offset
        if len(self._heap) > 2 * len(self._pending) + 256:
            # Settled offsets leave the heap only from its top; behind one stuck record they
            # would pile up for as long as it stays unsettled. Rebuild: O(n), amortised O(1).
            self._heap = list(self._pending)
            heapq.heapify(self._heap)
        return True

    def committable(self) -> int | None:
        """The offset to commit now ("next record to read"), or None when it would not move forward."""
        if self._highest_settled is None:
            return None
        lowest = self._lowest_pending()
        after_settled = self._highest_settled + 1
        candidate = after_settled if lowest is None else min(lowest, after_settled)
        if self._committed is not None and candidate <= self._committed:
            return None
        return candidate

    def mark_committed(self, offset: int) -> None:
        if self._committed is None or offset > self._committed:
            self._committed = offset

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def is_pending(self, offset: int) -> bool:
        return offset in self._pending

    @property
    def remembered(self) -> int:
        """Offsets held in memory (in flight, plus settled ones not yet cleaned up)."""
        return len(self._heap)

    @property
    def committed(self) -> int | None:
        return self._committed

    @property
    def next_offset(self) -> int | None:
        """One past the highest offset handed out (the consumer's position as far as we know)."""
        return None if self._highest_begun is None else self._highest_begun + 1

    def _lowest_pending(self) -> int | None:
        heap = self._heap
        while heap and heap[0] not in self._pending:
            heapq.heappop(heap)
        return heap[0] if heap else None

    def __repr__(self) -> str:
        return (
            f"<PartitionOffsets {self.in_flight} in flight, lowest={self._lowest_pending()} "
            f"settled<={self._highest_settled} committed={self._committed}>"
        )


class OffsetBook(Generic[K]):
    """``PartitionOffsets`` for every partition a consumer holds, keyed by partition."""

    __slots__ = ("_partitions",)

    def __init__(self) -> None:
        self._partitions: dict[K, PartitionOffsets] = {}

    def begin(self, partition: K, offset: int) -> None:
        held = self._partitions.get(partition)
        if held is None:
            held = self._partitions[partition] = PartitionOffsets()
        held.begin(offset)

    def settle(self, partition: K, offset: int) -> bool:
        offsets = self._partitions.get(partition)
        return offsets is not None and offsets.settle(offset)

    def committable(self) -> dict[K, int]:
        """Every partition whose commit point moved forward, with its new offset."""
        due = ((p, o.committable()) for p, o in self._partitions.items())
        return {p: offset for p, offset in due if offset is not None}

    def mark_committed(self, offsets: dict[K, int]) -> None:
        for partition, offset in offsets.items():
            held = self._partitions.get(partition)
            if held is not None:
                held.mark_committed(offset)

    def forget(self, partitions: Iterator[K] | list[K] | set[K] | frozenset[K]) -> None:
        """Drop state for partitions this consumer no longer holds (after a rebalance)."""
        for partition in partitions:
            self._partitions.pop(partition, None)

    def get(self, partition: K) -> PartitionOffsets | None:
        return self._partitions.get(partition)

    def is_pending(self, partition: K, offset: int) -> bool:
        held = self._partitions.get(partition)
        return held is not None and held.is_pending(offset)

    def in_flight(self, partition: K) -> int:
        held = self._partitions.get(partition)
        return 0 if held is None else held.in_flight

    def __len__(self) -> int:
        return len(self._partitions)

    def __repr__(self) -> str:
        pending = sum(o.in_flight for o in self._partitions.values())
        return f"<OffsetBook {len(self._partitions)} partitions, {pending} in flight>"
