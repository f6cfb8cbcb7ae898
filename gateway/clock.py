"""Time, injected. Nothing else in the gateway calls time.monotonic(), time.time() or asyncio.sleep()."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back; for durations and deadlines."""
        ...

    def time(self) -> float:
        """Wall-clock seconds since the epoch; for comparing with timestamps from other hosts."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    __slots__ = ()

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def __repr__(self) -> str:
        return "<SystemClock>"


@dataclass(frozen=True, slots=True)
class Deadline:
    """An absolute point on the monotonic clock by which work must be done."""

    at: float

    @classmethod
    def after(cls, clock: Clock, seconds: float) -> Deadline:
        return cls(clock.monotonic() + seconds)

    @classmethod
    def from_epoch_ms(cls, clock: Clock, epoch_ms: float) -> Deadline:
        """Translate a wall-clock instant (e.g. from another host) onto the monotonic clock."""
        return cls(clock.monotonic() + (epoch_ms / 1000.0 - clock.time()))

    def remaining(self, clock: Clock) -> float:
        return self.at - clock.monotonic()

    def expired(self, clock: Clock) -> bool:
        return self.remaining(clock) <= 0.0

    def earliest(self, other: Deadline | None) -> Deadline:
        return self if other is None or self.at <= other.at else other
