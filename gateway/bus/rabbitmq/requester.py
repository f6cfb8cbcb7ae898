"""The client side over RabbitMQ: send request envelopes, receive replies, tail the telemetry stream.

Replies come back on direct reply-to (``amq.rabbitmq.reply-to``: no queue at all, the broker hands
the reply to this channel) or on an exclusive auto-delete queue of our own. Direct reply-to only
works on the channel that consumes it, so one channel both consumes replies and publishes requests.
Both kinds of address die with the connection: after a reconnect ``_on_reopen`` makes a new one,
and requests sent from then on carry the new address (replies to the old one are lost; the client's
own timeout covers them).
"""

from __future__ import annotations

import logging
import ssl
import uuid
from collections.abc import Mapping

import aiormq
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from aiormq.abc import DeliveredMessage

from gateway.bus.base import PUBLISH_TIMEOUT, REQUESTS, TELEMETRY, ReplyCallback, ReplyMessage
from gateway.bus.rabbitmq.aiormq_internals.coalesce import CoalesceStats
from gateway.bus.rabbitmq.aiormq_internals.text import tolerate_non_utf8
from gateway.bus.rabbitmq.connection import connect, underlay
from gateway.bus.rabbitmq.properties import DEFAULT_CONTENT_TYPE, properties, text_headers
from gateway.bus.rabbitmq.publisher import ConfirmedPublisher
from gateway.bus.rabbitmq.recovery import Resubscriber
from gateway.bus.rabbitmq.stream import RabbitTelemetryStream
from gateway.bus.rabbitmq.topology import DIRECT_REPLY_TO, TRANSPORT_NAME, Topology, declare_requests
from gateway.clock import Clock

log = logging.getLogger(__name__)


class RabbitRequester:
    """``Requester`` over RabbitMQ (see gateway.bus.base.Requester)."""

    name = TRANSPORT_NAME

    def __init__(
        self,
        url: str,
        *,
        use_direct_reply_to: bool = True,
        ssl_context: ssl.SSLContext | None = None,
        queue: str = REQUESTS,
        reconnect_interval: float = 1.0,
        telemetry: str = TELEMETRY,
        publish_timeout: float = PUBLISH_TIMEOUT,
        clock: Clock,
    ) -> None:
        self._url = url
        self._publish_timeout = publish_timeout
        self._clock = clock
        self._direct = use_direct_reply_to
        self._ssl_context = ssl_context
        self._topology = Topology(requests=queue, telemetry=telemetry)
        self._reconnect_interval = reconnect_interval
        self._consumer_tag = f"cmn-client.{uuid.uuid4().hex[:12]}"
        self._on_reply: ReplyCallback | None = None
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._publisher: ConfirmedPublisher | None = None
        self._listening_on: aiormq.Channel | None = None
        self._resubscriber = Resubscriber(
            self._listen, what="reply consumer", interval=reconnect_interval, clock=self._clock
        )
        self._streams: set[RabbitTelemetryStream] = set()
        self.reply_to: str | None = None
        self.write_stats = CoalesceStats()  # its connections write coalesced too (see connection.py)

    def __repr__(self) -> str:
        mode = "direct reply-to" if self._direct else "exclusive queue"
        return f"<RabbitRequester {self._topology.requests} [{mode}] reply_to={self.reply_to}>"

    async def start(self, on_reply: ReplyCallback) -> None:
        if self._on_reply is not None:
            raise RuntimeError(f"{self!r} already started")
        self._on_reply = on_reply
        tolerate_non_utf8()  # anyone may publish to a reply address: one bad header key must not break us
        self._connection = await self._connect()
        self._channel = await self._connection.channel(publisher_confirms=True)
        self._publisher = ConfirmedPublisher(
            self._channel,
            give_up_after=self._publish_timeout,
            # A request may only go out once replies to its reply_to can be received.
            usable=lambda channel: channel is self._listening_on,
            clock=self._clock,
        )
        await self._listen()
        self._channel.reopen_callbacks.add(self._resubscriber.trigger)

    async def _connect(self) -> AbstractRobustConnection:
        return await connect(
            self._url,
            ssl_context=self._ssl_context,
            reconnect_interval=self._reconnect_interval,
            name="cmn client",
            write_stats=self.write_stats,
        )

    async def _listen(self) -> None:
        if self._channel is None:
            return
        channel = await underlay(self._channel)
        if self._consumer_tag in channel.consumers:
            return
        await declare_requests(channel.connection, self._topology)
        if self._direct:
            queue = DIRECT_REPLY_TO
        else:
            declared = await channel.queue_declare("", exclusive=True, auto_delete=True)
            queue = declared.queue or ""
        # Replies are consumed without acks: each is handed to the callback at once, nothing to redo.
        await channel.basic_consume(queue, self._deliver, consumer_tag=self._consumer_tag, no_ack=True)
        self.reply_to = queue
        self._listening_on = channel

    @property
    def reply_address(self) -> str | None:
        """What requests carry as reply_to now (what a signature binds)."""
        return self.reply_to

    @property
    def destination(self) -> str:
        return self._topology.requests

    async def _deliver(self, message: DeliveredMessage) -> None:
        if self._on_reply is None:
            return
        props = message.header.properties
        self._on_reply(
            ReplyMessage(
                body=message.body,
                content_type=props.content_type or DEFAULT_CONTENT_TYPE,
                correlation_id=props.correlation_id or None,
                headers=text_headers(props.headers),
            )
        )

    async def send(self, body: bytes, *, content_type: str, correlation_id: str, headers: Mapping[str, str]) -> None:
        if self._publisher is None or self.reply_to is None:
            raise RuntimeError(f"{self!r} is not started")
        props = properties(
            content_type=content_type, correlation_id=correlation_id, headers=headers, reply_to=self.reply_to
        )
        await self._publisher.publish("", self._topology.requests, body, props)

    def telemetry(self, *, from_beginning: bool = False) -> RabbitTelemetryStream:
        stream = RabbitTelemetryStream(
            self._connect,
            self._topology,
            from_beginning=from_beginning,
            on_close=self._streams.discard,
            reconnect_interval=self._reconnect_interval,
            clock=self._clock,
        )
        self._streams.add(stream)
        return stream

    async def aclose(self) -> None:
        for stream in tuple(self._streams):
            await stream.aclose()
        self._on_reply = None
        await self._resubscriber.aclose()
        connection, self._connection = self._connection, None
        self._channel = None
        self._publisher = None
        if connection is not None:
            await connection.close()

    async def __aenter__(self) -> RabbitRequester:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
