"""A broker that refuses cmn.control does not stop a gateway: it serves requests, says so, and
starts answering `cmn status` once the broker lets it in (a real `cmn serve`, a real broker user)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import orjson

from gateway.bus.rabbitmq.requester import RabbitRequester
from gateway.client import GatewayClient
from gateway.clock import SystemClock
from tests.bus.rabbitmq.node import RabbitNode
from tests.fixtures.upstreams import Upstream
from tests.integration.process import ServeProcess
from tests.integration.test_fleet_status import cmn_status, instances


async def control_lines(serve: ServeProcess, at_least: int = 1) -> list[dict[str, Any]]:
    """The gateway's ``control.channel`` log lines, once there are ``at_least`` of them (10 s at most)."""
    for _ in range(100):
        lines = [orjson.loads(line) for line in serve.log.splitlines() if line.startswith("{")]
        found = [line for line in lines if line.get("event") == "control.channel"]
        if len(found) >= at_least:
            return found
        await asyncio.sleep(0.1)
    return found


NOT_CONTROL = r"^(?!cmn\.control).*"  # everything but the control exchange and its queues


async def test_a_refused_control_channel_leaves_requests_served_and_is_retried_until_allowed(
    rabbit_node: RabbitNode, echo_upstream: Upstream, tmp_path: Path
) -> None:
    user, password = f"gw-{uuid.uuid4().hex[:6]}", f"pw-{uuid.uuid4().hex}"
    gateway_url = rabbit_node.add_user(user, password)
    rabbit_node.set_permissions(user, NOT_CONTROL)
    instance = f"refused-{uuid.uuid4().hex[:6]}"
    serve = ServeProcess(
        tmp_path,
        {"echo": {"endpoints": [echo_upstream.url]}},
        {"AMQP_URL": gateway_url, "CMN_INSTANCE": instance, "LOG_LEVEL": "INFO"},
    )
    await serve.start()
    try:
        requester = RabbitRequester(rabbit_node.url, clock=SystemClock())
        async with GatewayClient(requester) as client:
            reply = await client.request("echo", "GET", "/still-served", timeout=20)
        assert reply.status == 200

        # The worker serves before the control channel is tried: wait for its verdict.
        refused = await control_lines(serve)
        assert refused and refused[0]["available"] is False and refused[0]["level"] == "warning"
        assert "ACCESS_REFUSED" in refused[0]["reason"] and password not in serve.log

        env = {"AMQP_URL": rabbit_node.url}
        _, document, _ = await cmn_status(env, "--wait", "0.5")
        assert instance not in instances(document)  # it cannot hear the command

        rabbit_node.set_permissions(user, ".*")
        loop = asyncio.get_running_loop()
        end = loop.time() + 45  # retries back off 1, 2, 4, 8, 16 s
        while instance not in instances((await cmn_status(env, "--wait", "0.5"))[1]):
            assert loop.time() < end, serve.log[-2000:]
            await asyncio.sleep(0.5)
        assert [line["available"] for line in await control_lines(serve, 2)] == [False, True]
        assert serve.process is not None and serve.process.returncode is None  # never stopped
    finally:
        await serve.aclose()
