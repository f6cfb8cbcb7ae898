"""A counting semaphore that knows how many wait and times out on the injected clock.

Shared by the pool (per-endpoint connection slots) and the bulkhead (per-upstream concurrency).
A released slot is handed straight to the oldest waiter, so a waiter is never overtaken by a
newcomer that calls ``try_take`` between the release and the waiter waking up.
"""

from __future__ import annotations

import asyncio
from collections import deque

from gateway.clock import Clock


class Slots:
    __slots__ = ("_waiters", "in_use", "size", "waiting")

    def __init__(self, size: int) -> None:
        self.size = size
        self.in_use = 0
        self.waiting = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    def try_take(self) -> bool:
        if self.in_use < self.size and self.waiting == 0:
            self.in_use += 1
            return True
        return False

    async def wait(self, clock: Clock, seconds: float) -> bool:
        """Queue for a slot; True once one was handed over, False after ``seconds``."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self.waiting += 1
        timer = asyncio.ensure_future(clock.sleep(seconds))
        try:
            await asyncio.wait((waiter, timer), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            self._abandon(waiter)
            raise
        finally:
            timer.cancel()
        if waiter.done():
            return True
        self._abandon(waiter)
        return False

    def give(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                # The slot moves to the waiter without ever being free: in_use stays the same.
                self.waiting -= 1
                waiter.set_result(None)
                return
        self.in_use -= 1

    def _abandon(self, waiter: asyncio.Future[None]) -> None:
        if waiter.done():
            # A slot was handed to us as we gave up: pass it on instead of leaking it.
            self.give()
            return
        waiter.cancel()
        self.waiting -= 1

    def __repr__(self) -> str:
        return f"<Slots {self.in_use}/{self.size} in use, {self.waiting} waiting>"
