"""Forcing a breaker on a running gateway (what the ``breaker`` control command calls), on both brokers,
with a real upstream: forced open refuses without a hit, reset lets traffic through, and every change
is an event on the stack's telemetry stream."""

from __future__ import annotations

import asyncio
import uuid

from gateway.events import BreakerForced
from tests.fixtures.upstreams import Upstream
from tests.integration.harness import StackFactory


async def test_forced_open_refuses_naming_the_principal_and_reset_lets_traffic_flow(
    make_stack: StackFactory, echo_upstream: Upstream
) -> None:
    name = f"forced{uuid.uuid4().hex[:8]}"
    stack = await make_stack({name: {"endpoints": [echo_upstream.url], "retry": {"attempts": 1}}})
    gateway = stack.gateway
    assert (await stack.client.request(name, "GET", "/", timeout=10)).status == 200
    hits = echo_upstream.hits

    answer = gateway.force_breakers(name, "open", principal="ops", duration=600.0)
    assert answer["ok"] is True and answer["instance"] == gateway.instance
    assert answer["affected"] == [{"upstream": name, "endpoint": echo_upstream.url}]
    [forced] = answer["forced"]
    assert (forced["state"], forced["by"], forced["endpoint"]) == ("open", "ops", echo_upstream.url)
    for _ in range(3):
        reply = await stack.client.request(name, "GET", "/", timeout=10)
        assert reply.error is not None
        assert (reply.error.code, reply.error.message) == ("circuit_open", "forced open by ops")
    assert echo_upstream.hits == hits  # refused without touching the upstream
    [endpoint] = gateway.status(name).to_json()["upstreams"][0]["endpoints"]
    assert endpoint["breaker"]["forced"] == {"state": "open", "by": "ops", "until": forced["until"]}
    assert gateway.forced_breakers() == [forced]

    reset = gateway.force_breakers(name, "automatic", principal="ops")
    assert reset["ok"] is True and reset["forced"] == []
    assert (await stack.client.request(name, "GET", "/", timeout=10)).status == 200
    assert echo_upstream.hits == hits + 1

    changes = [e for e in stack.events.of_type(BreakerForced) if isinstance(e, BreakerForced) and e.upstream == name]
    assert [(e.state, e.principal, e.until is None) for e in changes] == [
        ("open", "ops", False),
        ("automatic", "ops", True),
    ]
    seen: list[dict[str, object]] = []
    async with asyncio.timeout(30):
        async for event in stack.client.telemetry(from_beginning=True):
            if event.type == "breaker.forced" and event.data.get("upstream") == name:
                seen.append(event.data)
                if len(seen) == 2:
                    break
    assert [(e["state"], e["principal"], e["endpoint"]) for e in seen] == [
        ("open", "ops", echo_upstream.url),
        ("automatic", "ops", echo_upstream.url),
    ]


async def test_the_gateway_answers_a_bad_command_with_a_clear_error(
    make_stack: StackFactory, echo_upstream: Upstream
) -> None:
    stack = await make_stack({"echo": {"endpoints": [echo_upstream.url]}})
    gateway = stack.gateway
    unknown = gateway.force_breakers("nope", "open", principal="ops")
    assert unknown == {
        "instance": gateway.instance,
        "ok": False,
        "code": "unknown_upstream",
        "error": "upstream 'nope' is not configured",
    }
    endpoint = gateway.force_breakers("echo", "open", principal="ops", endpoint="http://127.0.0.1:1")
    assert (endpoint["ok"], endpoint["code"]) == (False, "invalid_request")
    assert "has no endpoint 'http://127.0.0.1:1'" in endpoint["error"]
    state = gateway.force_breakers("echo", "half_open", principal="ops")
    assert state["ok"] is False and "half_open" in state["error"]
    assert gateway.forced_breakers() == []
    late = gateway.apply_forced_breakers(
        [{"upstream": "echo", "endpoint": echo_upstream.url, "state": "closed", "by": "ops", "until": 1.0}]
    )
    assert late == {"instance": gateway.instance, "applied": []}  # expired long ago
