"""``/admin/upstreams`` on a running gateway, on both brokers, with a real upstream that turns to 503."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
from aiohttp import web

from gateway.telemetry.status_table import render_status
from tests.fixtures.upstreams import StartUpstream
from tests.integration.harness import Stack, StackFactory


def turning_app(state: dict[str, int]) -> web.Application:
    """Answers ``state["status"]``; ``?delay_ms=N`` waits first."""

    async def handle(request: web.Request) -> web.Response:
        await asyncio.sleep(int(request.query.get("delay_ms", "0")) / 1000)
        return web.json_response({"ok": state["status"] < 500}, status=state["status"])

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    return app


async def document(stack: Stack, upstream: str | None = None) -> dict[str, Any]:
    params = {"upstream": upstream} if upstream is not None else {}
    url = f"http://127.0.0.1:{stack.gateway.metrics_port}/admin/upstreams"
    async with aiohttp.ClientSession() as http, http.get(url, params=params) as response:
        assert response.status == 200
        body: dict[str, Any] = await response.json()
        return body


def endpoint(doc: dict[str, Any], upstream: str) -> dict[str, Any]:
    [found] = [u for u in doc["upstreams"] if u["name"] == upstream]
    [only] = found["endpoints"]
    result: dict[str, Any] = only
    return result


async def test_the_document_follows_an_upstream_that_turns_to_503(
    make_stack: StackFactory, start_upstream: StartUpstream
) -> None:
    state = {"status": 200}
    pay = await start_upstream(turning_app(state))
    ok = await start_upstream(turning_app({"status": 200}))
    stack = await make_stack(
        {
            "pay": {
                "endpoints": [pay.url],
                "retry": {"attempts": 1},
                "breaker": {"window_size": 10, "minimum_calls": 3, "open_duration": 60},
                "outlier_detection": {"consecutive_failures": 2, "base_ejection_time": 30},
            },
            "ok": {"endpoints": [ok.url], "rate_limit": {"upstream": {"rate": 0.0001, "burst": 10}}},
        },
        env={"ENABLE_METRICS": True, "METRICS_PORT": 0},
    )
    start = await document(stack)
    assert (start["instance"], start["version"], start["drain"]) == (stack.gateway.instance, "0.1.0", "consuming")
    assert start["transports"] == [{"name": stack.kind, "ready": True, "in_flight": 0}]
    assert start["uptime"] > 0
    assert endpoint(start, "pay")["breaker"]["state"] == "closed"

    assert (await stack.client.request("pay", "GET", "/", timeout=10)).status == 200
    state["status"] = 503
    for _ in range(2):  # 2 of 3 calls failed: over the 50 % threshold, and 2 failures in a row eject
        assert (await stack.client.request("pay", "GET", "/", timeout=10)).status == 503
    refused = await stack.client.request("pay", "GET", "/", timeout=10)
    assert refused.error is not None and refused.error.code == "circuit_open"

    doc = await document(stack, "pay")
    assert [u["name"] for u in doc["upstreams"]] == ["pay"]
    breaker = endpoint(doc, "pay")["breaker"]
    assert (breaker["state"], breaker["calls"], breaker["failure_rate"]) == ("open", 3, 66.7)
    assert breaker["open_until"] - time.time() > 50
    outlier = endpoint(doc, "pay")["outlier"]
    assert outlier["ejections"] == 1
    assert 20 < outlier["ejected_until"] - time.time() <= 30

    table = render_status([doc])
    assert all(len(line) <= 80 for line in table.splitlines())
    assert "open" in table and "66.7" in table


async def test_pool_and_rate_limit_numbers_move_with_requests(
    make_stack: StackFactory, start_upstream: StartUpstream
) -> None:
    ok = await start_upstream(turning_app({"status": 200}))
    stack = await make_stack(
        {"ok": {"endpoints": [ok.url], "rate_limit": {"upstream": {"rate": 0.0001, "burst": 10}}}},
        env={"ENABLE_METRICS": True, "METRICS_PORT": 0},
    )
    before = endpoint(await document(stack), "ok")
    assert (before["pool"]["in_use"], before["pool"]["idle"]) == (0, 0)
    assert (await document(stack))["upstreams"][0]["rate_limit"]["upstream"]["tokens"] == 10.0

    slow = asyncio.ensure_future(stack.client.request("ok", "GET", "/?delay_ms=1500", timeout=10))
    during = await wait_for(stack, lambda d: endpoint(d, "ok")["pool"]["in_use"] == 1)
    assert endpoint(during, "ok")["active"] == 1
    assert during["in_flight"] == 1
    assert (await slow).status == 200
    for _ in range(3):
        assert (await stack.client.request("ok", "GET", "/", timeout=10)).status == 200

    after = await document(stack)
    pool = endpoint(after, "ok")["pool"]
    assert (pool["in_use"], pool["waiting"], pool["idle"]) == (0, 0, 1)  # one keep-alive connection, reused
    tokens = after["upstreams"][0]["rate_limit"]["upstream"]["tokens"]
    assert 6.0 <= tokens < 6.01  # four taken; refill at 0.0001/s adds almost nothing


async def wait_for(stack: Stack, condition: Any, timeout: float = 10.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            doc = await document(stack)
            if condition(doc):
                return doc
            await asyncio.sleep(0.02)
