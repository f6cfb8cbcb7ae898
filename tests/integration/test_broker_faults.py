"""Broker connection loss: the gateway reconnects and carries on; requests published meanwhile are answered."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from gateway.app import Gateway, load_config
from gateway.bus.rabbitmq.requester import RabbitRequester
from gateway.bus.rabbitmq.transport import RabbitTransport
from gateway.client import GatewayClient
from gateway.clock import SystemClock
from gateway.settings import load_settings
from tests.fixtures.proxy import TcpProxy
from tests.fixtures.rabbit import AMQP_URL
from tests.fixtures.upstreams import Upstream
from tests.integration.harness import delete_rabbit_topology


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    p = await TcpProxy("127.0.0.1", 5672).start()
    yield p
    await p.aclose()


async def test_gateway_survives_rabbitmq_connection_drop(proxy: TcpProxy, echo_upstream: Upstream) -> None:
    queue = f"t.requests.{uuid.uuid4().hex[:10]}"
    via_proxy = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
    transport = RabbitTransport(via_proxy, queue=queue, reconnect_interval=0.2, clock=SystemClock())
    config = load_config(
        load_settings(ENABLE_METRICS=False), {"upstreams": {"echo": {"endpoints": [echo_upstream.url]}}}
    )
    async with (
        Gateway(config, transports=[transport]) as gateway,
        GatewayClient(RabbitRequester(AMQP_URL, queue=queue, clock=SystemClock())) as client,
    ):
        before = await asyncio.gather(*(client.request("echo", "GET", f"/before/{i}") for i in range(20)))
        assert all(r.status == 200 for r in before)
        proxy.cut(block=True)
        await asyncio.sleep(0.3)
        assert not gateway.ready
        during = [asyncio.create_task(client.request("echo", "GET", f"/during/{i}", timeout=30)) for i in range(50)]
        await asyncio.sleep(1.0)
        proxy.resume()
        replies = await asyncio.wait_for(asyncio.gather(*during), timeout=30)
        assert [r.json_["path"] for r in replies] == [f"/during/{i}" for i in range(50)]
        assert all(r.error is None for r in replies)
        assert proxy.connections >= 2  # it really reconnected
        for _ in range(50):
            if gateway.ready:
                break
            await asyncio.sleep(0.1)
        assert gateway.ready
    await delete_rabbit_topology(queue)
