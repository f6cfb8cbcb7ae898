"""RabbitMQ park tiers: a parked copy waits its delay on a durable queue, then the broker hands it back
to the requests queue with the original's properties and the park headers; earlier trips' x-death
bookkeeping does not pile up."""

from __future__ import annotations

import datetime
import time
from collections.abc import AsyncIterator

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel

from gateway.bus.base import Delivery, park_destination
from tests.fixtures.rabbit import TransportFactory, delete_queues, wait_until


@pytest.fixture
async def tier(amqp_url: str, rabbit_queue: str) -> AsyncIterator[str]:
    name = park_destination(rabbit_queue, 1)
    yield name
    await delete_queues(amqp_url, name)


async def test_a_parked_copy_comes_back_after_its_delay_with_its_properties(
    rabbit_transport: TransportFactory, amqp_channel: AbstractChannel, rabbit_queue: str, tier: str
) -> None:
    transport = rabbit_transport(park_delays=(1,))
    seen: list[tuple[float, Delivery]] = []

    async def handler(delivery: Delivery) -> None:
        seen.append((time.monotonic(), delivery))
        if len(seen) <= 2:  # park the original, and the copy once more
            await transport.park(delivery, tier, {"x-cmn-park-count": str(len(seen))})
        await transport.settle(delivery)

    await transport.start(handler)
    stamp = datetime.datetime(2026, 12, 7, 6, 0, tzinfo=datetime.UTC)
    original = aio_pika.Message(
        b'{"id": "p1"}', content_type="application/json", correlation_id="c-p", reply_to="cmn.replies.x",
        headers={"traceparent": "00-t-s-01"}, timestamp=stamp, user_id="guest",
    )  # fmt: skip
    await amqp_channel.default_exchange.publish(original, routing_key=rabbit_queue)
    await wait_until(lambda: len(seen) == 3, within=15)

    (t0, first), (t1, second), (t2, third) = seen
    assert t1 - t0 >= 0.9 and t2 - t1 >= 0.9  # each trip waited the tier's delay
    for copy in (second, third):
        assert copy.body == first.body
        assert (copy.reply_to, copy.correlation_id, copy.timestamp_ms) == ("cmn.replies.x", "c-p", first.timestamp_ms)
        assert copy.headers["traceparent"] == "00-t-s-01"
        assert copy.user_id is None  # not republished as another user: the park seal carries the caller
        assert copy.source == rabbit_queue and not copy.redelivered
    assert first.user_id == "guest"
    assert (second.headers["x-cmn-park-count"], third.headers["x-cmn-park-count"]) == ("1", "2")
    # The broker wrote x-death on each trip back; the second trip's is not stacked on the first's.
    assert "'count': 1" in third.headers["x-death"] and tier in third.headers["x-death"]
    assert third.headers.get("x-first-death-queue") == tier
