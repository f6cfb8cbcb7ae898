"""The worker owns the one fallback for a crashing handler: dead-letter the delivery, then settle it.

Run on both real brokers (the transports themselves only call the handler), and on the in-memory
transport for the case the brokers cannot stage on demand: the dead-lettering failing too.
"""

from __future__ import annotations

import asyncio
import uuid

import aio_pika
from aio_pika.abc import AbstractChannel

from gateway.bus.base import DEAD_LETTERS, ERROR_HEADER, Delivery
from gateway.errors import BusUnavailableError
from gateway.testing import MemoryTransport
from gateway.worker import guarded
from tests.fixtures.kafka import KafkaTransportFactory, committed_offsets, produce, read_topic
from tests.fixtures.rabbit import TransportFactory, wait_until


async def test_a_crash_on_rabbitmq_is_dead_lettered_and_settled_and_consumption_goes_on(
    rabbit_transport: TransportFactory, amqp_channel: AbstractChannel, rabbit_queue: str
) -> None:
    transport = rabbit_transport()
    served: list[bytes] = []

    async def handler(delivery: Delivery) -> None:
        if delivery.body == b"poison":
            raise ValueError("pipeline bug")
        served.append(delivery.body)
        await transport.settle(delivery)

    await transport.start(guarded(transport, handler))
    for body in (b"poison", b"fine"):
        await amqp_channel.default_exchange.publish(aio_pika.Message(body), routing_key=rabbit_queue)

    await wait_until(lambda: transport.settled == 2)
    dlq = await amqp_channel.declare_queue(f"{rabbit_queue}.dlq", passive=True)
    dead = await dlq.get(no_ack=True, fail=True)
    assert dead is not None
    assert dead.body == b"poison"
    assert str(dead.headers[ERROR_HEADER]) == "internal: handler crashed: ValueError"  # no message: it may quote input
    assert served == [b"fine"]


async def test_a_crash_on_kafka_is_dead_lettered_and_its_offset_committed(
    kafka_transport: KafkaTransportFactory, kafka_bootstrap: str
) -> None:
    transport = kafka_transport()
    marker = uuid.uuid4().hex.encode()
    done = asyncio.Event()

    async def handler(delivery: Delivery) -> None:
        if delivery.body.startswith(b"boom"):
            raise RuntimeError("bug")
        await transport.settle(delivery)
        done.set()

    await transport.start(guarded(transport, handler))
    await produce(kafka_bootstrap, transport.topic, [b"boom" + marker, b"fine"], partition=0)
    await asyncio.wait_for(done.wait(), 20)
    records = await read_topic(
        kafka_bootstrap, DEAD_LETTERS, until=lambda rs: any(r.value == b"boom" + marker for r in rs)
    )
    dead = next(r for r in records if r.value == b"boom" + marker)
    assert dict(dead.headers)[ERROR_HEADER] == b"internal: handler crashed: RuntimeError"

    async def both_committed() -> bool:
        return (await committed_offsets(kafka_bootstrap, transport.topic, transport.group_id))[0] == 2

    for _ in range(200):  # the crashed record was settled after dead-lettering, so commits pass it
        if await both_committed():
            break
        await asyncio.sleep(0.05)
    assert await both_committed()


async def test_a_crash_whose_dead_letter_fails_too_stays_unsettled_and_comes_again() -> None:
    transport = MemoryTransport()
    crashes = 0

    async def handler(delivery: Delivery) -> None:
        nonlocal crashes
        crashes += 1
        if crashes == 1:
            raise RuntimeError("bug")
        await transport.settle(delivery)

    transport.fail_dead_letters(BusUnavailableError("broker away"))
    await transport.start(guarded(transport, handler))
    sent = transport.send(b"{}")
    await transport.idle()
    assert transport.unsettled == [sent] and transport.dead_letters == []
    transport.fail_dead_letters(None)
    transport.redeliver_unsettled()  # what the broker does when the channel closes
    await transport.idle()
    assert transport.unsettled == [] and crashes == 2
    assert [d.redelivered for d in transport.settled] == [True]
