"""Issue 9, section 4, through a whole gateway: each kind of refusal, provoked the way an attacker would,
reaches all three sinks the gateway wires itself (no sink built by the test): a ``security.<kind>``
event on the telemetry stream (principal, upstream, reason; no secret), a log line and
``cmn_security_events_total{kind}``.

RabbitMQ only: the stream sink on Kafka is covered by tests/telemetry/test_service.py, and the
refusals themselves on both brokers by tests/access and tests/envelope.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aio_pika
import orjson
import pytest

from gateway.client import GatewayClient
from gateway.envelope.codec import JSON, decode_reply
from gateway.envelope.models import TelemetryEvent
from gateway.events import SECURITY_KINDS
from tests.fixtures.certs import StartTlsUpstream
from tests.fixtures.logs import Captured
from tests.fixtures.rabbit import AMQP_URL
from tests.fixtures.upstreams import Upstream
from tests.integration.harness import Stack, StackFactory, requester_for

pytestmark = pytest.mark.parametrize("broker", ["rabbitmq"], indirect=True)

SECRET = "billing-secret-never-shown-7c1"
FORGED = "forged-secret-never-shown-2d9"
IDEMPOTENCY_KEY = "idem-never-a-secret"


async def send_raw(client: GatewayClient, doc: dict[str, Any]) -> dict[str, Any]:
    reply = await client.send_raw(orjson.dumps(doc), correlation_id=doc["id"], content_type=JSON, timeout=20)
    return decode_reply(reply.body, reply.content_type)


async def publish_with_reply_to(stack: Stack, address: str) -> None:
    body = orjson.dumps({"id": uuid.uuid4().hex, "upstream": "open", "path": "/x"})
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        message = aio_pika.Message(body, content_type=JSON, reply_to=address, correlation_id="c")
        await channel.default_exchange.publish(message, routing_key=stack.queue)


async def provoke_every_kind(stack: Stack) -> dict[str, str]:
    """One refusal of each kind; the error code each caller was answered (reply_to_refused: none)."""
    codes: dict[str, str] = {}
    async with GatewayClient(requester_for(stack), key_id="billing-2026", secret=FORGED) as forger:
        reply = await forger.request("guarded", "GET", "/x")
    codes["unauthenticated"] = reply.error.code if reply.error else "ok"
    reply = await stack.client.request("guarded", "GET", "/x")  # anonymous
    codes["forbidden"] = reply.error.code if reply.error else "ok"
    await publish_with_reply_to(stack, "cmn.telemetry")
    async with GatewayClient(requester_for(stack), key_id="billing-2026", secret=SECRET) as billing:
        answer = await send_raw(billing, {"id": "p1", "upstream": "guarded", "path": "/%2e%2e/admin"})
    codes["invalid_path"] = answer["error"]["code"]
    answer = await send_raw(stack.client, {"id": "h1", "upstream": "open", "headers": {"Transfer-Encoding ": "x"}})
    codes["invalid_header"] = answer["error"]["code"]
    first = await stack.client.request("open", "GET", "/a", idempotency_key=IDEMPOTENCY_KEY)
    assert first.status == 200, first
    reply = await stack.client.request("open", "GET", "/b", idempotency_key=IDEMPOTENCY_KEY)
    codes["idempotency_mismatch"] = reply.error.code if reply.error else "ok"
    reply = await stack.client.request("partner", "GET", "/")
    codes["tls_verification_failed"] = reply.error.code if reply.error else "ok"
    return codes


async def security_events(client: GatewayClient) -> dict[str, TelemetryEvent]:
    """The first ``security.<kind>`` event of every kind, read from the stream with the SDK."""
    seen: dict[str, TelemetryEvent] = {}
    async for event in client.telemetry(from_beginning=True):
        if event.type.startswith("security."):
            seen.setdefault(event.type.removeprefix("security."), event)
        if set(seen) == set(SECURITY_KINDS):
            break
    return seen


async def test_every_refusal_kind_reaches_the_stream_the_log_and_the_counter(
    make_stack: StackFactory,
    echo_upstream: Upstream,
    start_tls_upstream: StartTlsUpstream,
    captured: Captured,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CMN_TEST_KEY_BILLING", SECRET)
    untrusted = await start_tls_upstream()  # signed by the test's dev CA, which the gateway does not trust
    upstreams = {
        "guarded": {"endpoints": [echo_upstream.url], "access": {"allow": ["billing"]}},
        "open": {"endpoints": [echo_upstream.url]},
        "partner": {"endpoints": [untrusted.url], "retry": {"attempts": 1}},
    }
    security = {"keys": {"billing-2026": {"principal": "billing", "secret": {"env": "CMN_TEST_KEY_BILLING"}}}}
    stack = await make_stack(upstreams, env={"ENABLE_METRICS": True, "METRICS_PORT": 0}, security=security)

    codes = await provoke_every_kind(stack)
    assert codes == {
        "unauthenticated": "unauthenticated",
        "forbidden": "forbidden",
        "invalid_path": "invalid_request",
        "invalid_header": "invalid_request",
        "idempotency_mismatch": "invalid_request",
        "tls_verification_failed": "upstream_unavailable",
    }
    events = await asyncio.wait_for(security_events(stack.client), 30)

    # The stream: one event per kind, saying who, where and why.
    assert set(events) == set(SECURITY_KINDS)
    expected_upstream = {
        "unauthenticated": "guarded",
        "forbidden": "guarded",
        "reply_to_refused": "open",
        "invalid_path": "guarded",
        "invalid_header": "open",
        "idempotency_mismatch": "open",
        "tls_verification_failed": "partner",
    }
    for kind, event in events.items():
        assert event.data["kind"] == kind and event.data["reason"], event
        assert event.data["upstream"] == expected_upstream[kind], event
        # A path attack signed by billing is billing's; the others are anonymous or failed their proof.
        assert event.data["principal"] == ("billing" if kind == "invalid_path" else None), event
        text = event.model_dump_json()
        assert SECRET not in text and FORGED not in text, text
    # The log: one warning line per refusal, named as on the stream.
    logged = [line for line in captured.lines() if str(line.get("event", "")).startswith("security.")]
    assert sorted(line["event"] for line in logged) == sorted(f"security.{kind}" for kind in SECURITY_KINDS)
    assert {line["level"] for line in logged} == {"warning"}
    assert not [line for line in logged if SECRET in str(line) or FORGED in str(line)]
    # The counter the alert rule reads.
    registry = stack.gateway.metrics_registry
    assert registry is not None
    counted = {kind: registry.get_sample_value("cmn_security_events_total", {"kind": kind}) for kind in SECURITY_KINDS}
    assert counted == dict.fromkeys(SECURITY_KINDS, 1.0)
    assert echo_upstream.hits == 1  # only the first idempotent request was sent upstream
    # Refusals about who the caller is are answered, not dead-lettered; the copies were confirmed before
    # their events were published, so all of them are there by now.
    dead = await stack.dead_letters(10, timeout=1.0)
    assert sorted(headers["x-cmn-error"].split(":")[0] for _, headers in dead) == [
        "invalid_request",  # the path attack
        "invalid_request",  # the header attack
        "reply_to_refused",
    ]
