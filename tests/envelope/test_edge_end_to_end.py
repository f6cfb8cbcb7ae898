"""The hardened edge through a whole gateway, on RabbitMQ and the Kafka-protocol broker, in front of
a real HTTP upstream whose endpoint has a base path: attacks are answered invalid_request (never
internal), never reach the upstream, and path/header attacks raise a security event."""

from __future__ import annotations

from typing import Any

import msgpack
from aiohttp import web

from gateway.envelope.codec import JSON, MSGPACK, decode_reply, encode_request
from gateway.events import SecurityRefused
from tests.fixtures.rabbit import wait_until
from tests.fixtures.upstreams import StartUpstream
from tests.integration.harness import Stack, StackFactory


class Recorder:
    """An upstream that records what reached it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, str]]] = []

    def app(self) -> web.Application:
        async def handle(request: web.Request) -> web.Response:
            self.seen.append((request.method, request.path, dict(request.headers)))
            return web.json_response({"path": request.path})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        return app


async def _stack(make_stack: StackFactory, start_upstream: StartUpstream, recorder: Recorder) -> Stack:
    upstream = await start_upstream(recorder.app())
    return await make_stack({"api": {"endpoints": [f"{upstream.url}/api/v1"]}})


async def _send(stack: Stack, doc: dict[str, Any], codec: str = JSON) -> dict[str, Any]:
    raw = encode_request({"upstream": "api", **doc}, codec)
    reply = await stack.client.send_raw(raw, correlation_id=doc["id"], content_type=codec, timeout=20)
    return decode_reply(reply.body, reply.content_type)


def _kinds(stack: Stack) -> list[str]:
    return [e.kind for e in stack.events.events if isinstance(e, SecurityRefused)]


async def test_attacks_are_refused_at_the_edge(make_stack: StackFactory, start_upstream: StartUpstream) -> None:
    recorder = Recorder()
    stack = await _stack(make_stack, start_upstream, recorder)
    attacks: list[tuple[dict[str, Any], str, str | None]] = [
        ({"id": "p1", "path": "/../../admin"}, "segments", "invalid_path"),
        ({"id": "p2", "path": "/%2e%2e/admin"}, "segments", "invalid_path"),
        ({"id": "p3", "path": "/a%2F..%2F..%2Fadmin"}, "segments", "invalid_path"),
        ({"id": "h1", "headers": {"Transfer-Encoding ": "chunked"}}, "not an RFC 9110 token", "invalid_header"),
        ({"id": "h2", "headers": {"X A": "1"}}, "not an RFC 9110 token", "invalid_header"),
        ({"id": "h3", "headers": {"X-Evil": "a\r\nX-Smuggled: 1"}}, "control character", "invalid_header"),
        ({"id": "h4", "headers": {"X-Nul": "a\x00b"}}, "control character", "invalid_header"),
        ({"id": "m1", "method": "TRACE"}, "not forwarded", None),
        ({"id": "t1", "timeout_ms": 300_001}, "cap of 300000 ms", None),
    ]
    for doc, fragment, _ in attacks:
        answer = await _send(stack, doc)
        assert answer["error"]["code"] == "invalid_request", answer
        assert fragment in answer["error"]["message"], answer
        assert answer["id"] == doc["id"]
    assert recorder.seen == []
    expected = [kind for _, _, kind in attacks if kind is not None]
    # The event is recorded once the reply and its dead letter are confirmed: the reply may arrive first.
    await wait_until(lambda: len(_kinds(stack)) >= len(expected))
    assert sorted(_kinds(stack)) == sorted(expected)


async def test_msgpack_bin_inside_json_is_invalid_not_internal(
    make_stack: StackFactory, start_upstream: StartUpstream
) -> None:
    recorder = Recorder()
    stack = await _stack(make_stack, start_upstream, recorder)
    for rid, value in (("b1", {"a": [b"\x00\x01"]}), ("e1", msgpack.ExtType(3, b"x")), ("n1", float("nan"))):
        answer = await _send(stack, {"id": rid, "method": "POST", "json": value}, MSGPACK)
        assert answer["error"]["code"] == "invalid_request", answer
    assert recorder.seen == []


async def test_good_requests_stay_under_the_base_path_without_connection_named_headers(
    make_stack: StackFactory, start_upstream: StartUpstream
) -> None:
    recorder = Recorder()
    stack = await _stack(make_stack, start_upstream, recorder)
    headers = {"Connection": "X-Secret", "X-Secret": "s", "X-Kept": "k"}
    answer = await _send(stack, {"id": "g1", "path": "/v1/file.json?next=../x", "headers": headers})
    assert answer["status"] == 200, answer
    [(method, path, seen)] = recorder.seen
    assert (method, path) == ("GET", "/api/v1/v1/file.json")
    assert seen["X-Kept"] == "k" and "X-Secret" not in seen
