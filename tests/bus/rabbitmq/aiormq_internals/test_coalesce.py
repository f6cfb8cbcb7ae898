"""Coalesced writes: frames queued together leave in one write, in order, and drains still resolve."""

from __future__ import annotations

import asyncio

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aiormq.abc import ChannelFrame
from pamqp import commands

from gateway.bus.base import Delivery, OutboundMessage
from gateway.bus.rabbitmq.aiormq_internals.coalesce import QUEUE_BOUND, CoalesceStats, coalesce_writes
from gateway.bus.rabbitmq.connection import underlay
from tests.fixtures.rabbit import TransportFactory, wait_until


def frame(payload: bytes, *, drain: asyncio.Future[None] | None = None) -> ChannelFrame:
    return ChannelFrame(payload=payload, should_close=False, drain_future=drain)


class FakeConnection:
    """Only what coalesce_writes touches: the writer's queue (a real asyncio.Queue, bounded as aiormq's)."""

    def __init__(self) -> None:
        self.write_queue: asyncio.Queue[ChannelFrame] = asyncio.Queue(maxsize=10)


async def test_frames_queued_together_come_out_as_one_in_order() -> None:
    connection = FakeConnection()
    stats = CoalesceStats()
    assert coalesce_writes(connection, stats)
    assert coalesce_writes(connection, stats)  # applying twice changes nothing
    assert connection.write_queue.maxsize == QUEUE_BOUND  # not aiormq's 10: publishers would block
    loop = asyncio.get_running_loop()
    drains: list[asyncio.Future[None]] = [loop.create_future(), loop.create_future()]
    for number in range(5):
        connection.write_queue.put_nowait(frame(b"%d" % number, drain=drains[number] if number < 2 else None))

    joined = await connection.write_queue.get()

    assert joined.payload == b"01234"
    assert (stats.writes, stats.frames) == (1, 5)
    assert connection.write_queue.empty()
    assert joined.should_drain
    joined.drain()  # what aiormq's writer does after the socket drained
    await asyncio.sleep(0)  # the release runs as the merged future's done-callback
    assert all(future.done() for future in drains)


async def test_a_lone_frame_goes_out_unchanged() -> None:
    connection = FakeConnection()
    coalesce_writes(connection)
    single = frame(b"alone")
    connection.write_queue.put_nowait(single)
    assert await connection.write_queue.get() is single


async def test_a_close_frame_ends_the_batch() -> None:
    connection = FakeConnection()
    coalesce_writes(connection)
    connection.write_queue.put_nowait(frame(b"a"))
    connection.write_queue.put_nowait(ChannelFrame(payload=b"close", should_close=True))
    connection.write_queue.put_nowait(frame(b"late"))
    joined = await connection.write_queue.get()
    assert (joined.payload, joined.should_close) == (b"aclose", True)


async def test_something_that_is_not_an_aiormq_connection_is_left_alone() -> None:
    assert not coalesce_writes(object())


async def test_transport_publishes_coalesced_and_in_order(
    rabbit_transport: TransportFactory, amqp_channel: AbstractChannel
) -> None:
    transport = rabbit_transport()

    async def unused(delivery: Delivery) -> None:
        raise AssertionError("no requests here")

    await transport.start(unused)
    target = await amqp_channel.declare_queue(exclusive=True, auto_delete=True)
    messages = [OutboundMessage(target.name, b"%d" % n, "application/json", f"c{n}") for n in range(500)]
    await asyncio.gather(*(transport.publish(message) for message in messages))

    received: list[bytes] = []

    async def on_message(message: AbstractIncomingMessage) -> None:
        received.append(message.body)

    await target.consume(on_message, no_ack=True)
    await wait_until(lambda: len(received) == 500)
    assert received == [b"%d" % n for n in range(500)]
    assert transport.write_stats.frames > transport.write_stats.writes  # batching happened


async def test_a_plain_aiormq_connection_keeps_every_message(amqp_url: str) -> None:
    connection = await aio_pika.connect_robust(amqp_url)
    stats = CoalesceStats()
    try:
        assert connection.transport is not None
        assert coalesce_writes(connection.transport.connection, stats)
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        aiormq_channel = await underlay(channel)
        properties = commands.Basic.Properties()
        await asyncio.gather(
            *(
                aiormq_channel.basic_publish(b"x", routing_key=queue.name, properties=properties, wait=False)
                for _ in range(200)
            )
        )
        declared = await aiormq_channel.queue_declare(queue.name, passive=True)
        assert declared.message_count == 200
        assert stats.frames > stats.writes
    finally:
        await connection.close()
