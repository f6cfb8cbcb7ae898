"""The control channel on both real brokers: every subscriber gets each command; answers correlate."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import orjson
import pytest

from gateway.bus.base import ControlChannel, Delivery, Requester
from gateway.bus.kafka.control import KafkaControlChannel
from gateway.bus.kafka.requester import KafkaRequester
from gateway.bus.rabbitmq.control import RabbitControlChannel
from gateway.bus.rabbitmq.requester import RabbitRequester
from gateway.clock import SystemClock
from gateway.control.gather import Gathering
from gateway.envelope.control import Answer
from tests.fixtures.kafka import unique
from tests.fixtures.rabbit import wait_until

Pair = tuple[Callable[[], ControlChannel], Callable[[], Requester]]


@pytest.fixture(params=["rabbitmq", "kafka"])
def broker(request: pytest.FixtureRequest, amqp_url: str) -> Iterator[Pair]:
    clock = SystemClock()
    name = unique("cmn.control.test")
    if request.param == "rabbitmq":
        yield (
            lambda: RabbitControlChannel(amqp_url, clock=clock, exchange=name),
            lambda: RabbitRequester(amqp_url, use_direct_reply_to=False, clock=clock),
        )
        return
    bootstrap = request.getfixturevalue("kafka_bootstrap")
    yield (
        lambda: KafkaControlChannel(bootstrap, clock=clock, topic=name),
        lambda: KafkaRequester(bootstrap, clock=clock),
    )


class Replica:
    """A subscriber that records each command and answers it with its name."""

    def __init__(self, name: str, channel: ControlChannel) -> None:
        self.name = name
        self.channel = channel
        self.commands: list[Delivery] = []

    async def handle(self, delivery: Delivery) -> None:
        self.commands.append(delivery)
        assert delivery.reply_to is not None
        answer = Answer(instance=self.name, type="status", ok=True, result={"seen": len(self.commands)})
        await self.channel.answer(delivery.reply_to, delivery.correlation_id, answer.encode())


async def test_a_command_reaches_every_subscriber_and_each_answer_comes_back_correlated(broker: Pair) -> None:
    make_channel, make_requester = broker
    replicas = [Replica(f"replica-{i}", make_channel()) for i in range(3)]
    caller, requester = make_channel(), make_requester()
    try:
        for replica in replicas:
            await replica.channel.start(replica.handle)
        gathering = Gathering("the-one")
        stray = Gathering("another")  # a second caller's answers must not mix with ours

        def both(reply: object) -> None:
            gathering.on_reply(reply)  # type: ignore[arg-type]
            stray.on_reply(reply)  # type: ignore[arg-type]

        await requester.start(both)
        assert requester.reply_address is not None
        body = orjson.dumps({"type": "status", "upstream": None})
        await caller.publish(body, reply_to=requester.reply_address, correlation_id="the-one")
        await wait_until(lambda: len(gathering.answers) == 3)
        assert sorted(gathering.answers) == ["replica-0", "replica-1", "replica-2"]
        assert stray.answers == {} and stray.ignored == 3
        for replica in replicas:
            [command] = replica.commands
            assert command.body == body
            assert command.correlation_id == "the-one"
            assert command.reply_to == requester.reply_address
        await asyncio.sleep(0.2)
        assert all(len(r.commands) == 1 for r in replicas)  # each once, not once per subscriber
    finally:
        await requester.aclose()
        await caller.aclose()
        for replica in replicas:
            await replica.channel.aclose()


async def test_rabbitmq_commands_carry_the_callers_user_id(amqp_url: str) -> None:
    clock = SystemClock()
    name = unique("cmn.control.test")
    replica, caller = RabbitControlChannel(amqp_url, clock=clock, exchange=name), None
    seen: list[Delivery] = []

    async def record(delivery: Delivery) -> None:
        seen.append(delivery)

    try:
        await replica.start(record)
        caller = RabbitControlChannel(amqp_url, clock=clock, exchange=name, label="cli")
        await caller.publish(b"{}", reply_to="amq.gen-x", correlation_id="c")
        await wait_until(lambda: len(seen) == 1)
        assert seen[0].user_id == "guest"  # validated by the broker: the connection's own user
    finally:
        await replica.aclose()
        if caller is not None:
            await caller.aclose()


async def test_a_handler_that_fails_on_one_command_still_gets_the_next(broker: Pair) -> None:
    make_channel, _ = broker
    replica, caller = make_channel(), make_channel()
    seen: list[bytes] = []

    async def fragile(delivery: Delivery) -> None:
        seen.append(delivery.body)
        if delivery.body == b"poison":
            raise ValueError("a bug in a handler")

    try:
        await replica.start(fragile)
        await caller.publish(b"poison", reply_to="amq.gen-x", correlation_id="1")
        await caller.publish(b"next", reply_to="amq.gen-x", correlation_id="2")
        await wait_until(lambda: len(seen) == 2)
        assert seen == [b"poison", b"next"]
    finally:
        await caller.aclose()
        await replica.aclose()


async def test_commands_arrive_in_the_order_they_were_sent(broker: Pair) -> None:
    # An operator's "breaker open" then "breaker reset" must not be applied reversed. On Kafka the
    # topic has several partitions; the channel keys every command alike so one partition holds them.
    make_channel, _ = broker
    replica, caller = make_channel(), make_channel()
    seen: list[bytes] = []

    async def record(delivery: Delivery) -> None:
        seen.append(delivery.body)

    sent = [str(n).encode() for n in range(40)]
    try:
        await replica.start(record)
        for n, body in enumerate(sent):
            await caller.publish(body, reply_to="amq.gen-x", correlation_id=str(n))
        await wait_until(lambda: len(seen) == len(sent))
        assert seen == sent
    finally:
        await caller.aclose()
        await replica.aclose()
