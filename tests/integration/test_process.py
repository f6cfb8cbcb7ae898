"""Delivery guarantees with the gateway as a real process: SIGKILL loses nothing, SIGTERM drains."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import pytest
from aiohttp import web

from gateway.bus.base import ReplyMessage
from gateway.bus.kafka.requester import KafkaRequester
from gateway.bus.rabbitmq.requester import RabbitRequester
from gateway.client import GatewayClient
from gateway.clock import SystemClock
from gateway.envelope.codec import decode_reply, encode_request
from gateway.envelope.models import ReplyEnvelope
from tests.fixtures.kafka import FAST_GROUP, committed_offsets, read_topic
from tests.fixtures.rabbit import AMQP_URL, ready_count
from tests.fixtures.upstreams import StartUpstream
from tests.integration.harness import delete_rabbit_topology
from tests.integration.process import ServeProcess


class SlowUpstream:
    """Counts calls per path and answers after ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.calls: Counter[str] = Counter()

    def app(self) -> web.Application:
        async def handle(request: web.Request) -> web.Response:
            self.calls[request.path] += 1
            await asyncio.sleep(self.delay)
            return web.json_response({"path": request.path})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        return app


@pytest.fixture(params=["rabbitmq", "kafka"])
def broker_env(request: pytest.FixtureRequest) -> dict[str, str]:
    queue = f"t.requests.{uuid.uuid4().hex[:10]}"
    if request.param == "rabbitmq":
        return {"AMQP_URL": AMQP_URL, "CMN_REQUESTS_QUEUE": queue}
    bootstrap = request.getfixturevalue("kafka_bootstrap")
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "CMN_REQUESTS_QUEUE": queue,
        "KAFKA_GROUP_ID": f"g.{queue}",
        "KAFKA_SESSION_TIMEOUT_MS": str(FAST_GROUP["session_timeout_ms"]),
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
        await delete_rabbit_topology(queue)


async def _wait_for(predicate: object, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():  # type: ignore[operator]
        if loop.time() > end:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.02)


def _send_all(client: GatewayClient, n: int, timeout: float) -> list[asyncio.Task[ReplyMessage]]:
    async def one(i: int) -> ReplyMessage:
        raw = encode_request(client.envelope(f"r{i}", "slow", "GET", f"/r/{i}", timeout=timeout))
        return await client.send_raw(raw, correlation_id=f"r{i}", timeout=timeout)

    return [asyncio.create_task(one(i)) for i in range(n)]


async def test_sigkill_mid_batch_loses_nothing(
    tmp_path: Path, start_upstream: StartUpstream, broker_env: dict[str, str], client: GatewayClient
) -> None:
    slow = SlowUpstream(delay=0.05)
    upstream = await start_upstream(slow.app())
    upstreams = {"slow": {"endpoints": [upstream.url], "pool": {"max_size": 100}}}
    env = {**broker_env, "MAX_IN_FLIGHT": "50"}
    first = ServeProcess(tmp_path, upstreams, env)
    second = ServeProcess(tmp_path, upstreams, env)
    try:
        await first.start()
        total = 400
        tasks = _send_all(client, total, timeout=90)
        await _wait_for(lambda: sum(slow.calls.values()) >= 100, timeout=60)
        first.kill()
        await first.wait()
        answered_before_restart = sum(t.done() for t in tasks)
        await second.start()
        replies = await asyncio.wait_for(asyncio.gather(*tasks), timeout=90)
    finally:
        await first.aclose()
        await second.aclose()
    assert len(replies) == total
    assert answered_before_restart < total, "the kill came too late to test anything"
    envelopes = [ReplyEnvelope.model_validate(decode_reply(r.body, r.content_type)) for r in replies]
    failed = [(e.id, e.status, e.error) for e in envelopes if e.status != 200 or e.error is not None]
    assert failed == []  # answered, and answered well: the second gateway forwarded what the first lost
    assert set(slow.calls) == {f"/r/{i}" for i in range(total)}
    duplicates = sum(c - 1 for c in slow.calls.values())
    print(f"\n[{broker_env}] killed after {answered_before_restart}/{total} replies; duplicates: {duplicates}")
    assert duplicates <= 100  # at most what was in flight (prefetch/in-flight) at the kill


async def test_sigterm_drains_in_flight_work_and_exits_zero(
    tmp_path: Path, start_upstream: StartUpstream, broker_env: dict[str, str], client: GatewayClient
) -> None:
    slow = SlowUpstream(delay=0.5)
    upstream = await start_upstream(slow.app())
    serve = ServeProcess(tmp_path, {"slow": {"endpoints": [upstream.url], "pool": {"max_size": 100}}}, broker_env)
    try:
        await serve.start()
        tasks = _send_all(client, 40, timeout=60)
        await _wait_for(lambda: sum(slow.calls.values()) >= 40, timeout=60)
        serve.terminate()
        code = await serve.wait(timeout=30)
        done = [t for t in tasks if t.done() and not t.cancelled() and t.exception() is None]
    finally:
        await serve.aclose()
        for t in tasks:
            t.cancel()
    assert code == 0, serve.log
    assert len(done) == 40, serve.log
    assert await left_unsettled(broker_env, sent=40) == 0, "the drained gateway left work unacked or uncommitted"


async def left_unsettled(broker_env: dict[str, str], sent: int) -> int:
    """Requests the broker would deliver again: on RabbitMQ the queue's messages (an unacked one is
    ready again once its consumer's connection is gone); on Kafka the records past the group's commits."""
    queue = broker_env["CMN_REQUESTS_QUEUE"]
    if "AMQP_URL" in broker_env:
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel()
            return await ready_count(channel, queue)
    bootstrap = broker_env["KAFKA_BOOTSTRAP_SERVERS"]
    # Each partition's end, from its records (Tansu's ListOffsets answered 1 for every partition here).
    records = await read_topic(bootstrap, queue, until=lambda got: len(got) >= sent)
    ends = Counter(r.partition for r in records)
    committed = await committed_offsets(bootstrap, queue, broker_env["KAFKA_GROUP_ID"])
    return sum(end - (committed.get(p) or 0) for p, end in ends.items())
