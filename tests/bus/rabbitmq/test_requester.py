"""RabbitRequester against the real broker and a RabbitTransport echoing requests back."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from gateway.bus.base import Delivery, OutboundMessage, ReplyMessage
from gateway.bus.rabbitmq.requester import RabbitRequester
from gateway.bus.rabbitmq.transport import RabbitTransport
from tests.fixtures.rabbit import RequesterFactory, TransportFactory, wait_until


def echo(transport: RabbitTransport) -> Callable[[Delivery], Awaitable[None]]:
    async def handler(delivery: Delivery) -> None:
        assert delivery.reply_to is not None
        await transport.publish(
            OutboundMessage(
                destination=delivery.reply_to,
                body=b"echo:" + delivery.body,
                content_type=delivery.content_type,
                correlation_id=delivery.correlation_id,
                headers=delivery.headers,
            )
        )
        await transport.publish_telemetry("request.completed", delivery.body, {})
        await transport.settle(delivery)

    return handler


async def started(requester: RabbitRequester) -> dict[str, ReplyMessage]:
    replies: dict[str, ReplyMessage] = {}

    def on_reply(reply: ReplyMessage) -> None:
        assert reply.correlation_id is not None
        replies[reply.correlation_id] = reply

    await requester.start(on_reply)
    return replies


@pytest.mark.parametrize("direct", [True, False], ids=["direct-reply-to", "exclusive-queue"])
async def test_concurrent_round_trips_each_correlated(
    rabbit_transport: TransportFactory, rabbit_requester: RequesterFactory, direct: bool
) -> None:
    transport = rabbit_transport(max_in_flight=64)
    await transport.start(echo(transport))
    requester = rabbit_requester(use_direct_reply_to=direct)
    replies = await started(requester)
    if direct:
        assert requester.reply_to == "amq.rabbitmq.reply-to"
    else:
        assert requester.reply_to is not None
        assert requester.reply_to.startswith("amq.gen-")

    await asyncio.gather(
        *(
            requester.send(
                b"%d" % n,
                content_type="application/msgpack",
                correlation_id=f"c{n}",
                headers={"traceparent": f"00-{n:032x}-{n:016x}-01"},
            )
            for n in range(300)
        )
    )
    await wait_until(lambda: len(replies) == 300)

    for n in range(300):
        reply = replies[f"c{n}"]
        assert reply.body == b"echo:%d" % n
        assert reply.content_type == "application/msgpack"
        assert reply.headers["traceparent"] == f"00-{n:032x}-{n:016x}-01"
    # The SDK's connection writes coalesced, as the gateway's does (the decision in bus/rabbitmq/connection.py).
    assert requester.write_stats.frames > requester.write_stats.writes


async def test_requests_sent_before_any_gateway_runs_wait_in_the_queue(
    rabbit_transport: TransportFactory, rabbit_requester: RequesterFactory
) -> None:
    requester = rabbit_requester()
    replies = await started(requester)
    await requester.send(b"early", content_type="application/json", correlation_id="e1", headers={})

    transport = rabbit_transport()
    await transport.start(echo(transport))
    await wait_until(lambda: "e1" in replies)
    assert replies["e1"].body == b"echo:early"


async def test_telemetry_stream_sees_new_events_and_replays_from_the_start(
    rabbit_transport: TransportFactory, rabbit_requester: RequesterFactory
) -> None:
    transport = rabbit_transport()
    await transport.start(echo(transport))
    requester = rabbit_requester()
    await started(requester)
    await transport.publish_telemetry("request.completed", b'{"n": "before"}', {})

    live = requester.telemetry()
    await live.start()  # subscribed at "next": only what is published from now on
    for n in range(3):
        await transport.publish_telemetry("request.completed", b'{"n": %d}' % n, {})
    live_events = [await asyncio.wait_for(anext(live), 10) for _ in range(3)]
    assert live_events == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']

    replay = requester.telemetry(from_beginning=True)
    replayed = [await asyncio.wait_for(anext(replay), 10) for _ in range(4)]
    assert replayed == [b'{"n": "before"}', b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']

    await replay.aclose()
    with pytest.raises(StopAsyncIteration):
        await anext(replay)


async def test_the_gateway_path_emits_one_telemetry_event_per_request(
    rabbit_transport: TransportFactory, rabbit_requester: RequesterFactory
) -> None:
    transport = rabbit_transport()
    await transport.start(echo(transport))
    requester = rabbit_requester()
    replies = await started(requester)
    stream = requester.telemetry()
    await stream.start()

    for n in range(20):
        await requester.send(b"r%d" % n, content_type="application/json", correlation_id=f"{n}", headers={})
    await wait_until(lambda: len(replies) == 20)

    events = {await asyncio.wait_for(anext(stream), 10) for _ in range(20)}
    assert events == {b"r%d" % n for n in range(20)}
