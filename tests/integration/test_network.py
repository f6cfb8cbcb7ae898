"""The core path end to end: a real broker (RabbitMQ and Tansu), the gateway, a real HTTP upstream."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from typing import Any

import msgpack
import orjson
import pytest

from gateway.client import ReplyTimeoutError
from gateway.envelope.codec import JSON, MSGPACK, encode_request
from gateway.envelope.models import TelemetryEvent
from gateway.events import MessageDeadLettered, RequestCompleted
from tests.fixtures.upstreams import Upstream
from tests.integration.harness import Stack, StackFactory


def echo(upstream: Upstream, **extra: Any) -> dict[str, Any]:
    return {"echo": {"endpoints": [upstream.url], **extra}}


@pytest.mark.parametrize("codec", [JSON, MSGPACK])
async def test_round_trip_in_both_codecs(make_stack: StackFactory, echo_upstream: Upstream, codec: str) -> None:
    stack = await make_stack(echo(echo_upstream), codec=codec)
    reply = await stack.client.request(
        "echo", "POST", "/v1/things?x=1", json={"n": 1}, headers={"X-Trace-Me": "yes", "Connection": "close"}
    )
    assert reply.error is None and reply.status == 200 and reply.attempts == 1
    assert reply.json_["method"] == "POST" and reply.json_["path"] == "/v1/things?x=1"
    assert orjson.loads(reply.json_["body"]) == {"n": 1}
    sent_headers = {k.lower(): v for k, v in reply.json_["headers"].items()}
    assert sent_headers["x-trace-me"] == "yes" and sent_headers["content-type"] == "application/json"
    assert sent_headers.get("connection") != "close"  # hop-by-hop headers are not forwarded
    assert reply.upstream == "echo" and reply.duration_ms > 0


async def test_text_binary_and_upstream_errors_are_normal_replies(
    make_stack: StackFactory, echo_upstream: Upstream
) -> None:
    stack = await make_stack(echo(echo_upstream, retry={"attempts": 1}))
    text, binary, missing = await asyncio.gather(
        stack.client.request("echo", "GET", "/text"),
        stack.client.request("echo", "GET", "/binary"),
        stack.client.request("echo", "GET", "/nope?status=404"),
    )
    assert (text.status, text.body) == (200, "hello text")
    assert base64.b64decode(binary.body_b64 or "") == bytes(range(256))
    assert (missing.status, missing.error) == (404, None)


async def test_thousand_concurrent_requests_each_get_their_own_reply(
    make_stack: StackFactory, echo_upstream: Upstream
) -> None:
    stack = await make_stack(echo(echo_upstream, pool={"max_size": 64}))
    replies = await asyncio.gather(
        *(stack.client.request("echo", "GET", f"/item/{i}", timeout=60) for i in range(1000))
    )
    assert [r.json_["path"] for r in replies] == [f"/item/{i}" for i in range(1000)]
    assert all(r.error is None for r in replies)


async def test_telemetry_event_for_every_request(make_stack: StackFactory, echo_upstream: Upstream) -> None:
    stack = await make_stack(echo(echo_upstream))
    sent: set[str] = set()

    async def first_of_ours() -> TelemetryEvent:
        async for event in stack.client.telemetry():
            if event.type == "request.completed" and event.data["request_id"] in sent:
                return event
        raise AssertionError("telemetry stream ended")

    # The stream is shared and starts at its end: keep requesting until our subscription sees one.
    watcher = asyncio.create_task(first_of_ours())
    async with asyncio.timeout(30):
        while not watcher.done():
            sent.add((await stack.client.request("echo", "GET", "/observed", tenant="acme")).id)
            await asyncio.wait({watcher}, timeout=0.5)
    data = watcher.result().data
    assert (data["upstream"], data["status_code"], data["tenant"], data["transport"]) == (
        "echo",
        200,
        "acme",
        stack.kind,
    )
    recorded = [e.request_id for e in stack.events.events if isinstance(e, RequestCompleted)]
    assert sorted(recorded) == sorted(sent)


async def test_traceparent_passes_through(make_stack: StackFactory, echo_upstream: Upstream) -> None:
    stack = await make_stack(echo(echo_upstream))
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    raw = encode_request({"id": "tp-1", "upstream": "echo", "path": "/"})
    message = await stack.client.send_raw(raw, correlation_id="tp-1", headers={"traceparent": traceparent})
    assert message.headers.get("traceparent", "").split("-")[1] == "0af7651916cd43dd8448eb211c80319c"


@pytest.mark.parametrize("shared", [False, True], ids=["memory", "redis"])
async def test_idempotency_key_answers_duplicates_without_a_second_call(
    make_stack: StackFactory, echo_upstream: Upstream, shared: bool
) -> None:
    env = {"REDIS_URL": "redis://127.0.0.1:6379/0"} if shared else {}
    stack = await make_stack(echo(echo_upstream), env=env)
    key = f"k-{uuid.uuid4().hex}"
    first, second = await asyncio.gather(
        stack.client.request("echo", "POST", "/charge", json={"a": 1}, idempotency_key=key),
        stack.client.request("echo", "POST", "/charge", json={"a": 1}, idempotency_key=key),
    )
    third = await stack.client.request("echo", "POST", "/charge", json={"a": 1}, idempotency_key=key)
    assert echo_upstream.hits == 1
    assert first.status == second.status == third.status == 200
    assert sorted([first.attempts, second.attempts]) == [0, 1] and third.attempts == 0
    assert third.json_ == first.json_


def _now_ms() -> int:
    return int(time.time() * 1000)


BAD_INPUTS: list[tuple[str, Any, str, str]] = [
    # (name, payload (bytes or map), content type, expected code)
    ("not-json", b"{this is not json", JSON, "invalid_request"),
    ("not-msgpack", b"\xc1\xc1\xc1", MSGPACK, "invalid_request"),
    ("missing-id", {"upstream": "echo"}, JSON, "invalid_request"),
    ("unknown-upstream", {"id": "bad-unknown", "upstream": "nowhere"}, JSON, "unknown_upstream"),
    (
        "scheme-path",
        {"id": "bad-scheme", "upstream": "echo", "path": "http://evil.example/x"},
        JSON,
        "invalid_request",
    ),
    (
        "authority-path",
        {"id": "bad-authority", "upstream": "echo", "path": "//evil.example/x"},
        JSON,
        "invalid_request",
    ),
    ("too-large", {"id": "bad-large", "upstream": "echo", "body": "x" * 70_000}, JSON, "payload_too_large"),
    (
        "wrong-types",
        {"id": "bad-types", "upstream": "echo", "timeout_ms": "soon"},
        MSGPACK,
        "invalid_request",
    ),
    ("expired", {"id": "bad-expired", "upstream": "echo", "deadline": 1}, JSON, "deadline_exceeded"),
    (
        "two-bodies",
        {"id": "bad-bodies", "upstream": "echo", "json": {}, "body": "x"},
        JSON,
        "invalid_request",
    ),
]


async def test_bad_input_matrix_answered_dead_lettered_and_worker_carries_on(
    make_stack: StackFactory, echo_upstream: Upstream
) -> None:
    stack = await make_stack(echo(echo_upstream), env={"MAX_REQUEST_BYTES": 65_536})
    sent: dict[bytes, str] = {}
    for i, (name, payload, ctype, code) in enumerate(BAD_INPUTS):
        raw = payload if isinstance(payload, bytes) else _encode(payload, ctype)
        sent[raw] = code
        message = await stack.client.send_raw(raw, correlation_id=f"corr-{i}", content_type=ctype)
        reply = _decode(message.body, ctype)
        assert reply["error"]["code"] == code, name
        assert reply["status"] is None, name
        expected_id = payload.get("id") if isinstance(payload, dict) and "id" in payload else f"corr-{i}"
        assert reply["id"] == expected_id, name
    letters = await stack.dead_letters(len(BAD_INPUTS))
    ours = [(body, headers) for body, headers in letters if body in sent]
    assert len(ours) == len(BAD_INPUTS)
    for body, headers in ours:
        assert headers["x-cmn-error"].startswith(sent[body] + ": ")
    dead = [e for e in stack.events.events if isinstance(e, MessageDeadLettered)]
    assert sorted(e.error_code for e in dead) == sorted(code for *_, code in BAD_INPUTS)
    good = await stack.client.request("echo", "GET", "/still-serving")
    assert good.status == 200 and echo_upstream.hits == 1


def _encode(payload: dict[str, Any], ctype: str) -> bytes:
    return msgpack.packb(payload) if ctype == MSGPACK else orjson.dumps(payload)


def _decode(raw: bytes, ctype: str) -> dict[str, Any]:
    return msgpack.unpackb(raw) if ctype == MSGPACK else orjson.loads(raw)  # type: ignore[no-any-return]


async def test_queue_wait_past_budget_is_not_sent(make_stack: StackFactory, echo_upstream: Upstream) -> None:
    stack = await make_stack(echo(echo_upstream))
    raw = orjson.dumps({"id": "late", "upstream": "echo", "timeout_ms": 50, "sent_at": _now_ms() - 1000})
    message = await stack.client.send_raw(raw, correlation_id="late")
    assert orjson.loads(message.body)["error"]["code"] == "deadline_exceeded"
    assert echo_upstream.hits == 0


async def test_unreachable_upstream_is_an_error_reply_not_a_dead_letter(
    make_stack: StackFactory, unused_port: int
) -> None:
    stack: Stack = await make_stack(
        {"down": {"endpoints": [f"http://127.0.0.1:{unused_port}"], "retry": {"attempts": 1}}}
    )
    reply = await stack.client.request("down", "GET", "/", timeout=5)
    assert reply.status is None and reply.error is not None
    assert reply.error.code == "upstream_unavailable"
    assert reply.attempts == 1  # error replies report the attempts made too


async def test_rate_limited_requests_are_answered_rate_limited(
    make_stack: StackFactory, echo_upstream: Upstream
) -> None:
    limits = {"rate_limit": {"upstream": {"rate": 1, "burst": 2}}}
    stack = await make_stack(echo(echo_upstream, **limits))
    replies = await asyncio.gather(*(stack.client.request("echo", "GET", f"/rl/{i}") for i in range(6)))
    codes = sorted(r.error.code if r.error else str(r.status) for r in replies)
    assert codes.count("200") == 2 and codes.count("rate_limited") == 4
    assert echo_upstream.hits == 2


async def test_pool_exhaustion_shows_in_reply_and_metric(make_stack: StackFactory, echo_upstream: Upstream) -> None:
    """The spec's troubleshooting symptom, reproduced: one connection, held for a while, three callers."""
    pool = {"pool": {"max_size": 1, "acquire_timeout": 0.2}, "retry": {"attempts": 1}}
    stack = await make_stack(echo(echo_upstream, **pool), env={"ENABLE_METRICS": True, "METRICS_PORT": 0})
    replies = await asyncio.gather(
        *(stack.client.request("echo", "GET", "/hold?delay_ms=1000", timeout=5) for _ in range(3))
    )
    exhausted = [r for r in replies if r.error is not None and r.error.code == "pool_exhausted"]
    assert len(exhausted) == 2 and sum(r.status == 200 for r in replies) == 1
    assert exhausted[0].error is not None
    assert exhausted[0].error.message.startswith("Connection pool exhausted: upstream echo")
    registry = stack.gateway.metrics_registry
    assert registry is not None  # ENABLE_METRICS
    value = registry.get_sample_value(
        "cmn_requests_total",
        {
            "upstream": "echo",
            "method": "GET",
            "status_class": "none",
            "error_code": "pool_exhausted",
            "transport": stack.kind,
        },
    )
    assert value == 2


@pytest.mark.parametrize("broker", ["kafka"], indirect=True)
async def test_reply_the_broker_refuses_becomes_an_error_reply(
    make_stack: StackFactory, echo_upstream: Upstream
) -> None:
    """A 20 MB upstream answer is over the Kafka producer's limit: the requester hears why, nothing hangs."""
    stack = await make_stack(echo(echo_upstream), env={"MAX_RESPONSE_BYTES": 64 * 1024 * 1024})
    reply = await stack.client.request("echo", "GET", f"/big?size={20 * 1024 * 1024}", timeout=30)
    assert reply.status is None and reply.error is not None
    assert reply.error.code == "payload_too_large"
    after = await stack.client.request("echo", "GET", "/next")
    assert after.status == 200


async def test_slow_upstream_is_answered_within_the_callers_timeout(
    make_stack: StackFactory, echo_upstream: Upstream
) -> None:
    stack = await make_stack(echo(echo_upstream, retry={"attempts": 1}))
    reply = await stack.client.request("echo", "GET", "/slow?delay_ms=3000", timeout=1.0)
    assert reply.status is None and reply.error is not None
    assert reply.error.code in ("timeout", "deadline_exceeded")
    assert reply.duration_ms < 1000


async def test_client_times_out_cleanly_when_nobody_answers(make_stack: StackFactory, echo_upstream: Upstream) -> None:
    stack = await make_stack(echo(echo_upstream))
    await stack.gateway.drain()  # the gateway stops consuming: no reply will come
    with pytest.raises(ReplyTimeoutError, match="no reply"):
        await stack.client.request("echo", "GET", "/", timeout=0.5)
    assert "0 pending" in repr(stack.client)


async def test_non_utf8_upstream_header_is_answered_not_a_poison_message(
    make_stack: StackFactory,
) -> None:
    """A header with raw non-UTF-8 bytes survives aiohttp as surrogates that JSON cannot carry."""

    async def raw_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nX-Odd: caf\xe9\xff\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(raw_http, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        stack = await make_stack({"odd": {"endpoints": [f"http://127.0.0.1:{port}"], "retry": {"attempts": 1}}})
        reply = await stack.client.request("odd", "GET", "/", timeout=5)
        after = await stack.client.request("odd", "GET", "/", timeout=5)
    finally:
        server.close()
    assert (reply.status, after.status) == (200, 200)  # answered, both times: no poison message
    assert reply.headers["x-odd"] == "caf\ufffd\ufffd"  # undecodable bytes replaced, not fatal
