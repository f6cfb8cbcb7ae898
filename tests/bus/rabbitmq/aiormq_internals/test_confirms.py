"""Ordered confirms: a multiple confirm settles exactly the tags at or below it, on a real channel."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aiormq
import pytest
from pamqp.commands import Basic

from gateway.bus.rabbitmq.aiormq_internals.confirms import ordered_confirms
from tests.fixtures.rabbit import AMQP_URL


@pytest.fixture
async def channel() -> AsyncIterator[aiormq.Channel]:
    connection = await aiormq.connect(AMQP_URL)
    try:
        opened = await connection.channel(publisher_confirms=True)
        assert isinstance(opened, aiormq.Channel)
        yield opened
    finally:
        await connection.close()


def pending(channel: aiormq.Channel, tags: range) -> dict[int, asyncio.Future[object]]:
    """Confirmations registered as a publish registers them (tags in increasing order)."""
    futures: dict[int, asyncio.Future[object]] = {}
    for tag in tags:
        futures[tag] = channel.create_future()
        channel.confirmations[tag] = futures[tag]
    return futures


async def test_a_multiple_confirm_settles_the_tags_up_to_it_and_no_more(channel: aiormq.Channel) -> None:
    assert ordered_confirms(channel)
    assert ordered_confirms(channel)  # applying twice changes nothing
    futures = pending(channel, range(101, 111))

    await channel._on_confirm_frame(Basic.Ack(delivery_tag=105, multiple=True))

    assert [tag for tag, f in futures.items() if f.done()] == [101, 102, 103, 104, 105]
    assert all(isinstance(futures[tag].result(), Basic.Ack) for tag in range(101, 106))
    assert list(channel.confirmations) == [106, 107, 108, 109, 110]

    await channel._on_confirm_frame(Basic.Nack(delivery_tag=107, multiple=False))
    assert futures[107].done() and not futures[106].done()
    with pytest.raises(aiormq.exceptions.DeliveryError):
        futures[107].result()

    await channel._on_confirm_frame(Basic.Ack(delivery_tag=110, multiple=True))
    assert all(f.done() for f in futures.values())
    assert not channel.confirmations


async def test_a_confirm_for_an_unknown_tag_settles_nothing(channel: aiormq.Channel) -> None:
    ordered_confirms(channel)
    futures = pending(channel, range(1, 4))
    await channel._on_confirm_frame(Basic.Ack(delivery_tag=99, multiple=True))
    assert not any(f.done() for f in futures.values())
    for future in futures.values():  # leave the channel as the broker would find it
        channel.confirmations.clear()
        future.cancel()


async def test_real_publishes_are_all_confirmed_through_it(channel: aiormq.Channel) -> None:
    ordered_confirms(channel)
    handler = channel._on_confirm_frame
    multiple = 0

    async def counting(frame: Basic.Ack) -> None:
        nonlocal multiple
        multiple += bool(getattr(frame, "multiple", False))
        await handler(frame)

    channel._on_confirm_frame = counting  # type: ignore[method-assign,assignment]  # observe what the broker sends
    queue = f"test.confirms.{uuid.uuid4().hex[:8]}"
    await channel.queue_declare(queue, auto_delete=True)
    try:
        publishes = (channel.basic_publish(b"%d" % n, routing_key=queue) for n in range(2_000))
        frames = await asyncio.wait_for(asyncio.gather(*publishes), 30)
        assert all(isinstance(frame, Basic.Ack) for frame in frames)
        assert not channel.confirmations
        assert multiple > 0  # the broker did confirm several publishes per frame
        declared = await channel.queue_declare(queue, passive=True)
        assert declared.message_count == 2_000
    finally:
        await channel.queue_delete(queue)
