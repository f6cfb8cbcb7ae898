"""Tail the ``cmn.telemetry`` stream queue.

A stream consumer needs a prefetch (the broker sends credit-sized batches), manual acks (an ack is
credit, not removal: the stream keeps every event until retention drops it) and an
``x-stream-offset`` to start from. After a reconnect the stream resumes right after the last
event handed out, and events buffered from the dead channel are not handed out twice.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable

from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from aiormq.abc import DeliveredMessage

from gateway.bus.rabbitmq.connection import BROKER_ERRORS, underlay
from gateway.bus.rabbitmq.recovery import Resubscriber
from gateway.bus.rabbitmq.topology import Topology, declare_telemetry
from gateway.clock import Clock

log = logging.getLogger(__name__)

OFFSET_HEADER = "x-stream-offset"


class RabbitTelemetryStream:
    """``TelemetryStream``: an async iterator over raw telemetry event bodies.

    It subscribes on ``start()`` or on the first ``__anext__``; with ``from_beginning=False`` only
    events published after that are seen, so call ``start()`` first when that matters.
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[AbstractRobustConnection]],
        topology: Topology,
        *,
        from_beginning: bool = False,
        prefetch: int = 256,
        on_close: Callable[[RabbitTelemetryStream], None] | None = None,
        reconnect_interval: float = 1.0,
        clock: Clock,
    ) -> None:
        self._connect = connect
        self._topology = topology
        self._from_beginning = from_beginning
        self._prefetch = prefetch
        self._on_close = on_close
        self._consumer_tag = f"cmn-telemetry.{uuid.uuid4().hex[:12]}"
        self._buffer: asyncio.Queue[DeliveredMessage | None] = asyncio.Queue()
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._next_offset: int | None = None
        self._closed = False
        self._resubscriber = Resubscriber(
            self._subscribe,
            what=f"telemetry consumer on {topology.telemetry}",
            interval=reconnect_interval,
            clock=clock,
        )
        self._uncredited = 0
        self.delivered = 0

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("open" if self._connection else "not started")
        return f"<RabbitTelemetryStream {self._topology.telemetry} [{state}] next_offset={self._next_offset}>"

    async def start(self) -> None:
        if self._connection is not None or self._closed:
            return
        self._connection = await self._connect()
        channel = await self._connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=self._prefetch)
        self._channel = channel
        await self._subscribe()
        channel.reopen_callbacks.add(self._resubscriber.trigger)

    async def _subscribe(self) -> None:
        if self._channel is None or self._closed:
            return
        channel = await underlay(self._channel)
        if self._consumer_tag in channel.consumers:
            return
        await declare_telemetry(channel.connection, self._topology)
        offset: int | str = "first" if self._from_beginning else "next"
        if self._next_offset is not None:
            offset = self._next_offset
        await channel.basic_consume(
            self._topology.telemetry,
            self._on_event,
            consumer_tag=self._consumer_tag,
            arguments={OFFSET_HEADER: offset},
        )

    async def _on_event(self, message: DeliveredMessage) -> None:
        self._buffer.put_nowait(message)

    def __aiter__(self) -> RabbitTelemetryStream:
        return self

    async def __anext__(self) -> bytes:
        await self.start()
        while True:
            message = await self._buffer.get()
            if message is None:
                self._buffer.put_nowait(None)  # stay exhausted for every later call
                raise StopAsyncIteration
            await self._credit(message)
            offset = _offset(message)
            if offset is not None and self._next_offset is not None and offset < self._next_offset:
                continue  # buffered from a channel that died; the resubscription sent it again
            if offset is not None:
                self._next_offset = offset + 1
            self.delivered += 1
            return message.body

    async def _credit(self, message: DeliveredMessage) -> None:
        """Acks on a stream only grant credit, and deliveries come in order: one ack with
        ``multiple`` per quarter of the prefetch (or when we run dry) is as good as one each."""
        self._uncredited += 1
        if self._uncredited >= max(self._prefetch // 4, 1) or self._buffer.empty():
            self._uncredited = 0
            await _credit(message)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._buffer.put_nowait(None)
        await self._resubscriber.aclose()
        connection, self._connection = self._connection, None
        self._channel = None
        if connection is not None:
            await connection.close()
        if self._on_close is not None:
            self._on_close(self)


def _offset(message: DeliveredMessage) -> int | None:
    value = (message.header.properties.headers or {}).get(OFFSET_HEADER)
    return value if isinstance(value, int) else None


async def _credit(message: DeliveredMessage) -> None:
    tag = message.delivery_tag
    if tag is None or message.channel.is_closed:
        return
    try:
        await message.channel.basic_ack(tag, multiple=True, wait=False)
    except BROKER_ERRORS as exc:
        log.debug("acking a stream event failed: %r", exc)
