"""RabbitDeadLetters on the real broker: reading removes nothing and keeps the order; a replayed
letter is acked only after its republish to the requests queue (reply_to, correlation id and headers
kept, x-cmn-error gone); letters not chosen are given back in place."""

from __future__ import annotations

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel

from gateway.bus.rabbitmq.dlq import RabbitDeadLetters
from gateway.dlq.letters import Filters, summarise
from gateway.dlq.replay import plan, replay
from gateway.testing import FakeClock
from tests.fixtures.rabbit import ready_count


async def letter_ids(url: str, queue: str) -> list[str]:
    dlq = RabbitDeadLetters(url, requests=queue)
    try:
        return [summarise(letter, now=0).id for letter in await dlq.read()]
    finally:
        await dlq.aclose()


async def test_replay_acks_only_what_was_republished_and_gives_the_rest_back_in_order(
    amqp_url: str, rabbit_queue: str, amqp_channel: AbstractChannel
) -> None:
    await amqp_channel.declare_queue(rabbit_queue, durable=True)
    await amqp_channel.declare_queue(f"{rabbit_queue}.dlq", durable=True)
    for request_id, method in (("a", "POST"), ("b", "GET"), ("c", "PATCH")):
        body = orjson.dumps({"id": request_id, "upstream": "p", "method": method, "path": "/"})
        message = aio_pika.Message(body, reply_to="cmn.replies.x", correlation_id=f"c-{request_id}",
                                   headers={"x-cmn-error": "unknown_upstream: no p", "traceparent": "t"},
                                   content_type="application/json")  # fmt: skip
        await amqp_channel.default_exchange.publish(message, routing_key=f"{rabbit_queue}.dlq")

    assert await letter_ids(amqp_url, rabbit_queue) == ["a", "b", "c"]
    assert await letter_ids(amqp_url, rabbit_queue) == ["a", "b", "c"]  # read twice: nothing removed

    dlq = RabbitDeadLetters(amqp_url, requests=rabbit_queue)
    try:
        letters = await dlq.read()
        the_plan = plan([(x, summarise(x, now=0)) for x in letters], Filters(), force=False)
        outcome = await replay(dlq, the_plan, clock=FakeClock())
    finally:
        await dlq.aclose()
    assert outcome.replayed == ["b"] and outcome.not_idempotent == ["a", "c"]
    assert await letter_ids(amqp_url, rabbit_queue) == ["a", "c"]
    assert await ready_count(amqp_channel, rabbit_queue) == 1
    queue = await amqp_channel.get_queue(rabbit_queue)
    replayed = await queue.get(no_ack=True)
    assert orjson.loads(replayed.body)["id"] == "b"
    assert (replayed.reply_to, replayed.correlation_id) == ("cmn.replies.x", "c-b")
    assert replayed.headers == {"traceparent": "t"}
