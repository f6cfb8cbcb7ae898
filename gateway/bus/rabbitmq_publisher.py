"""Confirmed publishing straight through aiormq, riding out reconnects.

aio-pika's ``Exchange.publish`` builds a Message, checks the channel and wraps the call in a
timeout per message; going to the underlying aiormq channel with ``wait=False`` (no per-message
wait for the socket buffer to drain) keeps only what matters: the broker's confirm.
"""

from __future__ import annotations

import asyncio
import logging

import aiormq
from aio_pika.abc import AbstractRobustChannel
from pamqp.commands import Basic

from gateway.bus.rabbitmq_topology import underlay
from gateway.clock import Clock, SystemClock
from gateway.errors import GatewayError

log = logging.getLogger(__name__)

# What a publish meets when the connection or channel goes away under it.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.ChannelClosed,
    aiormq.exceptions.DeliveryError,  # a nack: the broker could not take it; try again
    ConnectionError,
    asyncio.TimeoutError,
)


class BusUnavailableError(GatewayError):
    """The broker did not confirm a publish, even after reconnecting (the request stays unsettled)."""

    code = "internal"


class ConfirmedPublisher:
    """Publishes on one robust channel with publisher confirms; returns once the broker confirmed.

    When the channel dies (connection loss) the publish waits for aio-pika to reopen it and
    tries again, ``attempts`` times in all: a message may reach the broker twice (at least once).
    """

    def __init__(
        self,
        channel: AbstractRobustChannel,
        *,
        attempts: int = 3,
        recover_timeout: float = 30.0,
        clock: Clock | None = None,
    ) -> None:
        self._channel = channel
        self._clock = clock or SystemClock()
        self._attempts = attempts
        self._recover_timeout = recover_timeout
        self._underlay: aiormq.Channel | None = None
        self.published = 0

    def __repr__(self) -> str:
        state = "open" if self._underlay is not None and not self._underlay.is_closed else "recovering"
        return f"<ConfirmedPublisher {state} published={self.published}>"

    async def publish(self, exchange: str, routing_key: str, body: bytes, props: Basic.Properties) -> None:
        failure: BaseException | None = None
        for attempt in range(1, self._attempts + 1):
            try:
                channel = await self._current()
                await self._publish_once(channel, exchange, routing_key, body, props)
            except CONNECTION_ERRORS as exc:
                failure = exc
                log.warning("publish to %r/%r failed (attempt %d): %r", exchange, routing_key, attempt, exc)
                continue
            self.published += 1
            return
        raise BusUnavailableError(
            f"broker did not confirm publish to {exchange!r}/{routing_key!r}"
        ) from failure

    async def _publish_once(
        self, channel: aiormq.Channel, exchange: str, routing_key: str, body: bytes, props: Basic.Properties
    ) -> None:
        try:
            await channel.basic_publish(
                body, exchange=exchange, routing_key=routing_key, properties=props, wait=False
            )
        except asyncio.CancelledError:
            # aiormq rejects pending confirms with the close reason, which may be a CancelledError
            # although nobody cancelled this task: that is a lost channel, not a cancellation.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            raise aiormq.exceptions.ChannelInvalidStateError("channel closed awaiting confirm") from None

    async def _current(self) -> aiormq.Channel:
        current = self._underlay
        if current is not None and not current.is_closed:
            return current
        async with asyncio.timeout(self._recover_timeout):
            while True:
                await self._channel.ready()
                current = await underlay(self._channel)
                if not current.is_closed:
                    break
                # Closed but not yet noticed by aio-pika: its reopen starts on the next loop turns.
                await self._clock.sleep(0.05)
        self._underlay = current
        return current
