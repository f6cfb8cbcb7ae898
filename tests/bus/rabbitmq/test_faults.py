"""Connection loss and broker restarts, on a private RabbitMQ node (the shared one is never touched)."""

from __future__ import annotations

import asyncio
import ssl
import uuid
from collections.abc import AsyncIterator

import pytest

from gateway.bus.base import Delivery, OutboundMessage, ReplyMessage
from gateway.bus.rabbitmq.requester import RabbitRequester
from gateway.bus.rabbitmq.transport import RabbitTransport
from gateway.clock import SystemClock
from gateway.errors import BusUnavailableError, MessageRejectedError
from tests.bus.rabbitmq.node import MAX_MESSAGE_SIZE, RabbitNode
from tests.fixtures.rabbit import wait_until

RECOVERY = 60.0  # a restart takes about 5-7 s here; generous for a loaded 2-core box


class EchoGateway:
    """A transport that answers every request with its body; ``hold`` makes it keep one unsettled."""

    def __init__(self, transport: RabbitTransport) -> None:
        self.transport = transport
        self.served: list[bytes] = []
        self.held: list[Delivery] = []
        self.hold = False

    async def handle(self, delivery: Delivery) -> None:
        if self.hold:
            self.held.append(delivery)
            return
        assert delivery.reply_to is not None
        self.served.append(delivery.body)
        reply = OutboundMessage(
            delivery.reply_to, b"echo:" + delivery.body, "application/json", delivery.correlation_id
        )
        await self.transport.publish(reply)
        await self.transport.publish_telemetry("request.completed", delivery.body, {})
        await self.transport.settle(delivery)


@pytest.fixture
async def pair(rabbit_node: RabbitNode) -> AsyncIterator[tuple[EchoGateway, RabbitRequester, dict[str, ReplyMessage]]]:
    queue = f"cmn.requests.fault-{uuid.uuid4().hex[:10]}"
    transport = RabbitTransport(rabbit_node.url, queue=queue, reconnect_interval=0.2, clock=SystemClock())
    gateway = EchoGateway(transport)
    await transport.start(gateway.handle)
    requester = RabbitRequester(rabbit_node.url, queue=queue, reconnect_interval=0.2, clock=SystemClock())
    replies: dict[str, ReplyMessage] = {}
    await requester.start(lambda reply: replies.__setitem__(reply.correlation_id or "", reply))
    yield gateway, requester, replies
    await requester.aclose()
    await transport.aclose()


async def round_trip(requester: RabbitRequester, replies: dict[str, ReplyMessage], key: str) -> None:
    await requester.send(key.encode(), content_type="application/json", correlation_id=key, headers={})
    await wait_until(lambda: key in replies, within=RECOVERY)
    assert replies[key].body == b"echo:" + key.encode()


async def test_dropped_connections_recover_and_unsettled_work_comes_back(
    rabbit_node: RabbitNode, pair: tuple[EchoGateway, RabbitRequester, dict[str, ReplyMessage]]
) -> None:
    gateway, requester, replies = pair
    transport = gateway.transport
    await round_trip(requester, replies, "before")
    gateway.hold = True
    await requester.send(b"held", content_type="application/json", correlation_id="held", headers={})
    await wait_until(lambda: len(gateway.held) == 1)

    gateway.hold = False  # the held one stays unsettled; its redelivery is to be served
    await asyncio.to_thread(rabbit_node.close_connections)
    # Its channel is gone: the ack cannot be sent, and must not raise either.
    await transport.settle(gateway.held[0])
    assert transport.dropped_settles == 1

    await wait_until(lambda: transport.subscriptions == 2 and transport.ready, within=RECOVERY)
    await wait_until(lambda: b"held" in gateway.served, within=RECOVERY)  # redelivered after recovery
    # The requester's reply address died with its connection; new requests use the new one.
    await round_trip(requester, replies, "after")


async def test_broker_restart_the_transport_carries_on(
    rabbit_node: RabbitNode, pair: tuple[EchoGateway, RabbitRequester, dict[str, ReplyMessage]]
) -> None:
    gateway, requester, replies = pair
    await round_trip(requester, replies, "before-restart")

    restart = asyncio.create_task(asyncio.to_thread(rabbit_node.restart))
    await wait_until(lambda: not gateway.transport.ready, within=RECOVERY)
    # Sent while the broker is down or coming back: the send waits for the connection, then confirms.
    during = asyncio.create_task(round_trip(requester, replies, "during-restart"))
    await restart
    await asyncio.wait_for(during, RECOVERY)
    await wait_until(lambda: gateway.transport.subscriptions == 2 and gateway.transport.ready, within=RECOVERY)
    await round_trip(requester, replies, "after-restart")
    assert gateway.served[-2:] == [b"during-restart", b"after-restart"]


async def test_tls_connections_carry_requests_replies_and_telemetry(rabbit_node: RabbitNode) -> None:
    context = ssl.create_default_context(cafile=str(rabbit_node.tls.ca if rabbit_node.tls else ""))
    queue = f"cmn.requests.tls-{uuid.uuid4().hex[:10]}"
    transport = RabbitTransport(rabbit_node.tls_url, queue=queue, ssl_context=context, clock=SystemClock())
    gateway = EchoGateway(transport)
    requester = RabbitRequester(rabbit_node.tls_url, queue=queue, ssl_context=context, clock=SystemClock())
    replies: dict[str, ReplyMessage] = {}
    async with transport, requester:
        await transport.start(gateway.handle)
        await requester.start(lambda reply: replies.__setitem__(reply.correlation_id or "", reply))
        stream = requester.telemetry()
        await stream.start()
        await round_trip(requester, replies, "over-tls")
        assert await asyncio.wait_for(anext(stream), RECOVERY) == b"over-tls"


async def test_tls_refuses_a_broker_it_does_not_trust(rabbit_node: RabbitNode) -> None:
    transport = RabbitTransport(rabbit_node.tls_url, ssl_context=ssl.create_default_context(), clock=SystemClock())

    async def unused(delivery: Delivery) -> None:
        raise AssertionError("never connected")

    with pytest.raises(BusUnavailableError, match="CERTIFICATE_VERIFY_FAILED") as caught:
        await transport.start(unused)
    assert "guest:guest" not in str(caught.value)  # no password in the message
    await transport.aclose()


async def test_a_message_the_broker_refuses_fails_alone(
    rabbit_node: RabbitNode, pair: tuple[EchoGateway, RabbitRequester, dict[str, ReplyMessage]]
) -> None:
    gateway, requester, replies = pair
    too_large = OutboundMessage("anywhere", b"x" * (MAX_MESSAGE_SIZE + 1), "application/json", "big")
    fine = [OutboundMessage("anywhere", b"%d" % n, "application/json", f"c{n}") for n in range(50)]

    results = await asyncio.gather(
        gateway.transport.publish(too_large),
        *(gateway.transport.publish(message) for message in fine),
        return_exceptions=True,
    )

    assert isinstance(results[0], MessageRejectedError)
    assert "larger than" in str(results[0])
    assert results[1:] == [None] * 50  # caught in the same channel closure, then confirmed on the next
    with pytest.raises(MessageRejectedError):
        await gateway.transport.publish(OutboundMessage("q" * 256, b"x", "application/json", None))
    await round_trip(requester, replies, "still-serving")
