"""/readyz of a running gateway follows its broker connection: 503 while RabbitMQ is down, 200 again after."""

from __future__ import annotations

import asyncio
import uuid

import aiohttp

from gateway.app import Gateway, load_config
from gateway.bus.rabbitmq.requester import RabbitRequester
from gateway.bus.rabbitmq.transport import RabbitTransport
from gateway.client import GatewayClient
from gateway.clock import SystemClock
from gateway.settings import load_settings
from tests.bus.rabbitmq.node import RabbitNode
from tests.fixtures.upstreams import Upstream


async def readyz_until(http: aiohttp.ClientSession, port: int, status: int, within: float = 20.0) -> None:
    seen: list[int] = []
    async with asyncio.timeout(within):
        while True:
            async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                seen.append(response.status)
            if seen[-1] == status:
                return
            await asyncio.sleep(0.05)


async def test_readyz_is_503_while_the_broker_is_down_and_200_once_it_is_back(
    rabbit_node: RabbitNode, echo_upstream: Upstream
) -> None:
    queue = f"t.requests.{uuid.uuid4().hex[:10]}"
    settings = load_settings(ENABLE_METRICS=True, METRICS_PORT=0)
    config = load_config(settings, {"upstreams": {"echo": {"endpoints": [echo_upstream.url]}}})
    transport = RabbitTransport(rabbit_node.url, queue=queue, reconnect_interval=0.2, clock=SystemClock())
    async with Gateway(config, transports=[transport]) as gateway, aiohttp.ClientSession() as http:
        port = gateway.metrics_port
        assert port is not None
        await readyz_until(http, port, 200)
        await asyncio.to_thread(rabbit_node.stop)
        try:
            await readyz_until(http, port, 503)
            async with http.get(f"http://127.0.0.1:{port}/healthz") as live:
                assert live.status == 200  # alive, only not ready: Kubernetes stops routing, not restarts
        finally:
            await asyncio.to_thread(rabbit_node.start)
        await readyz_until(http, port, 200, within=30)
        async with GatewayClient(RabbitRequester(rabbit_node.url, queue=queue, clock=SystemClock())) as client:
            reply = await client.request("echo", "GET", "/after", timeout=20)
        assert reply.status == 200
