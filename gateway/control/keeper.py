"""Keeping a replica's control channel open without ever holding up the requests it serves.

A broker may refuse ``cmn.control`` (the gateway's user lacks permission on the exchange or topic)
or be unreachable when the channel is first opened. Neither is a reason to stop serving requests:
the replica keeps consuming ``cmn.requests`` and says, loudly, that it answers no ``cmn status``,
``cmn breaker`` or ``cmn dlq`` command on that transport (``ControlChannelChanged``: a warning log
line and ``cmn_control_channel_up`` at 0), then tries again with capped exponential backoff until
the broker lets it in. Once open, the channel's own reconnection takes over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from gateway.clock import Clock
from gateway.errors import BusError
from gateway.events import ControlChannelChanged, Observer

FIRST_RETRY = 1.0
MAX_RETRY = 30.0


class ChannelKeeper:
    def __init__(
        self,
        open_channel: Callable[[], Awaitable[None]],
        *,
        transport: str,
        clock: Clock,
        observer: Observer,
        first_retry: float = FIRST_RETRY,
        max_retry: float = MAX_RETRY,
    ) -> None:
        self._open = open_channel
        self._transport = transport
        self._clock = clock
        self._observer = observer
        self._first_retry = first_retry
        self._max_retry = max_retry
        self._retrying: asyncio.Task[None] | None = None
        self.available = False
        self.attempts = 0

    def __repr__(self) -> str:
        state = "open" if self.available else "retrying" if self._retrying is not None else "closed"
        return f"<ChannelKeeper {self._transport} [{state}] attempts={self.attempts}>"

    async def start(self) -> None:
        """Open the channel now if the broker lets us; otherwise report it and keep trying in the background."""
        reason = await self._try_open()
        if reason is None:
            self._observer.on_event(ControlChannelChanged(self._transport, available=True))
            return
        self._observer.on_event(ControlChannelChanged(self._transport, available=False, reason=reason))
        self._retrying = asyncio.create_task(self._retry(), name=f"control-channel-{self._transport}")

    async def _try_open(self) -> str | None:
        """None once open, else why not (the broker's words; a URL never carries its password here)."""
        self.attempts += 1
        try:
            await self._open()
        except BusError as exc:
            return exc.message
        self.available = True
        return None

    async def _retry(self) -> None:
        delay = self._first_retry
        while True:
            await self._clock.sleep(delay)
            if await self._try_open() is None:
                self._observer.on_event(ControlChannelChanged(self._transport, available=True))
                self._retrying = None
                return
            delay = min(delay * 2, self._max_retry)

    async def aclose(self) -> None:
        task, self._retrying = self._retrying, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
