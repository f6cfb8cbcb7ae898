"""The gateway's RabbitMQ transport: consume ``cmn.requests``, publish confirmed replies and telemetry.

One robust connection, two channels: one consumes (prefetch = the in-flight limit, manual ack),
one publishes with publisher confirms. Consuming and acking go through the underlying aiormq
channel: aio-pika would build an IncomingMessage and two more tasks per delivery, and wait for
the socket buffer on every ack. Publishing goes through ``ConfirmedPublisher`` (lean encoding,
aiormq_internals.wire) and the connection writes its frames coalesced (aiormq_internals.coalesce). aio-pika
still owns reconnecting; after it reopens the consuming channel (prefetch restored), a
``Resubscriber`` declares the topology again and consumes again, retrying until it works.

A delivery can only be acked on the channel that carried it. After a connection loss those
deliveries are gone from our side and the broker redelivers them, so ``settle`` logs and drops
them instead of raising: at least once holds.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import uuid
import weakref
from collections.abc import Mapping

import aiormq
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel, AbstractRobustConnection
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from gateway.bus.base import ERROR_HEADER, PUBLISH_TIMEOUT, REQUESTS, TELEMETRY, Delivery, Handler, OutboundMessage
from gateway.bus.rabbitmq.aiormq_internals.coalesce import CoalesceStats
from gateway.bus.rabbitmq.aiormq_internals.text import tolerate_non_utf8
from gateway.bus.rabbitmq.aiormq_internals.wire import try_ack
from gateway.bus.rabbitmq.connection import BROKER_ERRORS, connect, underlay
from gateway.bus.rabbitmq.properties import (
    DEFAULT_CONTENT_TYPE,
    dead_letter_properties,
    park_properties,
    properties,
    text_headers,
    timestamp_ms,
)
from gateway.bus.rabbitmq.publisher import ConfirmedPublisher
from gateway.bus.rabbitmq.recovery import Resubscriber
from gateway.bus.rabbitmq.topology import DIRECT_REPLY_TO, TRANSPORT_NAME, Topology, declare_topology
from gateway.clock import Clock
from gateway.events import Observer, ReplyUnroutable

log = logging.getLogger(__name__)


class RabbitTransport:
    """``Transport`` over RabbitMQ (see gateway.bus.base.Transport for the contract)."""

    name = TRANSPORT_NAME

    def __init__(
        self,
        url: str,
        *,
        max_in_flight: int = 256,
        queue: str = REQUESTS,
        instance: str = "cmn",
        ssl_context: ssl.SSLContext | None = None,
        reconnect_interval: float = 1.0,
        telemetry: str = TELEMETRY,
        publish_timeout: float = PUBLISH_TIMEOUT,
        observer: Observer | None = None,
        park_delays: tuple[int, ...] = (),
        unsettled_retry: float = 1.0,
        clock: Clock,
    ) -> None:
        self._url = url
        self._unsettled_retry = unsettled_retry
        self._observer = observer
        self._publish_timeout = publish_timeout
        self._clock = clock
        self._max_in_flight = max_in_flight
        self._topology = Topology(requests=queue, telemetry=telemetry, park_delays=park_delays)
        self._instance = instance
        self._ssl_context = ssl_context
        self._reconnect_interval = reconnect_interval
        self._consumer_tag = f"{instance}.{uuid.uuid4().hex[:12]}"
        self._handler: Handler | None = None
        self._connection: AbstractRobustConnection | None = None
        self._consume_channel: AbstractRobustChannel | None = None
        self._consuming_on: aiormq.Channel | None = None
        self._publisher: ConfirmedPublisher | None = None
        self._resubscriber = Resubscriber(
            self._subscribe, what=f"consumer on {queue}", interval=reconnect_interval, clock=self._clock
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._unsettled: set[int] = set()  # id() of the deliveries being handled and not yet settled
        # Deliveries handed back (requeued): a late settle must not ack a tag the broker no longer holds
        # for us (it would close the channel, and every delivery on it would come again).
        self._handed_back: weakref.WeakValueDictionary[int, DeliveredMessage] = weakref.WeakValueDictionary()
        self._accepting = False
        self.write_stats = CoalesceStats()
        self.subscriptions = 0  # 1 after start, one more after every recovery
        self.received = 0
        self.settled = 0
        self.dropped_settles = 0
        self.unroutable = 0  # replies the broker returned: no queue took them
        self._published = 0

    def __repr__(self) -> str:
        state = "ready" if self.ready else ("draining" if self._handler and not self._accepting else "idle")
        return (
            f"<RabbitTransport {self._topology.requests} [{state}] in_flight={len(self._tasks)}"
            f"/{self._max_in_flight} received={self.received} settled={self.settled}"
            f" subscriptions={self.subscriptions}>"
        )

    @property
    def ready(self) -> bool:
        channel = self._consuming_on
        return (
            self._accepting
            and channel is not None
            and not channel.is_closed
            and self._consumer_tag in channel.consumers
        )

    @property
    def publisher(self) -> ConfirmedPublisher | None:
        return self._publisher

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def start(self, handler: Handler) -> None:
        if self._handler is not None:
            raise RuntimeError(f"{self!r} already started")
        self._handler = handler
        self._accepting = True
        tolerate_non_utf8()  # else one message with a non-UTF-8 header key breaks every connection it reaches
        self._connection = await connect(
            self._url,
            ssl_context=self._ssl_context,
            reconnect_interval=self._reconnect_interval,
            name=f"{self._instance} gateway",
            write_stats=self.write_stats,
        )
        publish_channel = await self._connection.channel(publisher_confirms=True)
        publish_channel.return_callbacks.add(self._on_returned)
        self._publisher = ConfirmedPublisher(publish_channel, give_up_after=self._publish_timeout, clock=self._clock)
        consume_channel = await self._connection.channel(publisher_confirms=False)
        # Set through aio-pika so that it is set again on every reopened channel.
        await consume_channel.set_qos(prefetch_count=self._max_in_flight)
        self._consume_channel = consume_channel
        await self._subscribe()  # at start-up a failure is the caller's to see
        consume_channel.reopen_callbacks.add(self._resubscriber.trigger)

    async def _subscribe(self) -> None:
        if not self._accepting or self._consume_channel is None:
            return
        channel = await underlay(self._consume_channel)
        if self._consumer_tag in channel.consumers:
            return
        await declare_topology(channel.connection, self._topology)
        channel.on_consumer_cancel_callbacks.add(self._on_cancelled)
        await channel.basic_consume(self._topology.requests, self._on_message, consumer_tag=self._consumer_tag)
        self._consuming_on = channel
        self.subscriptions += 1
        log.info("consuming %s (prefetch %d)", self._topology.requests, self._max_in_flight)

    def _on_cancelled(self, frame: Basic.Cancel) -> None:
        # The broker dropped our consumer (the queue was deleted, say): declare and consume again.
        if frame.consumer_tag == self._consumer_tag and self._accepting:
            log.warning("broker cancelled the consumer on %s; subscribing again", self._topology.requests)
            self._resubscriber.trigger()

    async def _on_message(self, message: DeliveredMessage) -> None:
        if not self._accepting or self._handler is None:
            # Arrived between basic.cancel and cancel-ok while draining: hand it back now.
            await _requeue(message)
            return
        self.received += 1
        delivery = _delivery(message, self._topology.requests)
        task = asyncio.get_running_loop().create_task(self._run(self._handler, delivery))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, handler: Handler, delivery: Delivery) -> None:
        message: DeliveredMessage = delivery.token
        self._unsettled.add(id(message))
        try:
            await handler(delivery)
        except Exception:
            # The worker's guard (gateway.worker.guarded) parks a crash in the dead letters; a handler
            # that raises anyway leaves the delivery unsettled, to come again like any other (below).
            log.exception("handler raised on a delivery (correlation_id=%s); left unsettled", delivery.correlation_id)
        finally:
            left = id(message) in self._unsettled
            self._unsettled.discard(id(message))
        if left:
            await self._hand_back(message, delivery)

    async def _hand_back(self, message: DeliveredMessage, delivery: Delivery) -> None:
        """Left unsettled (its reply or telemetry event was not confirmed in time): hand it back to the
        broker, as a closing channel would. RabbitMQ redelivers only when the channel that carried it
        closes, and a publish that gave up within its bound (a broker silent for a while, then back)
        leaves that channel open: the request would sit unacked for the channel's life, never answered
        again, holding a prefetch slot. The pause keeps a broker in trouble from getting it back at once."""
        log.warning("delivery left unsettled (correlation_id=%s); requeued", delivery.correlation_id)
        if self._accepting:
            await self._clock.sleep(self._unsettled_retry)
        self._handed_back[id(message)] = message
        await _requeue(message)

    async def publish(self, message: OutboundMessage) -> None:
        # mandatory: a reply no queue takes (its requester went away) comes back to _on_returned, to
        # be logged and counted; its publish still counts as confirmed, so the request is settled.
        # Not for direct reply-to: RabbitMQ returns every mandatory message to its pseudo-queue, even
        # the ones it delivers (measured here), so a vanished direct reply-to consumer goes unnoticed.
        mandatory = not message.destination.startswith(DIRECT_REPLY_TO)
        self._published += 1
        props = properties(
            content_type=message.content_type,
            correlation_id=message.correlation_id,
            headers=message.headers,
            message_id=f"{self._consumer_tag}.{self._published}" if mandatory else None,
        )
        await self._require_publisher().publish("", message.destination, message.body, props, mandatory=mandatory)

    def _on_returned(self, _channel: object, message: AbstractIncomingMessage) -> None:
        self.unroutable += 1
        if self._observer is None:
            log.warning(
                "reply unroutable, dropped: no queue %r; correlation_id=%r", message.routing_key, message.correlation_id
            )
            return
        # The observers log it and count it (cmn_replies_unroutable).
        self._observer.on_event(ReplyUnroutable(TRANSPORT_NAME, message.routing_key or "", message.correlation_id))

    async def publish_telemetry(self, event_type: str, body: bytes, headers: Mapping[str, str]) -> None:
        props = properties(content_type=DEFAULT_CONTENT_TYPE, correlation_id=None, headers=headers)
        await self._require_publisher().publish(self._topology.telemetry, event_type, body, props)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        message = delivery.token
        if isinstance(message, DeliveredMessage):
            props = dead_letter_properties(message.header.properties, ERROR_HEADER, reason)
        else:
            props = properties(
                content_type=delivery.content_type,
                correlation_id=delivery.correlation_id,
                headers={**delivery.headers, ERROR_HEADER: reason},
                reply_to=delivery.reply_to,
            )
        await self._require_publisher().publish("", self._topology.dead_letters, delivery.body, props)

    async def park(self, delivery: Delivery, destination: str, headers: Mapping[str, str]) -> None:
        message = delivery.token
        original = message.header.properties if isinstance(message, DeliveredMessage) else None
        props = park_properties(original, delivery, headers)
        await self._require_publisher().publish("", destination, delivery.body, props)

    async def settle(self, delivery: Delivery) -> None:
        message: DeliveredMessage = delivery.token
        self._unsettled.discard(id(message))  # settled, or its channel is gone: either way not handed back
        channel = message.channel
        tag = message.delivery_tag
        if channel.is_closed or tag is None:
            self._drop_settle(delivery, "its channel is closed")
            return
        if self._handed_back.get(id(message)) is message:
            self._drop_settle(delivery, "it was handed back unsettled")
            return
        try:
            if not (isinstance(channel, aiormq.Channel) and try_ack(channel, tag)):
                await channel.basic_ack(tag, wait=False)
        except BROKER_ERRORS as exc:
            self._drop_settle(delivery, repr(exc))
            return
        self.settled += 1

    def _drop_settle(self, delivery: Delivery, why: str) -> None:
        self.dropped_settles += 1
        log.info(
            "cannot ack delivery (correlation_id=%s): %s; the broker redelivers it",
            delivery.correlation_id,
            why,
        )

    async def drain(self) -> None:
        self._accepting = False
        await self._cancel_consumer()
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def _cancel_consumer(self) -> None:
        channel, self._consuming_on = self._consuming_on, None
        if channel is None or channel.is_closed or self._consumer_tag not in channel.consumers:
            return
        try:
            await channel.basic_cancel(self._consumer_tag)
        except BROKER_ERRORS as exc:
            log.info("cancelling the consumer failed (%r); the channel is going away anyway", exc)

    async def aclose(self) -> None:
        self._accepting = False
        await self._resubscriber.aclose()
        for task in tuple(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        connection, self._connection = self._connection, None
        self._consuming_on = None
        if connection is not None:
            await connection.close()

    async def __aenter__(self) -> RabbitTransport:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _require_publisher(self) -> ConfirmedPublisher:
        if self._publisher is None:
            raise RuntimeError(f"{self!r} is not started")
        return self._publisher


def _delivery(message: DeliveredMessage, queue: str) -> Delivery:
    props = message.header.properties
    return Delivery(
        body=message.body,
        content_type=props.content_type or DEFAULT_CONTENT_TYPE,
        reply_to=props.reply_to or None,
        correlation_id=props.correlation_id or None,
        headers=text_headers(props.headers),
        transport=TRANSPORT_NAME,
        timestamp_ms=timestamp_ms(props.timestamp),
        redelivered=bool(message.redelivered),
        user_id=props.user_id or None,  # the broker refuses a user_id other than the connection's user
        source=queue,
        token=message,
    )


async def _requeue(message: DeliveredMessage) -> None:
    tag = message.delivery_tag
    if tag is None or message.channel.is_closed:
        return
    try:
        await message.channel.basic_reject(tag, requeue=True, wait=False)
    except BROKER_ERRORS as exc:
        log.debug("requeueing a late delivery failed: %r", exc)
