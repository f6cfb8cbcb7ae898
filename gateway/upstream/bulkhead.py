"""Per-upstream bulkhead: at most ``max_concurrent`` requests in flight and ``max_queued`` waiting.

One slow upstream then cannot take every worker with it. Overflow fails at once (Envoy's
"limits fail fast and push back downstream"); a queued request waits no longer than its deadline.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType

from gateway.clock import Clock, Deadline
from gateway.errors import DeadlineExceededError, PoolExhaustedError
from gateway.upstream.slots import Slots
from gateway.upstream.snapshot import BulkheadSnapshot


class BulkheadFullError(PoolExhaustedError):
    """Too many requests in flight and queued for one upstream (wire code ``pool_exhausted``)."""


@dataclass(frozen=True, slots=True)
class BulkheadPolicy:
    max_concurrent: int
    max_queued: int = 0


class Bulkhead:
    def __init__(self, upstream: str, policy: BulkheadPolicy, *, clock: Clock) -> None:
        self.upstream = upstream
        self.policy = policy
        self._clock = clock
        self._slots = Slots(policy.max_concurrent)

    def enter(self, deadline: Deadline) -> _Entry:
        """``async with bulkhead.enter(deadline):`` around the whole request, retries included."""
        return _Entry(self, deadline)

    async def _acquire(self, deadline: Deadline) -> None:
        if self._slots.try_take():
            return
        if self._slots.waiting >= self.policy.max_queued:
            raise BulkheadFullError(
                f"Bulkhead full: upstream {self.upstream}, {self._slots.in_use} in flight, {self._slots.waiting} queued"
            )
        if not await self._slots.wait(self._clock, max(deadline.remaining(self._clock), 0.0)):
            raise DeadlineExceededError(f"deadline passed while queued in the bulkhead of {self.upstream}")

    def _release(self) -> None:
        self._slots.give()

    @property
    def in_flight(self) -> int:
        return self._slots.in_use

    @property
    def queued(self) -> int:
        return self._slots.waiting

    def snapshot(self) -> BulkheadSnapshot:
        return BulkheadSnapshot(self.policy.max_concurrent, self.policy.max_queued, self.in_flight, self.queued)

    def __repr__(self) -> str:
        return (
            f"<Bulkhead {self.upstream} {self._slots.in_use}/{self.policy.max_concurrent} in flight,"
            f" {self._slots.waiting}/{self.policy.max_queued} queued>"
        )


class _Entry:
    __slots__ = ("_bulkhead", "_deadline")

    def __init__(self, bulkhead: Bulkhead, deadline: Deadline) -> None:
        self._bulkhead = bulkhead
        self._deadline = deadline

    async def __aenter__(self) -> None:
        await self._bulkhead._acquire(self._deadline)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._bulkhead._release()
