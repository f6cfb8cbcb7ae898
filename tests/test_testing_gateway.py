"""``gateway.testing.InMemoryGateway``: the whole gateway in a test, no broker, the test's own upstreams.
These tests are also the example the README points users at."""

from __future__ import annotations

import pytest
from aiohttp import web

from gateway.errors import ForbiddenError, UnknownUpstreamError, UpstreamStatusError
from gateway.events import RequestCompleted
from gateway.testing import InMemoryGateway, ReplyMessage


async def test_a_service_test_with_a_handler_as_the_upstream() -> None:
    seen: list[str] = []

    async def payments(request: web.Request) -> web.Response:
        seen.append(f"{request.method} {request.path_qs} {await request.text()}")
        return web.json_response({"id": "ch_1"}, status=201)

    async with InMemoryGateway({"payments": payments}) as gateway, gateway.client() as client:
        reply = await client.request("payments", "POST", "/v1/charges?x=1", json={"amount": 5})
    assert reply.raise_for_error().status == 201 and reply.json_ == {"id": "ch_1"}
    assert seen == ['POST /v1/charges?x=1 {"amount":5}']
    [completed] = gateway.events.of_type(RequestCompleted)
    assert isinstance(completed, RequestCompleted) and completed.upstream == "payments"


async def test_an_aiohttp_app_and_real_gateway_behaviour_retries_and_errors() -> None:
    calls = 0

    async def flaky(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.Response(status=503 if calls == 1 else 200, text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", flaky)
    config = {"ledger": {"retry": {"attempts": 2, "backoff_base": 0.001}}}
    async with InMemoryGateway({"ledger": app}, config=config) as gateway, gateway.client() as client:
        reply = await client.request("ledger", "GET", "/balance")
        missing = await client.request("nosuch", "GET", "/")
    assert reply.status == 200 and reply.attempts == 2 and calls == 2  # the gateway's retry, for real
    with pytest.raises(UnknownUpstreamError):
        missing.raise_for_error()
    assert len(gateway.transport.dead_letters) == 1  # an unknown upstream is dead-lettered, as on a broker


async def test_access_rules_and_upstream_errors_reach_the_test() -> None:
    async def teapot(request: web.Request) -> web.Response:
        return web.Response(status=418)

    config = {"tea": {"access": {"allow": ["kitchen"]}}}
    async with InMemoryGateway({"tea": teapot, "open": teapot}, config=config) as gateway, gateway.client() as client:
        refused = await client.request("tea", "GET", "/")
        answered = await client.request("open", "GET", "/")
    with pytest.raises(ForbiddenError):
        refused.raise_for_error()
    with pytest.raises(UpstreamStatusError) as caught:
        answered.raise_for_error()
    assert caught.value.status == 418


def test_the_reply_message_type_is_public() -> None:
    message = ReplyMessage(b"{}", "application/json", "c-1", {})
    assert message.correlation_id == "c-1"


def test_config_for_an_upstream_not_given_is_a_mistake() -> None:
    with pytest.raises(ValueError, match="nosuch"):
        InMemoryGateway({"a": "http://127.0.0.1:9"}, config={"nosuch": {}})
