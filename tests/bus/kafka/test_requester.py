"""KafkaRequester against a real Tansu broker: request → transport → reply round trip, telemetry."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson
import pytest

from gateway.bus.base import Delivery, Handler, OutboundMessage, ReplyMessage
from gateway.bus.kafka.requester import KafkaRequester
from gateway.bus.kafka.transport import KafkaTransport
from gateway.clock import SystemClock
from tests.fixtures.kafka import KafkaTransportFactory, read_topic, topics, unique

RequesterFactory = Callable[..., KafkaRequester]


def echo(transport: KafkaTransport) -> Handler:
    """A handler answering each request on its reply topic, the way the pipeline does."""

    async def handle(delivery: Delivery) -> None:
        assert delivery.reply_to is not None
        reply = OutboundMessage(
            destination=delivery.reply_to,
            body=b"reply:" + delivery.body,
            content_type=delivery.content_type,
            correlation_id=delivery.correlation_id,
            headers={k: v for k, v in delivery.headers.items() if k == "traceparent"},
        )
        await transport.publish(reply)
        await transport.settle(delivery)

    return handle


async def test_requests_reach_the_transport_and_replies_come_back_correlated(
    kafka_transport: KafkaTransportFactory, kafka_requester: RequesterFactory
) -> None:
    transport = kafka_transport()
    await transport.start(echo(transport))
    requester = kafka_requester(topic=transport.topic)
    assert requester.reply_topic.startswith("cmn.replies.")
    replies: dict[str, ReplyMessage] = {}
    all_in = asyncio.Event()
    count = 200

    def on_reply(reply: ReplyMessage) -> None:
        assert reply.correlation_id is not None
        replies[reply.correlation_id] = reply
        if len(replies) == count:
            all_in.set()

    await requester.start(on_reply)
    sends = [
        requester.send(
            b"req-%d" % i,
            content_type="application/msgpack" if i % 2 else "application/json",
            correlation_id=f"c{i}",
            headers={"traceparent": f"00-{i:032x}-{i:016x}-01"},
        )
        for i in range(count)
    ]
    await asyncio.gather(*sends)
    await asyncio.wait_for(all_in.wait(), 30)
    for i in range(count):
        reply = replies[f"c{i}"]
        assert reply.body == b"reply:req-%d" % i
        assert reply.content_type == ("application/msgpack" if i % 2 else "application/json")
        assert reply.headers["traceparent"] == f"00-{i:032x}-{i:016x}-01"


async def test_a_reply_topic_can_be_chosen_and_a_failing_callback_does_not_stop_replies(
    kafka_transport: KafkaTransportFactory, kafka_requester: RequesterFactory
) -> None:
    transport = kafka_transport()
    await transport.start(echo(transport))
    requester = kafka_requester(topic=transport.topic, reply_topic="t.replies.mine")
    seen: list[str | None] = []
    both = asyncio.Event()

    def on_reply(reply: ReplyMessage) -> None:
        seen.append(reply.correlation_id)
        if len(seen) == 2:
            both.set()
        if reply.correlation_id == "first":
            raise RuntimeError("callback bug")

    await requester.start(on_reply)
    for cid in ("first", "second"):
        await requester.send(b"x", content_type="application/json", correlation_id=cid, headers={})
    # Each reply's key picks its partition, and Kafka orders records only within one: "second" may
    # come first. Whichever order, the callback that raised must not stop the other reply.
    await asyncio.wait_for(both.wait(), 20)
    assert sorted(seen, key=str) == ["first", "second"]
    assert requester.reply_topic == "t.replies.mine"


async def test_telemetry_stream_yields_events_published_by_the_transport(
    kafka_transport: KafkaTransportFactory, kafka_requester: RequesterFactory, kafka_bootstrap: str
) -> None:
    transport = kafka_transport()
    requester = kafka_requester()
    stream = requester.telemetry()
    await stream.start()  # positioned at the end now: only what follows is seen
    events = [orjson.dumps({"type": "request.completed", "n": n}) for n in range(3)]
    for event in events:
        await transport.publish_telemetry("request.completed", event, {"traceparent": "t"})
    got = [await asyncio.wait_for(stream.__anext__(), 10) for _ in events]
    assert sorted(got) == sorted(events)
    await stream.aclose()

    records = await read_topic(kafka_bootstrap, "cmn.telemetry", until=lambda rs: len(rs) >= 3)
    headers = dict(records[0].headers)
    assert headers["type"] == b"request.completed"
    assert headers["content-type"] == b"application/json"
    assert headers["traceparent"] == b"t"

    replay = requester.telemetry(from_beginning=True)
    seen = []
    async for body in replay:
        seen.append(body)
        if len(seen) == 3:
            break
    await replay.aclose()
    assert sorted(seen) == sorted(events)


async def test_closing_a_telemetry_stream_ends_an_iteration_waiting_on_it(
    kafka_requester: RequesterFactory,
) -> None:
    stream = kafka_requester().telemetry()
    await stream.start()
    waiting = asyncio.create_task(stream.__anext__())
    await asyncio.sleep(0.2)  # parked in a fetch: nothing is published
    await stream.aclose()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, 5)


async def test_closing_deletes_a_reply_topic_of_its_own_and_keeps_a_chosen_one(kafka_bootstrap: str) -> None:
    own = KafkaRequester(kafka_bootstrap, fetch_max_wait_ms=1, clock=SystemClock())
    chosen = KafkaRequester(
        kafka_bootstrap, reply_topic=unique("t.chosen-replies"), fetch_max_wait_ms=1, clock=SystemClock()
    )
    for requester in (own, chosen):
        await requester.start(lambda reply: None)
    assert {own.reply_topic, chosen.reply_topic} <= await topics(kafka_bootstrap)

    await own.aclose()
    await chosen.aclose()

    remaining = await topics(kafka_bootstrap)
    assert own.reply_topic not in remaining
    assert chosen.reply_topic in remaining


async def test_a_broker_that_cannot_delete_leaves_the_close_clean(kafka_bootstrap: str) -> None:
    requester = KafkaRequester(kafka_bootstrap, fetch_max_wait_ms=1, delete_reply_topic=True, clock=SystemClock())
    await requester.start(lambda reply: None)
    await requester._delete_topic("no.such.topic." + unique("t"))  # the broker answers with an error code
    await requester.aclose()
    assert requester.reply_topic not in await topics(kafka_bootstrap)
