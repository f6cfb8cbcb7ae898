"""Foreign clients prove who they are: pika with real RabbitMQ users (user_id, checked by the broker)
and with an envelope signed by nothing but the standard library's hmac; confluent-kafka signing on Tansu.

This is the contract other teams code against, so the signature is computed here from the
documented recipe, never with gateway code.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pika
import pika.exceptions
import pytest
from confluent_kafka import Consumer, Producer

from gateway.app import Gateway, load_config
from gateway.bus.kafka.transport import KafkaTransport
from gateway.bus.rabbitmq.transport import RabbitTransport
from gateway.clock import SystemClock
from gateway.events import RecordingObserver, SecurityRefused
from gateway.settings import load_settings
from tests.bus.rabbitmq.node import RabbitNode
from tests.fixtures.kafka import FAST_GROUP
from tests.fixtures.upstreams import Upstream

SECRET = "integrations-secret-0"


MAX_AGE = 60  # SIGNATURE_MAX_AGE of the RabbitMQ gateway below (the default is 300)


def sign(
    secret: str, key_id: str, correlation_id: str, reply_to: str, body: bytes, *, age: float = 0
) -> dict[str, str]:
    signed_at = str(int((time.time() - age) * 1000))
    message = f"{signed_at}\n{key_id}\n{correlation_id}\n{reply_to}\n".encode() + body
    digest = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return {"x-cmn-key-id": key_id, "x-cmn-signed-at": signed_at, "x-cmn-signature": f"v1={digest}"}


def document(upstream: Upstream) -> dict[str, Any]:
    return {
        "upstreams": {
            "payments": {"endpoints": [upstream.url], "access": {"allow": ["billing", "integrations"]}},
        },
        "security": {"keys": {"int-1": {"principal": "integrations", "secret": {"env": "CMN_TEST_KEY_INT"}}}},
    }


@pytest.fixture
def users(rabbit_node: RabbitNode) -> Iterator[dict[str, str]]:
    """Real broker users, named as the principals the access rules name (no other test adds these
    two to the session's private node); deleted afterwards, so the names stay free."""
    suffix = uuid.uuid4().hex[:6]
    made: dict[str, str] = {}
    try:
        for name in ("billing", "mallory"):
            made[name] = rabbit_node.add_user(name, f"pw-{name}-{suffix}")
        yield made
    finally:
        for name in made:
            rabbit_node.delete_user(name)


@pytest.fixture
async def rabbit_gateway(
    rabbit_node: RabbitNode, echo_upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Gateway, RecordingObserver, str]]:
    monkeypatch.setenv("CMN_TEST_KEY_INT", SECRET)
    queue = f"t.requests.{uuid.uuid4().hex[:8]}"
    events = RecordingObserver()
    transport = RabbitTransport(
        rabbit_node.url, queue=queue, max_in_flight=16, telemetry=f"{queue}.telemetry", clock=SystemClock()
    )
    config = load_config(load_settings(ENABLE_METRICS=False, SIGNATURE_MAX_AGE=MAX_AGE), document(echo_upstream))
    async with Gateway(config, observers=[events], transports=[transport]) as gateway:
        yield gateway, events, queue


def pika_call(url: str, queue: str, body: bytes, **props: Any) -> dict[str, Any]:
    """Publish one request with pika and wait for the reply on a reply queue of our own."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        reply_queue = props.pop("reply_queue", None) or f"cmn.replies.{uuid.uuid4().hex[:8]}"
        channel.queue_declare(reply_queue, exclusive=True, auto_delete=True)
        headers = props.pop("headers", None)
        properties = pika.BasicProperties(
            content_type="application/json",
            reply_to=reply_queue,
            correlation_id=props.pop("correlation_id", uuid.uuid4().hex),
            headers=headers(reply_queue) if callable(headers) else headers,
            **props,
        )
        channel.basic_publish("", queue, body, properties)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            method, _, reply = channel.basic_get(reply_queue, auto_ack=True)
            if method is not None:
                return dict(orjson.loads(reply))
            time.sleep(0.05)
        raise AssertionError("no reply")
    finally:
        if connection.is_open:
            connection.close()


def request(upstream: str = "payments") -> bytes:
    return orjson.dumps({"id": uuid.uuid4().hex, "upstream": upstream, "path": "/charges"})


async def test_the_broker_checked_user_id_is_the_principal(
    rabbit_gateway: tuple[Gateway, RecordingObserver, str], users: dict[str, str]
) -> None:
    _, events, queue = rabbit_gateway
    reply = await asyncio.to_thread(pika_call, users["billing"], queue, request(), user_id="billing")
    assert (reply["status"], reply["error"]) == (200, None)
    own = await asyncio.to_thread(pika_call, users["mallory"], queue, request(), user_id="mallory")
    assert own["error"]["code"] == "forbidden" and "mallory" in own["error"]["message"]
    # The broker-checked user_id outranks a signature: mallory sending a message signed with the (allowed)
    # integrations key is still mallory.
    body = request()
    signed = await asyncio.to_thread(
        pika_call,
        users["mallory"],
        queue,
        body,
        user_id="mallory",
        correlation_id="c-9",
        headers=lambda reply_to: sign(SECRET, "int-1", "c-9", reply_to, body),
    )
    assert signed["error"]["code"] == "forbidden" and "mallory" in signed["error"]["message"]
    with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="user_id"):
        await asyncio.to_thread(pika_call, users["mallory"], queue, request(), user_id="billing")
    forbidden = [e for e in events.events if isinstance(e, SecurityRefused)]
    assert [(e.kind, e.principal) for e in forbidden] == [("forbidden", "mallory")] * 2


async def test_a_pika_client_signs_with_the_standard_library(
    rabbit_gateway: tuple[Gateway, RecordingObserver, str], rabbit_node: RabbitNode
) -> None:
    _, events, queue = rabbit_gateway
    body = request()
    good = await asyncio.to_thread(
        pika_call,
        rabbit_node.url,
        queue,
        body,
        correlation_id="c-7",
        headers=lambda reply_to: sign(SECRET, "int-1", "c-7", reply_to, body),
    )
    assert (good["status"], good["error"]) == (200, None)
    tampered = await asyncio.to_thread(
        pika_call,
        rabbit_node.url,
        queue,
        body,
        correlation_id="c-8",
        headers=lambda reply_to: sign(SECRET, "int-1", "c-7", reply_to, body),  # signed for another id
    )
    assert tampered["error"]["code"] == "unauthenticated"
    # Twice this gateway's SIGNATURE_MAX_AGE, well within the default's: refused only if the setting is read.
    stale = await asyncio.to_thread(
        pika_call,
        rabbit_node.url,
        queue,
        body,
        correlation_id="c-6",
        headers=lambda reply_to: sign(SECRET, "int-1", "c-6", reply_to, body, age=2 * MAX_AGE),
    )
    assert stale["error"]["code"] == "unauthenticated" and "outside the accepted window" in stale["error"]["message"]
    unsigned = await asyncio.to_thread(pika_call, rabbit_node.url, queue, request())
    assert unsigned["error"]["code"] == "forbidden"
    kinds = [e.kind for e in events.events if isinstance(e, SecurityRefused)]
    assert kinds == ["unauthenticated", "unauthenticated", "forbidden"]


async def test_a_signed_message_is_accepted_once(
    rabbit_gateway: tuple[Gateway, RecordingObserver, str], rabbit_node: RabbitNode
) -> None:
    """A captured signed message sent again within its max age is a replay, not its signer."""
    _, events, queue = rabbit_gateway
    body, reply_queue = request(), f"cmn.replies.{uuid.uuid4().hex[:8]}"
    headers = sign(SECRET, "int-1", "c-9", reply_queue, body)
    kwargs: dict[str, Any] = {"correlation_id": "c-9", "reply_queue": reply_queue, "headers": headers}
    first = await asyncio.to_thread(pika_call, rabbit_node.url, queue, body, **dict(kwargs))
    again = await asyncio.to_thread(pika_call, rabbit_node.url, queue, body, **dict(kwargs))
    assert (first["status"], first["error"]) == (200, None)
    assert again["error"]["code"] == "unauthenticated" and "already used" in again["error"]["message"]
    assert [e.kind for e in events.events if isinstance(e, SecurityRefused)] == ["unauthenticated"]


async def test_a_confluent_kafka_client_signs_with_the_standard_library(
    kafka_bootstrap: str, echo_upstream: Upstream, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CMN_TEST_KEY_INT", SECRET)
    topic = f"t.requests.{uuid.uuid4().hex[:8]}"
    transport = KafkaTransport(
        kafka_bootstrap, topic=topic, group_id=f"g.{topic}", max_in_flight=16, **FAST_GROUP, clock=SystemClock()
    )
    settings = load_settings(ENABLE_METRICS=False, KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap)
    async with Gateway(load_config(settings, document(echo_upstream)), transports=[transport]):
        replies = await asyncio.to_thread(kafka_round_trip, kafka_bootstrap, topic)
    assert replies["good"]["status"] == 200 and replies["good"]["error"] is None
    assert replies["stale"]["error"]["code"] == "unauthenticated"
    assert replies["unsigned"]["error"]["code"] == "forbidden"


def kafka_round_trip(bootstrap: str, topic: str) -> dict[str, dict[str, Any]]:
    reply_topic = f"cmn.replies.{uuid.uuid4().hex[:8]}"
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(reply_topic, b"")  # create it, so the consumer below has partitions
    producer.flush(10)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"g.{reply_topic}",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "fetch.wait.max.ms": 10,
        }
    )
    consumer.subscribe([reply_topic])
    cases = {}
    for name in ("good", "stale", "unsigned"):
        body = request()
        headers = {"reply_to": reply_topic, "correlation_id": name, "content-type": "application/json"}
        if name != "unsigned":
            headers |= sign(SECRET, "int-1", name, reply_topic, body)
        if name == "stale":
            old = str(int(time.time() * 1000) - 3_600_000)
            signed = f"{old}\nint-1\n{name}\n{reply_topic}\n".encode() + body
            headers |= {
                "x-cmn-signed-at": old,
                "x-cmn-signature": "v1=" + hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest(),
            }
        producer.produce(topic, body, key=name.encode(), headers=list(headers.items()))
        cases[name] = body
    producer.flush(10)
    replies: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 60
    try:
        while len(replies) < 3 and time.monotonic() < deadline:
            record = consumer.poll(0.2)
            if record is None or record.error() or not record.value():
                continue
            correlation = dict(record.headers() or []).get("correlation_id")
            assert isinstance(correlation, bytes)
            replies[correlation.decode()] = orjson.loads(record.value() or b"{}")
    finally:
        consumer.close()
    assert set(replies) == set(cases), replies
    return replies
