"""A parked request survives a SIGKILL of the gateway that parked it: real `cmn serve` processes.

The request parks on a 3 s tier while its upstream is down; the gateway is killed (-9) while the
copy waits on the tier; a new gateway starts (the same PARK_SECRET, as a fleet shares it), the
upstream comes back, and the caller gets one answer, 200, with one call made upstream.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import pytest

from gateway.bus.base import park_destination
from gateway.bus.kafka.requester import KafkaRequester
from gateway.bus.rabbitmq.requester import RabbitRequester
from gateway.client import GatewayClient
from gateway.clock import SystemClock
from tests.fixtures.kafka import FAST_GROUP, read_topic
from tests.fixtures.rabbit import AMQP_URL, ready_count
from tests.integration.process import ServeProcess
from tests.parking.conftest import PARK_SECRET, Switchable, delete_rabbit

DELAY = 3


@pytest.fixture(params=["rabbitmq", "kafka"])
def broker_env(request: pytest.FixtureRequest) -> dict[str, str]:
    queue = f"t.requests.{uuid.uuid4().hex[:10]}"
    common = {"CMN_REQUESTS_QUEUE": queue, "PARK_SECRET": PARK_SECRET}
    if request.param == "rabbitmq":
        return {"AMQP_URL": AMQP_URL, **common}
    return {
        "KAFKA_BOOTSTRAP_SERVERS": request.getfixturevalue("kafka_bootstrap"),
        "KAFKA_GROUP_ID": f"g.{queue}",
        "KAFKA_SESSION_TIMEOUT_MS": str(FAST_GROUP["session_timeout_ms"]),
        **common,
    }


@pytest.fixture
async def client(broker_env: dict[str, str]) -> AsyncIterator[GatewayClient]:
    queue = broker_env["CMN_REQUESTS_QUEUE"]
    if "AMQP_URL" in broker_env:
        requester: RabbitRequester | KafkaRequester = RabbitRequester(AMQP_URL, queue=queue, clock=SystemClock())
    else:
        requester = KafkaRequester(broker_env["KAFKA_BOOTSTRAP_SERVERS"], topic=queue, clock=SystemClock())
    async with GatewayClient(requester) as c:
        yield c
    if "AMQP_URL" in broker_env:
        await delete_rabbit(queue, (DELAY,))


async def wait_parked(env: dict[str, str]) -> None:
    tier = park_destination(env["CMN_REQUESTS_QUEUE"], DELAY)
    if "AMQP_URL" not in env:
        await read_topic(env["KAFKA_BOOTSTRAP_SERVERS"], tier, until=lambda records: len(records) >= 1, within=30)
        return
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        async with asyncio.timeout(30):
            while True:
                try:
                    if await ready_count(channel, tier) == 1:
                        return
                except aio_pika.exceptions.ChannelClosed:  # not declared yet
                    channel = await connection.channel()
                await asyncio.sleep(0.02)  # the broker's count has no event to wait on


async def test_a_parked_request_survives_a_sigkill_of_its_gateway(
    tmp_path: Path, switchable: Switchable, broker_env: dict[str, str], client: GatewayClient
) -> None:
    upstreams = {
        "svc": {
            "endpoints": [switchable.url],
            "retry": {"attempts": 1},
            "timeouts": {"connect": 0.5},
            "park": {"delays": [DELAY]},
        }
    }
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    first = ServeProcess(tmp_path / "first", upstreams, broker_env)
    second = ServeProcess(tmp_path / "second", upstreams, broker_env)
    try:
        await first.start()
        call = asyncio.create_task(client.request("svc", "GET", "/survivor", timeout=40))
        await wait_parked(broker_env)
        await asyncio.sleep(0.3)  # the original's settle reaches the broker (Kafka commits every 75 ms)
        first.kill()
        await first.wait()
        assert not call.done()
        await switchable.up()
        await second.start()
        reply = await asyncio.wait_for(call, 40)
    finally:
        await first.aclose()
        await second.aclose()
    assert reply.status == 200 and reply.json_ == {"method": "GET", "path": "/survivor"}
    assert reply.attempts == 2  # the try before parking, counted across the kill, and the good one
    assert switchable.hits == 1
