"""Red-team findings against the hardened gateway, each kept as a regression test.

Every test here failed before its fix: an attacker with publish rights on the bus (foreign Kafka
producers, hostile envelopes) reached something the Security section of the README says it cannot.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from contextlib import AsyncExitStack

import aio_pika
import pika
import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from yarl import URL

from gateway.access.config import AccessConfig
from gateway.access.guard import Guard
from gateway.access.identity import ANONYMOUS_CALLER, Caller, Identifier
from gateway.access.policy import AccessPolicy
from gateway.access.replay import MemoryReplayRecord
from gateway.access.reply_address import ReplyAddresses
from gateway.app import load_config
from gateway.bus.base import DEAD_LETTERS, ERROR_HEADER, Delivery, ReplyMessage
from gateway.clock import SystemClock
from gateway.envelope.codec import JSON, REPLY_JSON_MAX_NODES, Reply, decode_reply, encode_reply
from gateway.envelope.models import RequestEnvelope
from gateway.errors import ForbiddenError
from gateway.events import RequestCompleted
from gateway.secrets import SecretResolver
from gateway.settings import load_settings
from gateway.telemetry.metrics import Metrics
from gateway.upstream.auth import Credential
from gateway.wiring import build_guard
from tests.fixtures.kafka import KafkaTransportFactory, committed_offsets, produce, read_topic
from tests.fixtures.rabbit import RequesterFactory, TransportFactory

# A producer that writes a record header key which is not UTF-8 (aiokafka's pure-Python record
# builder encodes keys with ``str.encode``; any Kafka client in another language can do the same).
_NON_UTF8_HEADER_PRODUCER = """
import asyncio, os, sys
os.environ["AIOKAFKA_NO_EXTENSIONS"] = "1"
from aiokafka import AIOKafkaProducer

class RawKey(str):
    def encode(self, *args, **kwargs):
        return b"\\xff\\xfe"

async def main(bootstrap, topic):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await (await producer.send(topic, b"poison", partition=0, headers=[(RawKey("x"), b"v")]))
    finally:
        await producer.stop()

asyncio.run(main(*sys.argv[1:]))
"""


async def test_a_kafka_record_with_a_non_utf8_header_key_does_not_stop_its_partition(
    kafka_transport: KafkaTransportFactory, kafka_bootstrap: str
) -> None:
    """Found: aiokafka fails the whole fetch on such a record, every time; the poll loop retried
    forever, nothing on the partition (before or after it) was handled and /readyz stayed green."""
    transport = kafka_transport()
    seen: list[bytes] = []
    after = asyncio.Event()

    async def handler(delivery: Delivery) -> None:
        seen.append(delivery.body)
        await transport.settle(delivery)
        if delivery.body == b"after":
            after.set()

    await produce(kafka_bootstrap, transport.topic, [b"before"], partition=0)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _NON_UTF8_HEADER_PRODUCER, kafka_bootstrap, transport.topic
    )
    assert await proc.wait() == 0
    await produce(kafka_bootstrap, transport.topic, [b"after"], partition=0)
    await transport.start(handler)

    await asyncio.wait_for(after.wait(), 30)
    assert seen == [b"before", b"after"]
    records = await read_topic(
        kafka_bootstrap,
        DEAD_LETTERS,
        until=lambda rs: any(dict(r.headers).get("x-cmn-topic") == transport.topic.encode() for r in rs),
    )
    note = next(r for r in records if dict(r.headers).get("x-cmn-topic") == transport.topic.encode())
    assert dict(note.headers)[ERROR_HEADER].startswith(b"invalid_request: unreadable Kafka record")
    assert dict(note.headers)["x-cmn-offset"] == b"1"

    async def all_committed() -> bool:
        return (await committed_offsets(kafka_bootstrap, transport.topic, transport.group_id)).get(0) == 3

    for _ in range(100):
        if await all_committed():
            break
        await asyncio.sleep(0.1)
    assert await all_committed()


async def test_an_amqp_message_with_non_utf8_short_strings_does_not_break_the_gateway_connection(
    rabbit_transport: TransportFactory, rabbit_queue: str, amqp_url: str
) -> None:
    """Found: pamqp refuses a header-table key or a short-string property (correlation_id, reply_to)
    that is not UTF-8 by failing the whole connection; the message went back to the queue and broke
    every connection it was delivered to, so no request on the queue was answered again."""
    transport = rabbit_transport()
    seen: dict[bytes, Delivery] = {}
    after = asyncio.Event()

    async def handler(delivery: Delivery) -> None:
        seen[delivery.body] = delivery
        await transport.settle(delivery)
        if delivery.body == b"after":
            after.set()

    await transport.start(handler)
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.basic_publish("", rabbit_queue, b"key", pika.BasicProperties(headers={b"\xff\xfe": "v"}))
        channel.basic_publish("", rabbit_queue, b"nested", pika.BasicProperties(headers={"t": {b"\xff": 1}}))
        channel.basic_publish("", rabbit_queue, b"property", pika.BasicProperties(correlation_id=b"\xff\xfe"))
        channel.basic_publish("", rabbit_queue, b"after", pika.BasicProperties())
    finally:
        connection.close()

    await asyncio.wait_for(after.wait(), 20)
    assert set(seen) == {b"key", b"nested", b"property", b"after"}
    assert dict(seen[b"key"].headers) == {"\ufffd\ufffd": "v"}
    assert seen[b"property"].correlation_id == "\ufffd\ufffd"


# -- paths ------------------------------------------------------------------------------------
def _refused_path(path: str) -> bool:
    try:
        RequestEnvelope.model_validate({"id": "r", "upstream": "u", "path": path})
    except ValidationError as exc:
        return exc.errors()[0]["type"] == "invalid_path"
    return False


@pytest.mark.parametrize("path", ["/..#", "/%2e%2e#x", "/v1/reports/..#", "/.#", "/a/%2E%2E#frag"])
def test_a_dot_segment_before_a_fragment_is_refused(path: str) -> None:
    """Found: ``..`` followed by ``#`` passed the dot-segment rule, and the HTTP client removes it
    while building the URL: ``/..#`` against ``http://h/api/v1`` reached ``GET /api/`` (and
    ``/v1/reports/..#`` passed a ``path_prefixes: [/v1/reports/]`` rule, then left it)."""
    assert URL("http://h/api/v1" + path).path in ("/api/", "/api/v1/", "/api/v1/v1/")  # the escape is real
    assert _refused_path(path)


@pytest.mark.parametrize(
    "path",
    [
        "/a/%c0%ae%c0%ae/admin",  # overlong UTF-8 '.' (old Tomcat, IIS decoded these)
        "/a/%e0%80%ae%e0%80%ae/admin",  # three-byte overlong '.'
        "/a/..%c0%af/admin",  # overlong '/'
        "/a/\uff0e\uff0e/admin",  # fullwidth full stops: NFKC makes them '..'
        "/a/\u2025/admin",  # two dot leader: NFKC '..'
        "/a/%EF%BC%8E%EF%BC%8E/admin",  # the same, percent-encoded
        "/a/..%00/admin",  # NUL after the dots (servers that end strings there)
        "/a/..%20/admin",  # a trailing space (Windows file systems drop it)
        "/a/%2e%2e%09/admin",
    ],
)
def test_disguised_dot_segments_are_refused(path: str) -> None:
    assert _refused_path(path)


@pytest.mark.parametrize("path", ["/a/b.c", "/a/%E9t%E9", "/caf\u00e9/..x", "/a/...x", "/a?x=../..", "/a/%23"])
def test_ordinary_paths_still_pass(path: str) -> None:
    assert not _refused_path(path)


# -- tenants ----------------------------------------------------------------------------------
def test_an_anonymous_caller_cannot_spend_the_tenant_of_a_principal_named_in_an_allow_list() -> None:
    """Found: only principals listed under ``security.principals`` had their tenants reserved, so an
    anonymous request with ``tenant: billing`` spent billing's per-tenant bucket on an open upstream."""
    policy = AccessPolicy({"payments": AccessConfig.model_validate({"allow": ["billing"]}), "open": None}, {})
    with pytest.raises(ForbiddenError):
        policy.authorize(ANONYMOUS_CALLER, upstream="open", method="GET", path="/", tenant="billing")
    assert policy.authorize(ANONYMOUS_CALLER, upstream="open", method="GET", path="/", tenant="acme") == "acme"


async def test_an_anonymous_caller_cannot_spend_the_tenant_of_a_signing_key_principal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CMN_REDTEAM_KEY", "k" * 32)
    document = {
        "security": {"keys": {"reports-1": {"principal": "reports", "secret": {"env": "CMN_REDTEAM_KEY"}}}},
        "upstreams": {"open": {"endpoints": ["http://127.0.0.1:9"]}},
    }
    config = load_config(load_settings(ENABLE_METRICS=False), document)
    async with AsyncExitStack() as resources:
        guard = await build_guard(
            config.settings, config.upstreams, config.security, SecretResolver(), SystemClock(), resources
        )
    envelope = RequestEnvelope.model_validate({"id": "r", "upstream": "open", "tenant": "reports"})
    with pytest.raises(ForbiddenError):
        guard.authorize(ANONYMOUS_CALLER, envelope)
    assert guard.authorize(Caller("reports", "signature"), envelope) == "reports"


# -- the upstream's credential ----------------------------------------------------------------
def test_a_caller_header_that_a_cgi_style_server_reads_as_the_credential_header_is_dropped() -> None:
    """Found: ``X_Api_Key`` was forwarded beside the gateway's ``x-api-key``. WSGI/CGI servers
    (gunicorn before 22, PHP-FPM, Werkzeug) map both to HTTP_X_API_KEY, and which one wins is theirs
    to decide, so the caller could replace the gateway's credential with a value of its own."""
    credential = Credential("x-api-key", "gateway-secret", "header env:KEY")
    sent = credential.apply({"X_Api_Key": "caller", "x-api_KEY": "caller", "X-Other": "kept", "x_other": "kept"})
    assert sent == {"X-Other": "kept", "x_other": "kept", "x-api-key": "gateway-secret"}


# -- hostile upstream answers -----------------------------------------------------------------
def test_an_upstream_json_body_with_too_many_values_is_passed_on_as_text_not_parsed() -> None:
    """Found: a reply's JSON body was parsed whole to be re-encoded. 10 MB of ``[{},...]`` from an
    upstream (the README: "an upstream may be hostile too") took peak RSS from 32 to 344 MB: three
    at once and the 512 MiB pod is gone. Past ``REPLY_JSON_MAX_NODES`` values it stays exact text."""
    bomb = b"[" + b"{}," * REPLY_JSON_MAX_NODES + b"{}]"
    doc = decode_reply(encode_reply(Reply(id="r", status=200, body=bomb, body_content_type=JSON), JSON), JSON)
    assert "json" not in doc
    assert doc["body"] == bomb.decode()
    small = b'{"a": [1, 2, {"b": null}]}'
    doc = decode_reply(encode_reply(Reply(id="r", status=200, body=small, body_content_type=JSON), JSON), JSON)
    assert doc["json"] == {"a": [1, 2, {"b": None}]}


def test_a_deeply_nested_upstream_json_body_with_a_long_integer_is_not_an_internal_error() -> None:
    """Found: the 64-bit check parses with the standard library, whose RecursionError escaped the
    encoder; the caller got ``internal`` ("could not be encoded") instead of the upstream's answer."""
    deep = b"[" * 5000 + b"1234567890123456789012" + b"]" * 5000
    doc = decode_reply(encode_reply(Reply(id="r", status=200, body=deep, body_content_type=JSON), JSON), JSON)
    assert doc["error"] is None
    assert doc["body"] == deep.decode()


# -- metrics ----------------------------------------------------------------------------------
def test_refused_requests_naming_made_up_upstreams_cannot_push_real_upstreams_out_of_the_metrics() -> None:
    """Found: a refusal before routing (reply_to_refused, unauthenticated, forbidden) is counted under
    the upstream the caller named. 200 messages naming made-up upstreams filled the upstream label's
    cap, and from then on every configured upstream not yet seen was counted as ``other``: dashboards
    and per-upstream alerts went blind. Configured upstreams are admitted first."""
    registry = CollectorRegistry()
    metrics = Metrics(registry, upstreams=["payments"])
    for n in range(300):
        metrics.on_event(RequestCompleted(f"r{n}", f"junk-{n}", "GET", None, 0.001, error_code="reply_to_refused"))
    metrics.on_event(RequestCompleted("ok", "payments", "GET", 200, 0.001, transport="rabbitmq"))
    labels = {"upstream": "payments", "method": "GET", "status_class": "2xx", "error_code": "none"}
    assert registry.get_sample_value("cmn_requests_total", {**labels, "transport": "rabbitmq"}) == 1.0


# -- access rules and request-target overrides --------------------------------------------------
@pytest.mark.parametrize(
    "header",
    ["X-HTTP-Method-Override", "x-http-method", "X-Method-Override", "X-Original-URL", "x-rewrite-url"],
)
def test_a_rule_narrowed_to_methods_or_paths_refuses_headers_that_override_them(header: str) -> None:
    """Found: a principal allowed only ``GET /v1/reports/`` sent ``GET /v1/reports/x`` with
    ``X-HTTP-Method-Override: DELETE`` (or ``X-Original-URL: /admin``); the rule passed and the
    request went out, and upstreams that honour these headers (Rails, ASP.NET, Symfony, IIS
    rewrite, Google APIs) would have performed another method or path."""
    access = AccessConfig.model_validate({"allow": [{"principal": "reports", "methods": ["GET"]}]})
    narrowed = AccessConfig.model_validate({"allow": [{"principal": "reports", "path_prefixes": ["/v1/reports/"]}]})
    open_rule = AccessConfig.model_validate({"allow": ["reports"]})
    policy = AccessPolicy({"methods": access, "paths": narrowed, "whole": open_rule}, {})
    guard = Guard(
        Identifier({}, clock=SystemClock(), max_age=300, require_identity=False),
        policy,
        ReplyAddresses(queue_pattern="cmn.replies.*", topic_pattern="cmn.replies.*", reserved=("cmn.requests",)),
        MemoryReplayRecord(SystemClock()),
    )
    caller = Caller("reports", "user_id")
    for upstream in ("methods", "paths"):
        envelope = RequestEnvelope.model_validate(
            {"id": "r", "upstream": upstream, "path": "/v1/reports/x", "headers": {header: "DELETE"}}
        )
        with pytest.raises(ForbiddenError):
            guard.authorize(caller, envelope)
    plain = RequestEnvelope.model_validate({"id": "r", "upstream": "methods", "path": "/v1/reports/x"})
    assert guard.authorize(caller, plain) == "reports"
    whole = RequestEnvelope.model_validate({"id": "r", "upstream": "whole", "headers": {header: "DELETE"}})
    assert guard.authorize(caller, whole) == "reports"  # a rule without narrowing has nothing to bypass


async def test_a_reply_with_a_non_utf8_header_key_does_not_break_the_requesters_connection(
    rabbit_requester: RequesterFactory, amqp_url: str
) -> None:
    """The SDK side of the same finding: anyone may publish to a requester's reply address. (pamqp is
    patched for the whole process, so this test can only fail when it runs before any transport starts.)"""
    requester = rabbit_requester(use_direct_reply_to=False)  # a queue anyone may publish to by name
    replies: list[bytes] = []
    second = asyncio.Event()

    def on_reply(reply: ReplyMessage) -> None:
        replies.append(reply.body)
        if reply.body == b"second":
            second.set()

    await requester.start(on_reply)
    address = requester.reply_address
    assert address is not None
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        poison = aio_pika.Message(b"poison", headers={"k": "v"}, correlation_id="c1")
        await channel.default_exchange.publish(poison, routing_key=address)
    publisher = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        publisher.channel().basic_publish("", address, b"bad", pika.BasicProperties(headers={b"\xff": "v"}))
    finally:
        publisher.close()
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.default_exchange.publish(aio_pika.Message(b"second", correlation_id="c2"), routing_key=address)
    await asyncio.wait_for(second.wait(), 10)
    assert replies == [b"poison", b"bad", b"second"]


async def test_the_sdks_kafka_readers_step_past_a_record_they_cannot_decode(kafka_bootstrap: str) -> None:
    """Found: the SDK's reply reader (and `cmn telemetry`'s) retried the failing fetch forever, so one
    record with a non-UTF-8 header key in a reply topic silenced every later reply to that client."""
    from gateway.bus.base import TELEMETRY
    from gateway.bus.kafka.requester import KafkaRequester

    requester = KafkaRequester(kafka_bootstrap, topic=f"t.requests.{uuid.uuid4().hex[:8]}", clock=SystemClock())
    got: list[bytes] = []
    good = asyncio.Event()

    def on_reply(reply: ReplyMessage) -> None:
        got.append(reply.body)
        if reply.body == b"after":
            good.set()

    await requester.start(on_reply)
    try:
        for topic in (requester.reply_topic, TELEMETRY):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", _NON_UTF8_HEADER_PRODUCER, kafka_bootstrap, topic
            )
            assert await proc.wait() == 0
        stream = requester.telemetry(from_beginning=True)
        await produce(kafka_bootstrap, requester.reply_topic, [b"after"], partition=0)
        await produce(kafka_bootstrap, TELEMETRY, [b"after"], partition=0)
        await asyncio.wait_for(good.wait(), 30)
        assert got == [b"after"]

        async def next_after() -> bytes:
            async for body in stream:
                if body == b"after":
                    return body
            raise AssertionError("telemetry stream ended")

        assert await asyncio.wait_for(next_after(), 30) == b"after"
        await stream.aclose()
    finally:
        await requester.aclose()
