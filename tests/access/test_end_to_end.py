"""Identity, access and reply addresses end to end: real brokers (RabbitMQ and Tansu), a real upstream.

Signed clients are the SDK given a key; unsigned ones are anonymous. Every refusal must come back
with its error code, never reach the upstream, and raise a security event.
"""

from __future__ import annotations

import asyncio
import uuid
from contextlib import AsyncExitStack
from typing import Any

import aio_pika
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from gateway.client import GatewayClient
from gateway.events import RequestCompleted, SecurityRefused
from tests.fixtures.rabbit import AMQP_URL
from tests.fixtures.upstreams import Upstream
from tests.integration.harness import Stack, StackFactory, requester_for

BILLING_SECRET = "billing-secret-value-1"
REPORTS_SECRET = "reports-secret-value-2"


def upstreams(upstream: Upstream) -> dict[str, Any]:
    return {
        "payments": {
            "endpoints": [upstream.url],
            "access": {
                "allow": ["billing", {"principal": "reports", "methods": ["GET"]}],
                "path_prefixes": ["/charges"],
            },
            "rate_limit": {"per_tenant": {"rate": 1000}},
        },
        "open": {"endpoints": [upstream.url]},
    }


SECURITY = {
    "keys": {
        "billing-2026": {"principal": "billing", "secret": {"env": "CMN_TEST_KEY_BILLING"}},
        "reports-2026": {"principal": "reports", "secret": {"env": "CMN_TEST_KEY_REPORTS"}},
    },
    "principals": {"billing": {"tenants": ["acme"]}},
}


@pytest.fixture
def signing_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CMN_TEST_KEY_BILLING", BILLING_SECRET)
    monkeypatch.setenv("CMN_TEST_KEY_REPORTS", REPORTS_SECRET)


async def signed_client(stack: Stack, exits: AsyncExitStack, key_id: str, secret: str) -> GatewayClient:
    client = GatewayClient(requester_for(stack), key_id=key_id, secret=secret)
    return await exits.enter_async_context(client)


def refusals(stack: Stack) -> list[SecurityRefused]:
    return [e for e in stack.events.events if isinstance(e, SecurityRefused)]


@pytest.mark.usefixtures("signing_keys")
async def test_only_allowed_principals_reach_a_guarded_upstream(
    make_stack: StackFactory, echo_upstream: Upstream
) -> None:
    stack = await make_stack(upstreams(echo_upstream), security=SECURITY)
    async with AsyncExitStack() as exits:
        billing = await signed_client(stack, exits, "billing-2026", BILLING_SECRET)
        reports = await signed_client(stack, exits, "reports-2026", REPORTS_SECRET)
        forger = await signed_client(stack, exits, "billing-2026", "not-the-secret")
        ok, read, write, outside, anonymous, forged = await asyncio.gather(
            billing.request("payments", "POST", "/charges", json={"amount": 1}),
            reports.request("payments", "GET", "/charges/c-1"),
            reports.request("payments", "POST", "/charges", json={"amount": 1}),
            billing.request("payments", "GET", "/chargesheet"),  # path_prefixes are whole segments
            stack.client.request("payments", "GET", "/charges"),
            forger.request("payments", "GET", "/charges"),
        )
    assert (ok.status, ok.error, read.status, read.error) == (200, None, 200, None)
    assert write.error is not None and write.error.code == "forbidden"
    assert outside.error is not None and outside.error.code == "forbidden"
    assert anonymous.error is not None and anonymous.error.code == "forbidden"
    assert forged.error is not None and forged.error.code == "unauthenticated"
    assert BILLING_SECRET not in forged.error.message
    assert echo_upstream.hits == 2  # only the two allowed requests reached it
    kinds = sorted(e.kind for e in refusals(stack))
    assert kinds == ["forbidden", "forbidden", "forbidden", "unauthenticated"]
    by_principal = {e.principal for e in refusals(stack) if e.kind == "forbidden"}
    assert by_principal == {"reports", "billing", None}
    assert all(e.upstream == "payments" and e.transport == stack.kind for e in refusals(stack))


@pytest.mark.usefixtures("signing_keys")
async def test_tenants_follow_the_principal(make_stack: StackFactory, echo_upstream: Upstream) -> None:
    stack = await make_stack(upstreams(echo_upstream), security=SECURITY)
    async with AsyncExitStack() as exits:
        billing = await signed_client(stack, exits, "billing-2026", BILLING_SECRET)
        reports = await signed_client(stack, exits, "reports-2026", REPORTS_SECRET)
        own, declared, foreign, squatter = await asyncio.gather(
            billing.request("open", "GET", "/t"),
            billing.request("open", "GET", "/t", tenant="acme"),
            reports.request("open", "GET", "/t", tenant="acme"),
            stack.client.request("open", "GET", "/t", tenant="billing"),
        )
    assert (own.status, declared.status) == (200, 200)
    assert foreign.error is not None and foreign.error.code == "forbidden"
    assert squatter.error is not None and squatter.error.code == "forbidden"
    completed = {e.request_id: e for e in stack.events.events if isinstance(e, RequestCompleted)}
    assert (completed[own.id].principal, completed[own.id].tenant) == ("billing", "billing")
    assert (completed[declared.id].principal, completed[declared.id].tenant) == ("billing", "acme")


async def test_anonymous_requests_are_limited_as_one_tenant(make_stack: StackFactory, echo_upstream: Upstream) -> None:
    """Leaving out `tenant` used to skip the per-tenant bucket altogether."""
    limited = {"open": {"endpoints": [echo_upstream.url], "rate_limit": {"per_tenant": {"rate": 0.001, "burst": 2}}}}
    stack = await make_stack(limited)
    replies = await asyncio.gather(*(stack.client.request("open", "GET", f"/n/{i}") for i in range(4)))
    codes = sorted(r.error.code if r.error else "ok" for r in replies)
    assert codes == ["ok", "ok", "rate_limited", "rate_limited"]


@pytest.mark.usefixtures("signing_keys")
async def test_idempotent_results_never_cross_callers(make_stack: StackFactory, echo_upstream: Upstream) -> None:
    """The leak the security review found: same key, another caller, got the first caller's response."""
    stack = await make_stack(upstreams(echo_upstream), security=SECURITY)
    key = f"charge-{uuid.uuid4().hex}"
    async with AsyncExitStack() as exits:
        billing = await signed_client(stack, exits, "billing-2026", BILLING_SECRET)
        first = await billing.request(
            "open", "POST", "/charges", json={"n": 1}, headers={"Authorization": "Bearer caller-a"}, idempotency_key=key
        )
        again = await billing.request(
            "open", "POST", "/charges", json={"n": 1}, headers={"Authorization": "Bearer caller-a"}, idempotency_key=key
        )
        other = await stack.client.request("open", "GET", "/elsewhere", idempotency_key=key)
        reused = await billing.request("open", "GET", "/elsewhere", idempotency_key=key)
    assert (first.status, again.status, again.attempts) == (200, 200, 0)  # a replay, not a new call
    assert other.status == 200 and other.json_["path"] == "/elsewhere"
    assert "caller-a" not in orjson.dumps(other.json_).decode()
    assert reused.error is not None and reused.error.code == "invalid_request"
    assert "reused for a different request" in reused.error.message
    assert [e.kind for e in refusals(stack)] == ["idempotency_mismatch"]
    assert echo_upstream.hits == 2


async def test_a_reply_is_never_sent_to_a_queue_that_is_not_a_reply_address(
    make_stack: StackFactory, echo_upstream: Upstream
) -> None:
    stack = await make_stack(upstreams(echo_upstream))
    request_id = uuid.uuid4().hex
    body = orjson.dumps({"id": request_id, "upstream": "open", "path": "/x"})
    victim = f"victim.{uuid.uuid4().hex[:8]}"
    if stack.kind == "rabbitmq":
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(victim, auto_delete=False)
            message = aio_pika.Message(body, content_type="application/json", reply_to=victim, correlation_id="c")
            await channel.default_exchange.publish(message, routing_key=stack.queue)
            dead = await stack.dead_letters(1)
            await asyncio.sleep(0.2)
            declared = await channel.declare_queue(victim, passive=True)
            assert declared.declaration_result.message_count == 0
            await queue.delete(if_unused=False, if_empty=False)
    else:
        assert stack.bootstrap is not None
        producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap)
        await producer.start()
        try:
            headers = [("reply_to", b"cmn.telemetry"), ("correlation_id", b"c"), ("content-type", b"application/json")]
            await producer.send_and_wait(stack.queue, body, headers=headers)
        finally:
            await producer.stop()
        dead = [d for d in await stack.dead_letters(50, timeout=5) if request_id.encode() in d[0]]
    assert len(dead) == 1 and dead[0][1]["x-cmn-error"].startswith("reply_to_refused")
    assert echo_upstream.hits == 0  # refused before any upstream call
    assert [e.kind for e in refusals(stack)] == ["reply_to_refused"]


async def test_identity_can_be_required(make_stack: StackFactory, echo_upstream: Upstream) -> None:
    stack = await make_stack(upstreams(echo_upstream), env={"REQUIRE_IDENTITY": True})
    reply = await stack.client.request("open", "GET", "/x")
    assert reply.error is not None and reply.error.code == "unauthenticated"
    assert echo_upstream.hits == 0
