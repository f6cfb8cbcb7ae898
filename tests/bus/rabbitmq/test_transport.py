"""RabbitTransport against the real broker: consume, confirm, settle, back-pressure, dead letters, drain."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from gateway.bus.base import ERROR_HEADER, Delivery, OutboundMessage
from gateway.bus.rabbitmq.topology import STREAM_ARGUMENTS
from gateway.bus.rabbitmq.transport import RabbitTransport
from gateway.events import Event, ReplyUnroutable
from tests.fixtures.rabbit import TransportFactory, ready_count, reply_queue, wait_until


def echo(transport: RabbitTransport, seen: list[Delivery]) -> Callable[[Delivery], Awaitable[None]]:
    async def handler(delivery: Delivery) -> None:
        seen.append(delivery)
        assert delivery.reply_to is not None
        reply = OutboundMessage(
            destination=delivery.reply_to,
            body=b"reply:" + delivery.body,
            content_type=delivery.content_type,
            correlation_id=delivery.correlation_id,
            headers={"traceparent": delivery.headers.get("traceparent", "")},
        )
        await transport.publish(reply)
        await transport.settle(delivery)

    return handler


def settling(transport: RabbitTransport, got: list[bytes]) -> Callable[[Delivery], Awaitable[None]]:
    """A handler that keeps each body and settles its delivery."""

    async def handler(delivery: Delivery) -> None:
        got.append(delivery.body)
        await transport.settle(delivery)

    return handler


async def test_consumes_publishes_confirmed_reply_and_settles(
    rabbit_transport: TransportFactory, amqp_channel: AbstractChannel, rabbit_queue: str
) -> None:
    transport = rabbit_transport()
    seen: list[Delivery] = []
    await transport.start(echo(transport, seen))
    assert transport.ready
    queue, replies = await reply_queue(amqp_channel)
    request = aio_pika.Message(
        b'{"id": "r1"}',
        reply_to=queue.name,
        correlation_id="c-1",
        headers={"traceparent": "00-abc-def-01", "attempt": 3},
    )

    await amqp_channel.default_exchange.publish(request, routing_key=rabbit_queue)
    reply = await asyncio.wait_for(replies.get(), 10)

    assert reply.body == b'reply:{"id": "r1"}'
    assert reply.correlation_id == "c-1"
    assert reply.content_type == "application/json"  # the default when the request names none
    assert reply.headers == {"traceparent": "00-abc-def-01"}
    (delivery,) = seen
    assert delivery.transport == "rabbitmq"
    assert delivery.headers == {"traceparent": "00-abc-def-01", "attempt": "3"}
    assert delivery.redelivered is False
    await wait_until(lambda: transport.settled == 1)
    assert transport.publisher is not None
    assert transport.publisher.lean.lean == 1  # the reply took the lean path, and arrived intact
    await transport.drain()
    await transport.aclose()
    # Acked, not merely unacked-and-held: with the consumer gone an unacked message would be back.
    assert await ready_count(amqp_channel, rabbit_queue) == 0


async def test_prefetch_bounds_the_deliveries_in_flight(
    rabbit_transport: TransportFactory, amqp_channel: AbstractChannel, rabbit_queue: str
) -> None:
    transport = rabbit_transport(max_in_flight=3)
    release = asyncio.Event()
    running = 0
    most = 0

    async def handler(delivery: Delivery) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await release.wait()
        running -= 1
        await transport.settle(delivery)

    await transport.start(handler)
    for number in range(10):
        await amqp_channel.default_exchange.publish(aio_pika.Message(b"%d" % number), routing_key=rabbit_queue)

    await wait_until(lambda: transport.received == 3)
    # The broker holds the rest back: 7 still ready in the queue, not sitting in our buffers.
    assert await ready_count(amqp_channel, rabbit_queue) == 7
    assert transport.in_flight == 3
    release.set()
    await wait_until(lambda: transport.settled == 10)
    assert most <= 3


async def test_dead_letter_keeps_the_original_bytes_and_properties(
    rabbit_transport: TransportFactory, amqp_channel: AbstractChannel, rabbit_queue: str
) -> None:
    transport = rabbit_transport()
    body = b"\xff\x00 not json, not msgpack \x81"

    async def handler(delivery: Delivery) -> None:
        await transport.dead_letter(delivery, "invalid_request: body is not JSON")
        await transport.settle(delivery)

    await transport.start(handler)
    original = aio_pika.Message(
        body,
        content_type="application/msgpack",
        correlation_id="c-dl",
        reply_to="somewhere",
        message_id="m-1",
        headers={"traceparent": "00-t-s-01", "tenant": "acme"},
    )
    await amqp_channel.default_exchange.publish(original, routing_key=rabbit_queue)

    dlq = await amqp_channel.declare_queue(f"{rabbit_queue}.dlq", passive=True)
    await wait_until(lambda: transport.settled == 1)
    dead = await dlq.get(no_ack=True, fail=True)

    assert dead is not None
    assert dead.body == body
    assert dead.headers == {
        "traceparent": "00-t-s-01",
        "tenant": "acme",
        ERROR_HEADER: "invalid_request: body is not JSON",
    }
    assert (dead.content_type, dead.correlation_id, dead.reply_to, dead.message_id) == (
        "application/msgpack",
        "c-dl",
        "somewhere",
        "m-1",
    )
    assert dead.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert await ready_count(amqp_channel, rabbit_queue) == 0


async def test_drain_stops_consuming_and_waits_for_work_in_flight(
    rabbit_transport: TransportFactory, amqp_channel: AbstractChannel, rabbit_queue: str
) -> None:
    transport = rabbit_transport()
    started = asyncio.Event()
    release = asyncio.Event()
    finished: list[bytes] = []

    async def handler(delivery: Delivery) -> None:
        started.set()
        await release.wait()
        await transport.settle(delivery)
        finished.append(delivery.body)

    await transport.start(handler)
    await amqp_channel.default_exchange.publish(aio_pika.Message(b"slow"), routing_key=rabbit_queue)
    await asyncio.wait_for(started.wait(), 10)

    drain = asyncio.create_task(transport.drain())
    await wait_until(lambda: not transport.ready)
    for _ in range(20):
        await asyncio.sleep(0)
    assert not drain.done()
    await amqp_channel.default_exchange.publish(aio_pika.Message(b"after drain"), routing_key=rabbit_queue)

    release.set()
    await asyncio.wait_for(drain, 10)
    assert finished == [b"slow"]
    assert transport.received == 1
    assert await ready_count(amqp_channel, rabbit_queue) == 1  # left for the next worker


async def test_unsettled_messages_come_back_when_the_consumer_dies(
    rabbit_transport: TransportFactory, amqp_channel: AbstractChannel, rabbit_queue: str
) -> None:
    first = rabbit_transport()
    taken: list[Delivery] = []

    async def hold(delivery: Delivery) -> None:
        taken.append(delivery)

    await first.start(hold)
    for number in range(5):
        await amqp_channel.default_exchange.publish(aio_pika.Message(b"%d" % number), routing_key=rabbit_queue)
    await wait_until(lambda: len(taken) == 5)
    await first.aclose()  # dies without settling anything

    second = rabbit_transport()
    again: list[Delivery] = []

    async def settle(delivery: Delivery) -> None:
        again.append(delivery)
        await second.settle(delivery)

    await second.start(settle)
    await wait_until(lambda: second.settled == 5)
    assert sorted(d.body for d in again) == [b"0", b"1", b"2", b"3", b"4"]
    assert all(d.redelivered for d in again)
    # Settling a delivery of the dead consumer neither raises nor touches the live channel.
    await second.settle(taken[0])
    assert second.dropped_settles == 1


async def test_an_existing_queue_with_other_arguments_is_used_as_it_is(
    rabbit_transport: TransportFactory, amqp_channel: AbstractChannel, rabbit_queue: str
) -> None:
    await amqp_channel.declare_queue(rabbit_queue, durable=True, arguments={"x-max-length": 1000})
    transport = rabbit_transport()
    got: list[bytes] = []
    await transport.start(settling(transport, got))
    await amqp_channel.default_exchange.publish(aio_pika.Message(b"x"), routing_key=rabbit_queue)
    await wait_until(lambda: got == [b"x"])
    assert transport.ready


async def test_telemetry_is_confirmed_into_the_stream(
    rabbit_transport: TransportFactory, amqp_url: str, rabbit_telemetry: str
) -> None:
    transport = rabbit_transport()

    async def unused(delivery: Delivery) -> None:
        raise AssertionError("no requests in this test")

    await transport.start(unused)
    await transport.publish_telemetry("request.completed", b'{"n": 1}', {"traceparent": "00-a-b-01"})
    await transport.publish_telemetry("breaker.state_changed", b'{"n": 2}', {})

    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=10)
        stream = await channel.declare_queue(rabbit_telemetry, durable=True, arguments=dict(STREAM_ARGUMENTS))
        events: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

        async def on_event(message: AbstractIncomingMessage) -> None:
            await message.ack()
            events.put_nowait(message)

        await stream.consume(on_event, arguments={"x-stream-offset": "first"})
        first = await asyncio.wait_for(events.get(), 10)
        second = await asyncio.wait_for(events.get(), 10)
    assert (first.routing_key, first.body, first.headers["traceparent"]) == (
        "request.completed",
        b'{"n": 1}',
        "00-a-b-01",
    )
    assert (second.routing_key, second.body) == ("breaker.state_changed", b'{"n": 2}')
    assert first.content_type == "application/json"


async def test_a_deleted_request_queue_is_declared_again_and_consumed(
    rabbit_transport: TransportFactory, amqp_channel: AbstractChannel, rabbit_queue: str
) -> None:
    transport = rabbit_transport()
    got: list[bytes] = []
    await transport.start(settling(transport, got))
    await amqp_channel.queue_delete(rabbit_queue)  # an operator's mistake; the broker cancels us

    await wait_until(lambda: transport.subscriptions == 2 and transport.ready)
    await amqp_channel.default_exchange.publish(aio_pika.Message(b"still served"), routing_key=rabbit_queue)
    await wait_until(lambda: got == [b"still served"])


async def test_a_reply_nobody_can_receive_is_returned_counted_and_the_request_still_settled(
    rabbit_transport: TransportFactory,
    amqp_channel: AbstractChannel,
    rabbit_queue: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = rabbit_transport()
    seen: list[Delivery] = []
    await transport.start(echo(transport, seen))
    queue, replies = await reply_queue(amqp_channel)
    gone = f"{rabbit_queue}.requester-gone"  # no such queue: its requester went away
    with caplog.at_level(logging.WARNING, logger="gateway.bus.rabbitmq.transport"):
        for reply_to, correlation in ((gone, "c-gone"), (queue.name, "c-here")):
            message = aio_pika.Message(b'{"id": "r"}', reply_to=reply_to, correlation_id=correlation)
            await amqp_channel.default_exchange.publish(message, routing_key=rabbit_queue)
        reply = await asyncio.wait_for(replies.get(), 10)
        await wait_until(lambda: transport.settled == 2 and transport.unroutable == 1)

    assert reply.correlation_id == "c-here"  # the routable reply is not affected
    assert transport.publisher is not None
    assert transport.publisher.lean.lean == 2  # both went the lean way, mandatory and matched by message id
    assert any("c-gone" in r.getMessage() and gone in r.getMessage() for r in caplog.records)
    await transport.drain()
    await transport.aclose()
    assert await ready_count(amqp_channel, rabbit_queue) == 0  # both requests acked: nothing redelivered


async def test_replies_to_direct_reply_to_are_not_mandatory(
    rabbit_transport: TransportFactory, amqp_channel: AbstractChannel, rabbit_queue: str
) -> None:
    # RabbitMQ returns every mandatory message sent to direct reply-to, even those it delivers.
    transport = rabbit_transport()
    await transport.start(echo(transport, []))
    replies: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
    direct = await amqp_channel.get_queue("amq.rabbitmq.reply-to", ensure=False)
    await direct.consume(replies.put, no_ack=True)
    for n in range(20):
        message = aio_pika.Message(b"{}", reply_to="amq.rabbitmq.reply-to", correlation_id=f"d-{n}")
        await amqp_channel.default_exchange.publish(message, routing_key=rabbit_queue)
    got = [await asyncio.wait_for(replies.get(), 10) for _ in range(20)]
    await wait_until(lambda: transport.settled == 20)
    assert sorted(r.correlation_id or "" for r in got) == sorted(f"d-{n}" for n in range(20))
    assert transport.unroutable == 0
    await transport.drain()
    await transport.aclose()


async def test_a_returned_reply_is_an_event_for_the_observers(
    rabbit_transport: TransportFactory, amqp_channel: AbstractChannel, rabbit_queue: str
) -> None:
    events: list[Event] = []

    class Recording:
        def on_event(self, event: Event) -> None:
            events.append(event)

    transport = rabbit_transport(observer=Recording())
    await transport.start(echo(transport, []))
    gone = f"{rabbit_queue}.requester-gone"
    await amqp_channel.default_exchange.publish(
        aio_pika.Message(b"{}", reply_to=gone, correlation_id="c-gone"), routing_key=rabbit_queue
    )
    await wait_until(lambda: transport.settled == 1 and transport.unroutable == 1)
    assert [e for e in events if isinstance(e, ReplyUnroutable)] == [ReplyUnroutable("rabbitmq", gone, "c-gone")]
    await transport.drain()
    await transport.aclose()


async def test_a_large_body_goes_out_frame_by_frame_and_arrives_intact(
    rabbit_transport: TransportFactory, amqp_channel: AbstractChannel
) -> None:
    """Bodies over LARGE_BODY are queued frame by frame (not joined: that held twice the body)."""
    transport = rabbit_transport()
    got: list[bytes] = []
    await transport.start(settling(transport, got))
    queue, replies = await reply_queue(amqp_channel)
    body = bytes(range(256)) * (3 * 4096 + 7)  # about 3 MiB, not a multiple of the frame size
    message = OutboundMessage(
        destination=queue.name, body=body, content_type="application/octet-stream", correlation_id="big"
    )
    await transport.publish(message)
    reply = await asyncio.wait_for(replies.get(), 20)
    assert reply.body == body and reply.correlation_id == "big"
    assert transport.publisher is not None and transport.publisher.lean.lean == 1
    await transport.aclose()


async def test_a_delivery_left_unsettled_is_handed_back_and_a_late_settle_of_it_is_dropped(
    rabbit_transport: TransportFactory, amqp_channel: AbstractChannel, rabbit_queue: str
) -> None:
    """The handler returns without settling (its reply was not confirmed in time): the channel stays
    open, so the transport itself hands the delivery back and the broker redelivers it. Settling the
    first copy afterwards must not ack its tag (already rejected: the broker would close the channel)."""
    transport = rabbit_transport(unsettled_retry=0.05)
    taken: list[Delivery] = []

    async def first_time_unsettled(delivery: Delivery) -> None:
        taken.append(delivery)
        if len(taken) > 1:
            await transport.settle(delivery)

    await transport.start(first_time_unsettled)
    await amqp_channel.default_exchange.publish(aio_pika.Message(b"once"), routing_key=rabbit_queue)
    await wait_until(lambda: transport.settled == 1)
    assert [d.body for d in taken] == [b"once", b"once"] and taken[1].redelivered
    await transport.settle(taken[0])  # late: dropped, not acked
    assert transport.dropped_settles == 1
    await amqp_channel.default_exchange.publish(aio_pika.Message(b"after"), routing_key=rabbit_queue)
    await wait_until(lambda: transport.settled == 2)  # the channel is still the same, still consuming
    assert transport.subscriptions == 1 and transport.ready
