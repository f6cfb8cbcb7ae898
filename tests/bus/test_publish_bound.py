"""The transport's publish promise: confirmed, or BusUnavailableError within its publish timeout.

With the broker gone (every connection cut, new ones refused), a publish must give up after the
configured bound, not after the client library's own (aiokafka: 40 s) nor after someone else's
retries on top. The bound here is 0.5 s and the test allows 10 s, so it fails only when the bound
is not applied at all.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from gateway.bus.base import OutboundMessage
from gateway.bus.embedded import EmbeddedBroker
from gateway.bus.kafka.transport import KafkaTransport
from gateway.bus.rabbitmq.transport import RabbitTransport
from gateway.clock import SystemClock
from gateway.errors import BusUnavailableError
from tests.fixtures.kafka import FAST_GROUP
from tests.fixtures.kafka import TcpProxy as KafkaProxy
from tests.fixtures.proxy import TcpProxy
from tests.fixtures.rabbit import delete_queues

BOUND = 0.5
ALLOWED = 10.0


def reply(destination: str) -> OutboundMessage:
    return OutboundMessage(destination=destination, body=b"{}", content_type="application/json", correlation_id="c1")


async def unused(_: object) -> None:
    raise AssertionError("no requests in this test")


@pytest.fixture
async def rabbit_proxy() -> AsyncIterator[TcpProxy]:
    proxy = await TcpProxy("127.0.0.1", 5672).start()
    yield proxy
    await proxy.aclose()


# The two ways a broker fails a publisher: gone (connections cut, new ones refused), or silent (the
# connection stays open but nothing comes back: a frozen node, a blocked connection, a black-holed
# route; no confirm and no close, so only the publish's own bound ends the wait).
FAULTS = ["gone", "silent"]


@pytest.mark.parametrize("fault", FAULTS)
async def test_a_rabbitmq_publish_gives_up_within_its_publish_timeout(
    rabbit_proxy: TcpProxy, amqp_url: str, fault: str
) -> None:
    queue = f"cmn.requests.test-{uuid.uuid4().hex[:12]}"
    url = f"amqp://guest:guest@127.0.0.1:{rabbit_proxy.port}/"
    transport = RabbitTransport(
        url, queue=queue, telemetry=f"{queue}.telemetry", publish_timeout=BOUND, clock=SystemClock()
    )
    try:
        await transport.start(unused)
        await transport.publish(reply(queue))  # confirmed while the broker answers
        if fault == "gone":
            rabbit_proxy.cut(block=True)
        else:
            rabbit_proxy.freeze()
        with pytest.raises(BusUnavailableError, match=f"in {BOUND} s"):
            await asyncio.wait_for(transport.publish(reply(queue)), ALLOWED)
    finally:
        rabbit_proxy.resume()
        await transport.aclose()
        await delete_queues(amqp_url, queue, f"{queue}.dlq", f"{queue}.telemetry")


@pytest.mark.parametrize("fault", FAULTS)
async def test_a_kafka_publish_gives_up_within_its_publish_timeout(
    kafka_behind_proxy: tuple[EmbeddedBroker, KafkaProxy], fault: str
) -> None:
    _, proxy = kafka_behind_proxy
    topic = f"cmn.replies.{fault}"
    transport = KafkaTransport(f"127.0.0.1:{proxy.port}", publish_timeout=BOUND, clock=SystemClock(), **FAST_GROUP)
    try:
        await transport.publish(reply(topic))  # confirmed while the broker answers
        if fault == "gone":
            proxy.cut()
        else:
            proxy.freeze()
        with pytest.raises(BusUnavailableError, match=f"in {BOUND} s"):
            await asyncio.wait_for(transport.publish(reply(topic)), ALLOWED)
    finally:
        proxy.restore()
        await transport.aclose()
