"""Test doubles shipped with the package, so users' tests can use them too: a fake clock, and an
in-memory bus to run a pipeline or a whole gateway without a broker: ``MemoryTransport`` (the
gateway's side) and ``MemoryRequester`` (the client's: ``GatewayClient(MemoryRequester(transport))``).
``InMemoryGateway`` (gateway/testing_gateway.py) puts them together with the real gateway and the
test's own upstreams; ``ReplyMessage`` is what a requester hands back."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from gateway.bus.base import REQUESTS, Delivery, Handler, OutboundMessage, ReplyCallback, ReplyMessage
from gateway.errors import MessageRejectedError

if TYPE_CHECKING:
    from gateway.testing_gateway import InMemoryGateway

__all__ = ["FakeClock", "InMemoryGateway", "MemoryRequester", "MemoryTransport", "ReplyMessage"]

log = logging.getLogger(__name__)


class FakeClock:
    """A clock that moves only when told to.

    ``sleep`` parks the caller until ``advance`` moves time past its wake-up point, so
    time-based logic (breakers, buckets, backoff, renewal) is tested without real sleeping.
    """

    def __init__(self, start: float = 1000.0, wall_start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall_start - start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._now + self._wall_offset

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), fut))
        await fut

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose time has come."""
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

    @property
    def sleepers(self) -> int:
        return sum(1 for _, _, f in self._sleepers if not f.done())

    def __repr__(self) -> str:
        return f"<FakeClock t={self._now:.3f} sleepers={self.sleepers}>"


class MemoryTransport:
    """A ``Transport`` (gateway.bus.base) in memory, for testing a pipeline, or a component, without a broker.

    It keeps the contract's promises as the real transports do: ``publish*`` and ``dead_letter`` return
    once "confirmed" (kept in ``published``, ``telemetry``, ``dead_letters``) or raise what the broker
    would (``fail_*``, ``refuse``); a delivery is settled once at most (twice is an error, as on AMQP);
    one the handler left unsettled stays in ``unsettled`` until ``redeliver_unsettled``, which is what
    a broker does when the channel closes; at most ``max_in_flight`` handlers run at once; ``drain``
    stops taking requests and waits for those in flight. A handler that raises leaves its delivery
    unsettled, like the real transports (the worker's guard is what dead-letters a crash).
    """

    def __init__(self, name: str = "memory", *, max_in_flight: int = 256, max_message_bytes: int | None = None) -> None:
        self.name = name
        self._max_in_flight = max_in_flight
        self._max_message_bytes = max_message_bytes
        self._handler: Handler | None = None
        self._accepting = False
        self._waiting: deque[Delivery] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._handled: dict[int, Delivery] = {}  # delivery tag -> delivery, handled and not yet settled
        self._settled_tags: set[int] = set()
        self._tags = itertools.count(1)
        self._refused: set[str] = set()
        self._reply_failure: Exception | None = None
        self._telemetry_failure: Exception | None = None
        self._dead_letter_failure: Exception | None = None
        self._reply_consumers: dict[str, ReplyCallback] = {}
        self._telemetry_readers: set[asyncio.Queue[bytes]] = set()
        self.published: list[OutboundMessage] = []
        self.telemetry: list[tuple[str, bytes, Mapping[str, str]]] = []
        self.dead_letters: list[tuple[Delivery, str]] = []
        self.parked: list[tuple[Delivery, str, dict[str, str]]] = []  # (original, tier, park headers)
        self.settled: list[Delivery] = []
        self.publish_attempts = 0  # publish calls, confirmed or not

    # -- what a test does -------------------------------------------------------------------
    def send(
        self,
        body: bytes,
        *,
        content_type: str = "application/json",
        reply_to: str | None = "replies",
        correlation_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        user_id: str | None = None,
        timestamp_ms: int | None = None,
    ) -> Delivery:
        """Put one request on the queue; it is handled once started and a slot is free."""
        delivery = Delivery(
            body=body,
            content_type=content_type,
            reply_to=reply_to,
            correlation_id=correlation_id,
            headers=dict(headers or {}),
            transport=self.name,
            timestamp_ms=timestamp_ms,
            user_id=user_id,
            source=REQUESTS,
            token=next(self._tags),
        )
        self._waiting.append(delivery)
        self._dispatch()
        return delivery

    def refuse(self, destination: str) -> None:
        """Publishes to ``destination`` are refused for good (``MessageRejectedError``), as for a bad name."""
        self._refused.add(destination)

    def fail_replies(self, error: Exception | None) -> None:
        """Every ``publish`` raises ``error`` (a ``BusUnavailableError``: the broker away) until called with None."""
        self._reply_failure = error

    def fail_telemetry(self, error: Exception | None) -> None:
        self._telemetry_failure = error

    def fail_dead_letters(self, error: Exception | None) -> None:
        self._dead_letter_failure = error

    def redeliver_unsettled(self) -> None:
        """What the broker does when the channel closes: every delivery handled but not settled comes
        again, marked redelivered."""
        handled, self._handled = list(self._handled.values()), {}
        for delivery in handled:
            self._waiting.append(replace(delivery, redelivered=True, token=next(self._tags)))
        self._dispatch()

    @property
    def waiting(self) -> int:
        """Requests sent and not yet taken by a handler (none is, before ``start``)."""
        return len(self._waiting)

    @property
    def unsettled(self) -> list[Delivery]:
        """Deliveries their handler finished with and did not settle (RabbitMQ keeps them unacked)."""
        return list(self._handled.values())

    async def idle(self) -> None:
        """Wait until every delivery that can be handled now has been."""
        self._dispatch()
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    # -- the Transport protocol -------------------------------------------------------------
    async def start(self, handler: Handler) -> None:
        if self._handler is not None:
            raise RuntimeError(f"{self!r} already started")
        self._handler = handler
        self._accepting = True
        self._dispatch()

    async def publish(self, message: OutboundMessage) -> None:
        self.publish_attempts += 1
        await asyncio.sleep(0)  # a confirm is never synchronous
        if self._reply_failure is not None:
            raise self._reply_failure
        self._check(message.destination, message.body)
        self.published.append(message)
        consumer = self._reply_consumers.get(message.destination)
        if consumer is not None:
            consumer(ReplyMessage(message.body, message.content_type, message.correlation_id, dict(message.headers)))

    async def publish_telemetry(self, event_type: str, body: bytes, headers: Mapping[str, str]) -> None:
        await asyncio.sleep(0)
        if self._telemetry_failure is not None:
            raise self._telemetry_failure
        self.telemetry.append((event_type, body, dict(headers)))
        for reader in self._telemetry_readers:
            reader.put_nowait(body)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        await asyncio.sleep(0)
        if self._dead_letter_failure is not None:
            raise self._dead_letter_failure
        self.dead_letters.append((delivery, reason))

    async def park(self, delivery: Delivery, destination: str, headers: Mapping[str, str]) -> None:
        await asyncio.sleep(0)
        self._check(destination, delivery.body)
        self.parked.append((delivery, destination, dict(headers)))

    def unpark(self, index: int = -1) -> Delivery:
        """What the broker does once a tier's delay passed: the parked copy comes back as a new request."""
        original, _, headers = self.parked[index]
        delivery = replace(
            original, headers={**original.headers, **headers}, redelivered=False, user_id=None, token=next(self._tags)
        )
        self._waiting.append(delivery)
        self._dispatch()
        return delivery

    async def settle(self, delivery: Delivery) -> None:
        tag: int = delivery.token
        if tag in self._settled_tags:
            raise RuntimeError(f"delivery {tag} settled twice (AMQP closes the channel: unknown delivery tag)")
        self._settled_tags.add(tag)
        self._handled.pop(tag, None)
        self.settled.append(delivery)

    async def drain(self) -> None:
        self._accepting = False
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def aclose(self) -> None:
        self._accepting = False
        for task in tuple(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))

    @property
    def ready(self) -> bool:
        return self._accepting

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    # -- inside -----------------------------------------------------------------------------
    def _check(self, destination: str, body: bytes) -> None:
        if destination in self._refused:
            raise MessageRejectedError(f"the broker refused the destination {destination!r}")
        if self._max_message_bytes is not None and len(body) > self._max_message_bytes:
            raise MessageRejectedError(f"a {len(body)}-byte message is over {self._max_message_bytes} bytes")

    def _dispatch(self) -> None:
        handler = self._handler
        while handler is not None and self._accepting and self._waiting and len(self._tasks) < self._max_in_flight:
            delivery = self._waiting.popleft()
            task = asyncio.get_running_loop().create_task(self._run(handler, delivery))
            self._tasks.add(task)
            task.add_done_callback(self._finished)

    async def _run(self, handler: Handler, delivery: Delivery) -> None:
        tag: int = delivery.token
        try:
            await handler(delivery)
        except Exception:
            log.exception("handler raised on a delivery; left unsettled")
        if tag not in self._settled_tags:
            self._handled[tag] = delivery

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._dispatch()

    def __repr__(self) -> str:
        return (
            f"<MemoryTransport {self.name} [{'ready' if self.ready else 'idle'}] in_flight={len(self._tasks)}"
            f" waiting={len(self._waiting)} settled={len(self.settled)} unsettled={len(self._handled)}>"
        )


class MemoryRequester:
    """The client side of a ``MemoryTransport`` (a ``Requester``): requests go onto its queue with this
    requester's own reply address, replies published there come back to ``on_reply``."""

    name = "memory"

    def __init__(self, transport: MemoryTransport) -> None:
        self._transport = transport
        self._address = f"cmn.replies.memory-{uuid.uuid4().hex[:12]}"

    @property
    def reply_address(self) -> str:
        return self._address

    @property
    def destination(self) -> str:
        return REQUESTS

    async def start(self, on_reply: ReplyCallback) -> None:
        self._transport._reply_consumers[self._address] = on_reply

    async def send(self, body: bytes, *, content_type: str, correlation_id: str, headers: Mapping[str, str]) -> None:
        await asyncio.sleep(0)  # a confirm is never synchronous
        self._transport.send(
            body, content_type=content_type, reply_to=self._address, correlation_id=correlation_id, headers=headers
        )

    def telemetry(self, *, from_beginning: bool = False) -> MemoryTelemetryStream:
        return MemoryTelemetryStream(self._transport, from_beginning=from_beginning)

    async def aclose(self) -> None:
        self._transport._reply_consumers.pop(self._address, None)

    def __repr__(self) -> str:
        return f"<MemoryRequester {self._address}>"


class MemoryTelemetryStream:
    """The telemetry bodies a ``MemoryTransport`` publishes (a ``TelemetryStream``), from now or from the start."""

    def __init__(self, transport: MemoryTransport, *, from_beginning: bool) -> None:
        self._transport = transport
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        if from_beginning:
            for _, body, _ in transport.telemetry:
                self._queue.put_nowait(body)
        transport._telemetry_readers.add(self._queue)

    def __aiter__(self) -> MemoryTelemetryStream:
        return self

    async def __anext__(self) -> bytes:
        return await self._queue.get()

    async def aclose(self) -> None:
        self._transport._telemetry_readers.discard(self._queue)


def __getattr__(name: str) -> object:
    # InMemoryGateway runs the whole gateway: imported on first use, so a test that needs only the
    # fake clock or the memory bus does not load it.
    if name == "InMemoryGateway":
        from gateway.testing_gateway import InMemoryGateway

        return InMemoryGateway
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
