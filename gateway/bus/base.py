"""The broker-neutral message types and the Transport protocol. Broker libraries are imported only in bus/."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

REQUESTS = "cmn.requests"
TELEMETRY = "cmn.telemetry"
DEAD_LETTERS = "cmn.requests.dlq"
CONTROL = "cmn.control"  # commands to every replica (RabbitMQ topic exchange; Kafka topic)
ERROR_HEADER = "x-cmn-error"
# On a Kafka dead letter: the requests topic it came from. One cmn.requests.dlq topic serves every
# deployment on a broker (CMN_REQUESTS_QUEUE differs), so replay sends each letter back only to its own.
TOPIC_HEADER = "x-cmn-topic"
# How long a publish may take, reconnects included, before the transport gives up with
# BusUnavailableError: the bound of the Transport contract, written once.
PUBLISH_TIMEOUT = 30.0


@dataclass(slots=True, eq=False)
class Delivery:
    """One request message as it arrived, whichever broker carried it.

    ``token`` is the transport's own handle for settling the message (an aio-pika message,
    a Kafka (partition, offset) pair); nothing outside the transport looks inside it.
    """

    body: bytes
    content_type: str
    reply_to: str | None
    correlation_id: str | None
    headers: Mapping[str, str]
    transport: str
    timestamp_ms: int | None = None  # broker timestamp (Kafka record timestamp), epoch ms
    redelivered: bool = False
    user_id: str | None = None  # AMQP user_id, validated by the broker; never set from Kafka
    position: str | None = None  # where the broker keeps the message, stable across redeliveries (Kafka)
    source: str | None = None  # the queue or topic it was consumed from (for spans and logs)
    token: Any = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """A reply (or telemetry event) ready to publish."""

    destination: str  # reply queue / topic
    body: bytes
    content_type: str
    correlation_id: str | None
    headers: Mapping[str, str] = field(default_factory=dict)
    key: bytes | None = None  # Kafka record key


Handler = Callable[[Delivery], Awaitable[None]]


class Transport(Protocol):
    """What the worker and pipeline need from a broker.

    Every ``publish*`` and ``dead_letter`` returns only once the broker confirmed the message
    (publisher confirms on RabbitMQ, acks=all on Kafka), or raises ``BusUnavailableError`` within
    the transport's publish timeout (``PUBLISH_TIMEOUT`` unless configured), or
    ``MessageRejectedError`` at once when the broker refuses that message for good. Retrying
    inside that bound is the transport's job; what follows a failure is the caller's (the
    pipeline leaves the request unsettled). ``settle`` acknowledges the request
    (RabbitMQ ack; on Kafka the offset is committed once every earlier offset of the
    partition is settled too). Connection loss is handled inside: the transport reconnects
    and carries on; unsettled deliveries come again (at least once).
    """

    name: str

    async def start(self, handler: Handler) -> None:
        """Connect, declare topology, and start calling ``handler`` for each request,
        at most ``max_in_flight`` at a time (back-pressure: prefetch / pause-resume)."""
        ...

    async def publish(self, message: OutboundMessage) -> None: ...

    async def publish_telemetry(self, event_type: str, body: bytes, headers: Mapping[str, str]) -> None: ...

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Copy the original bytes and headers to the dead-letter queue/topic with ``x-cmn-error``."""
        ...

    async def park(self, delivery: Delivery, destination: str, headers: Mapping[str, str]) -> None:
        """Copy the original bytes, reply address, correlation id and headers to the park tier
        ``destination`` (``park_destination``), with ``headers`` set over the original ones; it comes
        back to the requests queue/topic once the tier's delay has passed."""
        ...

    async def settle(self, delivery: Delivery) -> None: ...

    async def drain(self) -> None:
        """Stop consuming, wait for every handler in flight to finish, settle, commit."""
        ...

    async def aclose(self) -> None: ...

    @property
    def ready(self) -> bool:
        """Connected and consuming (for /readyz)."""
        ...

    @property
    def in_flight(self) -> int:
        """Deliveries being handled right now."""
        ...


@dataclass(frozen=True, slots=True)
class ReplyMessage:
    """A reply as the requester side receives it."""

    body: bytes
    content_type: str
    correlation_id: str | None
    headers: Mapping[str, str]


ReplyCallback = Callable[[ReplyMessage], None]


class Requester(Protocol):
    """The client side of the bus, used by ``gateway.client.GatewayClient``.

    ``start`` sets up the requester's own reply address (RabbitMQ direct reply-to or an
    exclusive queue; a reply topic of its own on Kafka) and calls ``on_reply`` for every
    reply that arrives there.
    """

    name: str

    async def start(self, on_reply: ReplyCallback) -> None: ...

    @property
    def reply_address(self) -> str | None:
        """The reply_to this requester's requests carry (known once started)."""
        ...

    @property
    def destination(self) -> str:
        """The queue or topic requests are published to."""
        ...

    async def send(self, body: bytes, *, content_type: str, correlation_id: str, headers: Mapping[str, str]) -> None:
        """Publish one request to ``cmn.requests`` with this requester's reply address (confirmed)."""
        ...

    def telemetry(self, *, from_beginning: bool = False) -> TelemetryStream: ...

    async def aclose(self) -> None: ...


class TelemetryStream(Protocol):
    """Async iterator over raw telemetry event bodies (JSON) from ``cmn.telemetry``."""

    def __aiter__(self) -> TelemetryStream: ...

    async def __anext__(self) -> bytes: ...

    async def aclose(self) -> None: ...


class ControlChannel(Protocol):
    """Commands to every live replica, over the broker they already share (``cmn.control``).

    A replica ``start``s it to receive every command published from then on (each replica its own
    copy: an exclusive queue bound to the exchange on RabbitMQ, a group-less reader from the end on
    Kafka); commands arrive as ``Delivery`` values (``user_id`` and headers as sent, for identity).
    A caller ``publish``es a command naming its reply address (a requester's: direct reply-to is not
    usable here, since the command leaves on another channel) and gathers the ``answer``s there.
    """

    name: str

    async def start(self, handler: Handler) -> None: ...

    async def publish(
        self, body: bytes, *, reply_to: str, correlation_id: str, headers: Mapping[str, str] | None = None
    ) -> None:
        """Publish one command to every replica (confirmed by the broker)."""
        ...

    async def answer(self, reply_to: str, correlation_id: str | None, body: bytes) -> None:
        """Publish one answer (JSON) to a caller's reply address (confirmed by the broker)."""
        ...

    async def aclose(self) -> None: ...


def park_destination(requests: str, delay: int) -> str:
    """The park tier of ``delay`` seconds for a requests queue or topic: ``cmn.requests.park.5s`` by default."""
    return f"{requests}.park.{delay}s"
