"""TelemetryService, the stream sink: a security refusal reaches cmn.telemetry as ``security.<kind>`` on
real brokers, one event fans out to all three sinks (stream, log line, counter), a request event is
published once (no retry of its own), and only the events meant for the stream leave in the background."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage
from prometheus_client import CollectorRegistry

from gateway.bus.base import Delivery
from gateway.bus.kafka.transport import KafkaTransport
from gateway.bus.rabbitmq.topology import STREAM_ARGUMENTS
from gateway.bus.rabbitmq.transport import RabbitTransport
from gateway.envelope.models import TelemetryEvent
from gateway.errors import BusUnavailableError
from gateway.events import (
    BreakerStateChanged,
    ObserverGroup,
    PoolStats,
    RequestCompleted,
    RequestReceived,
    SecurityRefused,
)
from gateway.telemetry.logging import RequestLog
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.service import TelemetryService
from gateway.testing import FakeClock, MemoryTransport
from tests.fixtures.kafka import KafkaTransportFactory, read_topic
from tests.fixtures.logs import Captured
from tests.fixtures.rabbit import TransportFactory

REFUSAL = SecurityRefused(
    "forbidden",
    "principal billing may not use upstream payroll",
    principal="billing",
    upstream="payroll",
    transport="rabbitmq",
    request_id="req-7",
)


async def unused(delivery: Delivery) -> None:
    raise AssertionError("no requests in this test")


async def started_rabbit(rabbit_transport: TransportFactory) -> RabbitTransport:
    transport = rabbit_transport()
    await transport.start(unused)  # declares the telemetry exchange and its stream
    return transport


async def first_event(amqp_url: str, stream_name: str) -> AbstractIncomingMessage:
    """The first message of the telemetry stream, read with a plain aio-pika consumer."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=10)
        stream = await channel.declare_queue(stream_name, durable=True, arguments=dict(STREAM_ARGUMENTS))
        got: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

        async def on_message(message: AbstractIncomingMessage) -> None:
            await message.ack()
            got.put_nowait(message)

        await stream.consume(on_message, arguments={"x-stream-offset": "first"})
        return await asyncio.wait_for(got.get(), 10)


def assert_security_document(body: bytes, *, instance: str) -> dict[str, Any]:
    event = TelemetryEvent.model_validate_json(body)  # the published wire contract
    assert (event.type, event.gateway, event.ts) == ("security.forbidden", instance, 1_800_000_000.0)
    assert event.data == {
        "kind": "forbidden",
        "reason": "principal billing may not use upstream payroll",
        "principal": "billing",
        "upstream": "payroll",
        "transport": "rabbitmq",
        "request_id": "req-7",
    }
    return event.data


async def test_a_security_refusal_is_published_on_the_rabbitmq_stream_under_its_type(
    rabbit_transport: TransportFactory, amqp_url: str, rabbit_telemetry: str
) -> None:
    transport = await started_rabbit(rabbit_transport)
    service = TelemetryService(clock=FakeClock(), instance="gw-1", publishers=[transport])
    await service.start()
    service.on_event(REFUSAL)
    message = await first_event(amqp_url, rabbit_telemetry)
    await service.aclose()
    assert message.routing_key == "security.forbidden"  # subscribers bind security.# to get them all
    assert_security_document(message.body, instance="gw-1")
    assert service.dropped == 0


async def test_a_security_refusal_is_published_on_the_kafka_topic_under_its_type(
    kafka_transport: KafkaTransportFactory, kafka_bootstrap: str
) -> None:
    transport: KafkaTransport = kafka_transport()
    service = TelemetryService(clock=FakeClock(), instance="gw-k", publishers=[transport])
    await service.start()
    service.on_event(REFUSAL)

    def has_security(records: list[Any]) -> bool:
        return any(dict(r.headers).get("type") == b"security.forbidden" for r in records)

    records = await read_topic(kafka_bootstrap, "cmn.telemetry", until=has_security)
    await service.aclose()
    (record,) = [r for r in records if dict(r.headers).get("type") == b"security.forbidden"]
    assert_security_document(record.value, instance="gw-k")


async def test_a_secret_quoted_in_a_reason_never_reaches_the_stream(
    rabbit_transport: TransportFactory, amqp_url: str, rabbit_telemetry: str
) -> None:
    transport = await started_rabbit(rabbit_transport)
    service = TelemetryService(clock=FakeClock(), instance="gw-1", publishers=[transport])
    await service.start()
    service.on_event(SecurityRefused("invalid_path", "dot segment in /a/../admin?api_key=k-42 (Bearer abc.def)"))
    message = await first_event(amqp_url, rabbit_telemetry)
    await service.aclose()
    reason = json.loads(message.body)["data"]["reason"]
    assert message.routing_key == "security.invalid_path"
    assert "k-42" not in reason and "abc.def" not in reason
    assert reason.startswith("dot segment in /a/../admin?api_key=[REDACTED]")


async def test_one_refusal_reaches_every_sink_the_way_app_wires_them(
    rabbit_transport: TransportFactory, amqp_url: str, rabbit_telemetry: str, captured: Captured
) -> None:
    registry = CollectorRegistry()
    group = ObserverGroup([Metrics(registry), RequestLog()])
    service = TelemetryService(clock=FakeClock(), instance="gw-1", publishers=[await started_rabbit(rabbit_transport)])
    group.add(service)  # as app.py does: the service is one more observer of the group
    await service.start()
    group.on_event(REFUSAL)
    message = await first_event(amqp_url, rabbit_telemetry)
    await service.aclose()
    assert message.routing_key == "security.forbidden"
    security_lines = [line for line in captured.lines() if line["event"] == "security.forbidden"]
    assert [(line["principal"], line["upstream"], line["level"]) for line in security_lines] == [
        ("billing", "payroll", "warning")
    ]
    assert registry.get_sample_value("cmn_security_events_total", {"kind": "forbidden"}) == 1


COMPLETED = RequestCompleted(request_id="r-1", upstream="echo", method="GET", status_code=200, duration=0.01)


async def test_a_request_event_is_published_once_and_a_failure_is_the_callers_to_handle() -> None:
    """The service never retries: the transport owns that, within its publish timeout."""
    transport = MemoryTransport()
    service = TelemetryService(clock=FakeClock(), instance="gw-1", publishers=[transport])
    await service.publish(COMPLETED, {"traceparent": "00-ab-cd-01"}, via=transport)
    ((kind, body, headers),) = transport.telemetry
    assert kind == "request.completed" and headers["traceparent"] == "00-ab-cd-01"
    assert json.loads(body)["data"]["request_id"] == "r-1"
    transport.fail_telemetry(BusUnavailableError("no confirm"))
    with pytest.raises(BusUnavailableError):
        await service.publish(COMPLETED, {}, via=transport)
    assert len(transport.telemetry) == 1


async def test_only_events_for_the_stream_are_published_in_the_background() -> None:
    """request.completed is the pipeline's to publish (confirmed); request.received and pool.stats feed metrics."""
    transport = MemoryTransport()
    service = TelemetryService(clock=FakeClock(), instance="gw-1", publishers=[transport])
    await service.start()
    for event in (
        COMPLETED,
        RequestReceived("memory"),
        PoolStats("echo", "http://e", 1, 0, 0),
        BreakerStateChanged("echo", "http://e", "closed", "open"),
    ):
        service.on_event(event)
    for _ in range(1000):  # the breaker event, queued last, leaves last
        if any(kind == "breaker.state_changed" for kind, _, _ in transport.telemetry):
            break
        await asyncio.sleep(0)
    await service.aclose()
    assert [kind for kind, _, _ in transport.telemetry] == ["breaker.state_changed"]
