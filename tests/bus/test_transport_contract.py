"""One contract, both brokers and the in-memory bus users test with: what the pipeline relies on from any
Transport/Requester pair."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from gateway.bus.base import ERROR_HEADER, Delivery, OutboundMessage, ReplyMessage, Requester, Transport
from gateway.bus.kafka.requester import KafkaRequester
from gateway.bus.kafka.transport import KafkaTransport
from gateway.bus.rabbitmq.requester import RabbitRequester
from gateway.bus.rabbitmq.transport import RabbitTransport
from gateway.clock import SystemClock
from gateway.testing import MemoryRequester, MemoryTransport
from tests.fixtures.kafka import FAST_GROUP
from tests.fixtures.rabbit import AMQP_URL
from tests.integration.harness import delete_rabbit_topology, kafka_dead_letters, rabbit_dead_letters


@dataclass
class Bus:
    kind: str
    transport: Transport
    requester: Requester
    queue: str
    bootstrap: str | None
    replies: asyncio.Queue[ReplyMessage]

    async def dead_letters(self, count: int) -> list[tuple[bytes, dict[str, str]]]:
        if isinstance(self.transport, MemoryTransport):
            return [(d.body, {**d.headers, ERROR_HEADER: why}) for d, why in self.transport.dead_letters][:count]
        if self.kind == "rabbitmq":
            return await rabbit_dead_letters(f"{self.queue}.dlq", count, 10)
        assert self.bootstrap is not None
        return await kafka_dead_letters(self.bootstrap, count, 10)


@pytest.fixture(params=["rabbitmq", "kafka", "memory"])
def bus_kind(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    return request.param, request.getfixturevalue("kafka_bootstrap") if request.param == "kafka" else None


def make_bus(kind: str, bootstrap: str | None, **transport_options: Any) -> Bus:
    queue = f"t.contract.{uuid.uuid4().hex[:10]}"
    replies: asyncio.Queue[ReplyMessage] = asyncio.Queue()
    if kind == "memory":
        memory = MemoryTransport(max_in_flight=int(transport_options.get("max_in_flight", 256)))
        return Bus(kind, memory, MemoryRequester(memory), queue, bootstrap, replies)
    if kind == "rabbitmq":
        telemetry = f"{queue}.telemetry"
        transport: Transport = RabbitTransport(
            AMQP_URL, queue=queue, telemetry=telemetry, **{"clock": SystemClock(), **transport_options}
        )
        requester: Requester = RabbitRequester(AMQP_URL, queue=queue, telemetry=telemetry, clock=SystemClock())
    else:
        assert bootstrap is not None
        options = {**FAST_GROUP, "clock": SystemClock(), **transport_options}
        transport = KafkaTransport(bootstrap, topic=queue, group_id=f"g.{queue}", **options)
        requester = KafkaRequester(bootstrap, topic=queue, clock=SystemClock())
    return Bus(kind, transport, requester, queue, bootstrap, replies)


@pytest.fixture
async def bus(bus_kind: tuple[str, str | None]) -> AsyncIterator[Bus]:
    made = make_bus(*bus_kind, max_in_flight=3)
    await made.requester.start(made.replies.put_nowait)
    yield made
    await made.transport.aclose()
    await made.requester.aclose()
    if made.kind == "rabbitmq":
        await delete_rabbit_topology(made.queue)


async def send(bus: Bus, n: int) -> None:
    for i in range(n):
        await bus.requester.send(
            f"body-{i}".encode(), content_type="application/json", correlation_id=f"c{i}", headers={}
        )


async def test_request_reaches_the_handler_and_the_reply_comes_back(bus: Bus) -> None:
    async def handle(delivery: Delivery) -> None:
        assert delivery.reply_to and delivery.transport == bus.kind
        reply = OutboundMessage(
            destination=delivery.reply_to,
            body=b"re:" + delivery.body,
            content_type=delivery.content_type,
            correlation_id=delivery.correlation_id,
            key=(delivery.correlation_id or "").encode(),
        )
        await bus.transport.publish(reply)
        await bus.transport.settle(delivery)

    await bus.transport.start(handle)
    await send(bus, 5)
    got: dict[str | None, bytes] = {}
    async with asyncio.timeout(20):
        while len(got) < 5:
            message = await bus.replies.get()
            got[message.correlation_id] = message.body
    assert got == {f"c{i}": f"re:body-{i}".encode() for i in range(5)}


async def test_in_flight_is_bounded_and_drain_waits_for_it(bus: Bus) -> None:
    running, peak, finished = 0, 0, 0
    release, full = asyncio.Event(), asyncio.Event()

    async def handle(delivery: Delivery) -> None:
        nonlocal running, peak, finished
        running += 1
        peak = max(peak, running)
        if running == 3:
            full.set()
        await release.wait()
        running -= 1
        finished += 1
        await bus.transport.settle(delivery)

    await bus.transport.start(handle)
    await send(bus, 8)
    await asyncio.wait_for(full.wait(), 20)
    await asyncio.sleep(0.3)  # give a fourth delivery the chance to sneak in
    assert peak == 3  # max_in_flight, never more
    drained = asyncio.create_task(bus.transport.drain())
    await asyncio.sleep(0.2)
    assert not drained.done()  # drain waits for the handlers in flight
    release.set()
    await asyncio.wait_for(drained, 20)
    assert running == 0 and finished >= 3


async def test_dead_letters_keep_the_bytes_and_say_why(bus: Bus) -> None:
    seen = asyncio.Event()

    async def handle(delivery: Delivery) -> None:
        await bus.transport.dead_letter(delivery, "invalid_request: not an envelope")
        await bus.transport.settle(delivery)
        seen.set()

    await bus.transport.start(handle)
    raw = b"\x00 not json " + uuid.uuid4().bytes
    await bus.requester.send(raw, content_type="application/json", correlation_id="dl", headers={"x-extra": "1"})
    await asyncio.wait_for(seen.wait(), 20)
    letters = [(body, headers) for body, headers in await bus.dead_letters(1) if body == raw]
    assert letters, "the original bytes are in the dead-letter queue"
    assert letters[0][1][ERROR_HEADER] == "invalid_request: not an envelope"


async def test_telemetry_is_confirmed_and_readable(bus: Bus) -> None:
    await bus.transport.start(lambda d: bus.transport.settle(d))
    marker = uuid.uuid4().hex
    await bus.transport.publish_telemetry("request.completed", f'{{"m": "{marker}"}}'.encode(), {})
    stream = bus.requester.telemetry(from_beginning=True)
    try:
        async with asyncio.timeout(20):
            async for raw in stream:
                if marker.encode() in raw:
                    break
    finally:
        await stream.aclose()
    assert bus.transport.ready
