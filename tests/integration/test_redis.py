"""REDIS_URL in running gateways: two gateways on one queue and one Redis share idempotency and limits.

Requests alternate between the two (RabbitMQ round-robins its consumers; Kafka spreads the records'
keys over partitions the two members split), so each gateway sees some of them: with memory stores
the repeated key would reach the upstream once per gateway, and each gateway would grant a burst.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway.app import Gateway, load_config
from gateway.client import GatewayClient
from gateway.events import RecordingObserver, RequestCompleted
from gateway.settings import load_settings
from tests.fixtures.upstreams import Upstream
from tests.integration.harness import delete_rabbit_topology, transport_and_requester

REDIS = "redis://127.0.0.1:6379/0"
REQUESTS = 12


class TwoGateways:
    def __init__(self, client: GatewayClient, events: tuple[RecordingObserver, RecordingObserver]) -> None:
        self.client = client
        self.events = events

    def completed_by_each(self) -> list[int]:
        return [len(e.of_type(RequestCompleted)) for e in self.events]


@pytest.fixture
def upstream_name() -> str:
    """Unique per test, so its Redis keys (idempotency and bucket keys hold the upstream name) are its own."""
    return f"pay{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def redis_keys(upstream_name: str) -> AsyncIterator[None]:
    yield
    client = aioredis.Redis.from_url(REDIS)
    keys = [k async for k in client.scan_iter(match=f"cmn:*{upstream_name}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
async def two_gateways(broker: tuple[str, str | None], redis_keys: None) -> AsyncIterator[Any]:
    kind, bootstrap = broker
    queue = f"t.requests.{uuid.uuid4().hex[:10]}"
    async with AsyncExitStack() as stack:
        if kind == "rabbitmq":
            stack.push_async_callback(delete_rabbit_topology, queue)

        async def start(upstreams: dict[str, Any]) -> TwoGateways:
            settings = load_settings(ENABLE_METRICS=False, KAFKA_BOOTSTRAP_SERVERS=bootstrap, REDIS_URL=REDIS)
            config = load_config(settings, {"upstreams": upstreams})
            events = (RecordingObserver(), RecordingObserver())
            gateways = []
            for observer in events:
                transport, requester = transport_and_requester(kind, queue, bootstrap)
                gateway = Gateway(config, observers=[observer], transports=[transport])
                gateways.append(await stack.enter_async_context(gateway))
            async with asyncio.timeout(30):  # both members joined (Kafka) / consuming
                while not all(g.ready for g in gateways):  # noqa: ASYNC110 - no readiness event to await
                    await asyncio.sleep(0.05)
            client = await stack.enter_async_context(GatewayClient(requester))
            return TwoGateways(client, events)

        yield start


async def test_a_repeated_idempotency_key_reaches_the_upstream_once_across_two_gateways(
    two_gateways: Any, echo_upstream: Upstream, upstream_name: str
) -> None:
    pair: TwoGateways = await two_gateways({upstream_name: {"endpoints": [echo_upstream.url]}})
    key = f"charge-{uuid.uuid4().hex}"
    replies = []
    for _ in range(REQUESTS):  # one after another: each repeat finds the first one's stored reply
        replies.append(
            await pair.client.request(upstream_name, "POST", "/charges", json={"amount": 5}, idempotency_key=key)
        )
    assert all(r.status == 200 and r.error is None for r in replies)
    assert echo_upstream.hits == 1
    assert len({r.body or str(r.json_) for r in replies}) == 1  # every repeat got the first reply
    assert all(n > 0 for n in pair.completed_by_each()), pair.completed_by_each()


async def test_a_shared_limit_grants_one_burst_across_two_gateways(
    two_gateways: Any, echo_upstream: Upstream, upstream_name: str
) -> None:
    limit = {"upstream": {"rate": 0.001, "burst": 4}, "shared": True}  # no refill during the test
    pair: TwoGateways = await two_gateways({upstream_name: {"endpoints": [echo_upstream.url], "rate_limit": limit}})
    replies = [await pair.client.request(upstream_name, "GET", f"/r/{i}") for i in range(REQUESTS)]
    granted = [r for r in replies if r.error is None]
    refused = [r.error.code for r in replies if r.error is not None]
    assert len(granted) == 4 and echo_upstream.hits == 4
    assert refused == ["rate_limited"] * (REQUESTS - 4)
    assert all(n > 0 for n in pair.completed_by_each()), pair.completed_by_each()
