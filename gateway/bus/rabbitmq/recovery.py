"""Re-subscribing after aio-pika reopened a channel, off its restore path and until it works.

aio-pika awaits reopen callbacks while it holds the channel's restore lock, and swallows their
errors. Doing real work there (declaring, consuming) can deadlock with a second close of the
same channel, and one failure would leave us deaf for good. Right after a broker restart the
first declarations do fail for a moment (a durable stream's "home node is down"). So a callback
only calls ``trigger()``, and this runs the action in a task of its own, retrying at an interval;
a newer trigger replaces a running attempt.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from gateway.bus.rabbitmq.connection import BROKER_ERRORS
from gateway.clock import Clock

log = logging.getLogger(__name__)


class Resubscriber:
    def __init__(self, action: Callable[[], Awaitable[None]], *, what: str, interval: float, clock: Clock) -> None:
        self._action = action
        self._what = what
        self._interval = interval
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self.attempts = 0

    def __repr__(self) -> str:
        state = "running" if self._task is not None and not self._task.done() else "idle"
        return f"<Resubscriber {self._what} [{state}] attempts={self.attempts}>"

    def trigger(self, *_: object) -> None:
        """Usable directly as an aio-pika reopen callback (which passes the channel)."""
        if self._task is not None:
            self._task.cancel()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.attempts += 1
            try:
                await self._action()
            except BROKER_ERRORS as exc:
                log.warning("%s failed after reconnect, retrying in %.1f s: %r", self._what, self._interval, exc)
                await self._clock.sleep(self._interval)
                continue
            except Exception:
                # A bug, not a broker hiccup: retrying would only repeat it. Say so loudly.
                log.exception("%s failed after reconnect and is not retried", self._what)
                return
            log.info("%s restored", self._what)
            return

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
