"""The control channel over RabbitMQ: topic exchange ``cmn.control``, one exclusive queue per replica.

Each replica binds a queue of its own to the exchange with ``#``, so every command reaches every
replica. The queue is exclusive and auto-delete (it dies with the replica's connection) and is
named by us, not the server: a robust connection re-declares its queues after a reconnect, and
RabbitMQ refuses a client that declares a server-style ``amq.gen-*`` name. It is bounded (a few
commands, 1 MiB at most; the oldest dropped first), since anyone allowed to publish to the exchange
could fill it. Commands are consumed without acks: a command lost with a connection is the
caller's to repeat (answers are gathered within a window anyway).
"""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel, AbstractRobustConnection

from gateway.bus.base import CONTROL, PUBLISH_TIMEOUT, Delivery, Handler
from gateway.bus.rabbitmq.aiormq_internals.text import tolerate_non_utf8
from gateway.bus.rabbitmq.connection import BROKER_ERRORS, connect
from gateway.bus.rabbitmq.properties import DEFAULT_CONTENT_TYPE, properties, text_headers
from gateway.bus.rabbitmq.publisher import ConfirmedPublisher
from gateway.bus.rabbitmq.topology import TRANSPORT_NAME
from gateway.clock import Clock
from gateway.errors import BusUnavailableError

JSON = "application/json"
QUEUE_LIMITS: Mapping[str, object] = {
    "x-max-length": 64,
    "x-max-length-bytes": 1 << 20,
    "x-overflow": "drop-head",
}


class RabbitControlChannel:
    """``ControlChannel`` over RabbitMQ (see gateway.bus.base.ControlChannel)."""

    name = TRANSPORT_NAME

    def __init__(
        self,
        url: str,
        *,
        clock: Clock,
        exchange: str = CONTROL,
        ssl_context: ssl.SSLContext | None = None,
        reconnect_interval: float = 1.0,
        publish_timeout: float = PUBLISH_TIMEOUT,
        label: str = "replica",
    ) -> None:
        self._url = url
        self._clock = clock
        self._exchange = exchange
        self._ssl_context = ssl_context
        self._reconnect_interval = reconnect_interval
        self._publish_timeout = publish_timeout
        self._queue_name = f"{exchange}.{label}.{uuid.uuid4().hex[:12]}"
        self._user = unquote(urlsplit(url).username or "guest")  # AMQP's default login when none is given
        self._connection: AbstractRobustConnection | None = None
        self._publisher: ConfirmedPublisher | None = None
        self._handler: Handler | None = None
        self.received = 0

    def __repr__(self) -> str:
        state = "receiving" if self._handler is not None else "publishing" if self._publisher else "closed"
        return f"<RabbitControlChannel {self._exchange} queue={self._queue_name} [{state}] received={self.received}>"

    async def _open(self) -> AbstractRobustChannel:
        if self._connection is None:
            self._connection = await connect(
                self._url,
                ssl_context=self._ssl_context,
                reconnect_interval=self._reconnect_interval,
                name=f"cmn control ({self._queue_name})",
            )
        channel: AbstractRobustChannel = await self._connection.channel(publisher_confirms=True)
        await channel.declare_exchange(self._exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        if self._publisher is None:
            self._publisher = ConfirmedPublisher(channel, give_up_after=self._publish_timeout, clock=self._clock)
        return channel

    async def start(self, handler: Handler) -> None:
        if self._handler is not None:
            raise RuntimeError(f"{self!r} already started")
        self._handler = handler
        tolerate_non_utf8()  # anyone who may publish to cmn.control must not close this connection
        try:
            channel = await self._open()
            queue = await channel.declare_queue(
                self._queue_name, exclusive=True, auto_delete=True, arguments=dict(QUEUE_LIMITS)
            )
            await queue.bind(self._exchange, routing_key="#")
            await queue.consume(self._deliver, no_ack=True)
        except BROKER_ERRORS as exc:
            # Refused (no permission on the exchange) or gone: nothing half-open is kept, so the
            # caller may simply try ``start`` again later (gateway.control.supervisor does).
            await self.aclose()
            raise BusUnavailableError(f"RabbitMQ refused the control channel {self._exchange}: {exc}") from exc

    async def _deliver(self, message: AbstractIncomingMessage) -> None:
        handler = self._handler
        if handler is None:
            return
        self.received += 1
        await handler(
            Delivery(
                body=message.body,
                content_type=message.content_type or DEFAULT_CONTENT_TYPE,
                reply_to=message.reply_to or None,
                correlation_id=message.correlation_id or None,
                headers=text_headers(message.headers),
                transport=TRANSPORT_NAME,
                redelivered=bool(message.redelivered),
                user_id=message.user_id or None,
                source=self._exchange,
            )
        )

    async def _publisher_ready(self) -> ConfirmedPublisher:
        if self._publisher is None:
            await self._open()
        assert self._publisher is not None
        return self._publisher

    async def publish(
        self, body: bytes, *, reply_to: str, correlation_id: str, headers: Mapping[str, str] | None = None
    ) -> None:
        publisher = await self._publisher_ready()
        props = properties(content_type=JSON, correlation_id=correlation_id, headers=headers or {}, reply_to=reply_to)
        props.delivery_mode = 1  # transient: a command is for the replicas alive now
        # The broker refuses a user_id other than the connection's, so replicas can trust it as the
        # caller's principal (gateway/access: the same identity requests carry).
        props.user_id = self._user
        await publisher.publish(self._exchange, "command", body, props)

    async def answer(self, reply_to: str, correlation_id: str | None, body: bytes) -> None:
        publisher = await self._publisher_ready()
        props = properties(content_type=JSON, correlation_id=correlation_id, headers={})
        await publisher.publish("", reply_to, body, props)

    async def aclose(self) -> None:
        self._handler = None
        self._publisher = None
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()
