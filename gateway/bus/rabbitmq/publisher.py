"""Confirmed publishing straight through aiormq, riding out reconnects.

aio-pika's ``Exchange.publish`` builds a Message, checks the channel and wraps the call in a
timeout per message; going to the underlying aiormq channel with ``wait=False`` (no per-message
wait for the socket buffer to drain) keeps only what matters: the broker's confirm.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aiormq
from aio_pika.abc import AbstractRobustChannel
from pamqp.commands import Basic

from gateway.bus.base import PUBLISH_TIMEOUT
from gateway.bus.rabbitmq.aiormq_internals.confirms import ordered_confirms
from gateway.bus.rabbitmq.aiormq_internals.wire import MAX_SHORT_STR, LeanPublisher
from gateway.bus.rabbitmq.connection import BROKER_ERRORS, underlay
from gateway.clock import Clock
from gateway.errors import BusUnavailableError, MessageRejectedError

log = logging.getLogger(__name__)

RECOVERY_POLL = 0.05


def _always(channel: aiormq.Channel) -> bool:
    return True


class ConfirmedPublisher:
    """Publishes on one robust channel with publisher confirms; returns once the broker confirmed.

    When the channel dies (connection loss, a nack, a channel error) the publish waits for aio-pika
    to reopen it and tries again, for ``give_up_after`` seconds in all, then raises
    ``BusUnavailableError``: this is the RabbitMQ side's one publish retry loop, and nobody above
    retries it again. The bound holds from the call, the first try included: a broker that goes
    silent (frozen, a blocked connection, a black-holed route) closes nothing and confirms nothing,
    and only the publish's own deadline ends that wait. A message may therefore reach the broker
    twice (at least once). ``usable`` lets the owner hold publishes back on a reopened channel until
    it has set up what publishing needs (the requester's reply consumer).
    """

    def __init__(
        self,
        channel: AbstractRobustChannel,
        *,
        give_up_after: float = PUBLISH_TIMEOUT,
        usable: Callable[[aiormq.Channel], bool] = _always,
        clock: Clock,
    ) -> None:
        self._channel = channel
        self._give_up_after = give_up_after
        self._usable = usable
        self._clock = clock
        self._underlay: aiormq.Channel | None = None
        self._lean = LeanPublisher()
        self._general_under_way = 0  # basic_publish calls in progress: the lean path waits for them
        self.published = 0
        self.retries = 0

    def __repr__(self) -> str:
        state = "open" if self._underlay is not None and not self._underlay.is_closed else "recovering"
        return f"<ConfirmedPublisher [{state}] published={self.published} retries={self.retries} {self._lean!r}>"

    @property
    def lean(self) -> LeanPublisher:
        """How many publishes took the lean path, and how many aiormq's (for tests and profiling)."""
        return self._lean

    async def publish(
        self, exchange: str, routing_key: str, body: bytes, props: Basic.Properties, *, mandatory: bool = False
    ) -> None:
        """Returns once confirmed. Raises MessageRejectedError when the broker refuses this message
        itself, BusUnavailableError when no confirm came within ``give_up_after`` seconds.

        ``mandatory``: a message no queue takes comes back to the channel's return callbacks (it
        needs a ``message_id`` to be matched); its publish still counts as confirmed."""
        if len(routing_key.encode()) > MAX_SHORT_STR or len(exchange.encode()) > MAX_SHORT_STR:
            raise MessageRejectedError(f"destination {routing_key[:40]!r}... is longer than AMQP's 255 bytes")
        # One deadline for the whole publish, reconnects included. The first try needs it too: it
        # once ran without one (a timer per publish costs ~3 us) on the grounds that heartbeats would
        # close a dead connection, but a silent broker held it for the heartbeat timeout (60 s+).
        deadline = asyncio.get_running_loop().time() + self._give_up_after
        current = self._underlay
        if current is not None and not current.is_closed and self._usable(current):
            scope = asyncio.timeout_at(deadline)
            try:
                async with scope:
                    await self._publish_once(current, exchange, routing_key, body, props, mandatory)
            except BROKER_ERRORS as exc:
                if scope.expired():
                    raise self._gave_up(exchange, routing_key) from exc
                self._refuse_if_final(exc, exchange, routing_key, body)
                self.retries += 1
                log.warning("publish to %r/%r failed, retrying: %r", exchange, routing_key, exc)
            else:
                self.published += 1
                return
        await self._publish_retrying(exchange, routing_key, body, props, mandatory, deadline)

    def _gave_up(self, exchange: str, routing_key: str) -> BusUnavailableError:
        detail = f"broker did not confirm publish to {exchange!r}/{routing_key!r} in {self._give_up_after} s"
        return BusUnavailableError(detail)

    def _refuse_if_final(self, exc: BaseException, exchange: str, routing_key: str, body: bytes) -> None:
        if _refused_for_good(exc, exchange, body):
            detail = f"RabbitMQ refused the message to {exchange!r}/{routing_key!r}: {exc}"
            raise MessageRejectedError(detail) from exc

    async def _publish_retrying(
        self, exchange: str, routing_key: str, body: bytes, props: Basic.Properties, mandatory: bool, deadline: float
    ) -> None:
        failure: BaseException | None = None
        try:
            async with asyncio.timeout_at(deadline):
                while True:
                    channel = await self._current()
                    try:
                        await self._publish_once(channel, exchange, routing_key, body, props, mandatory)
                    except BROKER_ERRORS as exc:
                        failure = exc
                        self._refuse_if_final(exc, exchange, routing_key, body)
                        self.retries += 1
                        log.warning("publish to %r/%r failed, retrying: %r", exchange, routing_key, exc)
                        await self._clock.sleep(RECOVERY_POLL)
                        continue
                    self.published += 1
                    return
        except TimeoutError as exc:
            raise self._gave_up(exchange, routing_key) from failure or exc

    async def _current(self) -> aiormq.Channel:
        current = self._underlay
        if current is not None and not current.is_closed and self._usable(current):
            return current
        while True:
            await self._channel.ready()
            current = await underlay(self._channel)
            if not current.is_closed and self._usable(current):
                ordered_confirms(current)
                self._underlay = current
                return current
            # Closed but not yet noticed by aio-pika, or reopened but not yet set up by our owner.
            await self._clock.sleep(RECOVERY_POLL)

    async def _publish_once(
        self,
        channel: aiormq.Channel,
        exchange: str,
        routing_key: str,
        body: bytes,
        props: Basic.Properties,
        mandatory: bool,
    ) -> None:
        confirmation = None
        if self._general_under_way == 0:
            confirmation = self._lean.try_publish(channel, exchange, routing_key, body, props, mandatory=mandatory)
        if confirmation is not None:
            await _confirmed(confirmation)
            return
        self._general_under_way += 1
        try:
            await _confirmed(
                channel.basic_publish(
                    body, exchange=exchange, routing_key=routing_key, properties=props, mandatory=mandatory, wait=False
                )
            )
        finally:
            self._general_under_way -= 1


def _refused_for_good(exc: BaseException, exchange: str, body: bytes) -> bool:
    """Did the broker close the channel over this very message? It closes the channel over one bad
    message and every publish pending on it sees the same error, so the error text has to name it:
    its size ("message size N is larger than configured max size M"), or its exchange."""
    text = str(exc)
    if isinstance(exc, aiormq.exceptions.ChannelPreconditionFailed):
        return f"message size {len(body)} is larger" in text
    if isinstance(exc, aiormq.exceptions.ChannelAccessRefused):
        return f"exchange '{exchange or 'amq.default'}'" in text
    return False


async def _confirmed(confirmation: Awaitable[object]) -> None:
    try:
        await confirmation
    except asyncio.CancelledError:
        # aiormq rejects pending confirms with the close reason, which may be a CancelledError
        # although nobody cancelled this task: that is a lost channel, not a cancellation.
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        raise aiormq.exceptions.ChannelInvalidStateError("channel closed while awaiting the confirm") from None
