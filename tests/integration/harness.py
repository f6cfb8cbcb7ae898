"""A whole gateway in the test process, on a real broker, with a real upstream, and a client to drive it."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import aio_pika
from aiokafka import AIOKafkaConsumer

from gateway.app import Gateway, load_config
from gateway.bus.base import Transport
from gateway.bus.kafka.requester import KafkaRequester
from gateway.bus.kafka.transport import KafkaTransport
from gateway.bus.rabbitmq.requester import RabbitRequester
from gateway.bus.rabbitmq.transport import RabbitTransport
from gateway.client import GatewayClient
from gateway.clock import SystemClock
from gateway.envelope.codec import JSON
from gateway.events import RecordingObserver
from gateway.settings import load_settings
from tests.fixtures.kafka import FAST_GROUP
from tests.fixtures.rabbit import AMQP_URL, delete_queues


@dataclass
class Stack:
    kind: str
    gateway: Gateway
    client: GatewayClient
    queue: str
    events: RecordingObserver
    bootstrap: str | None = None

    async def dead_letters(self, count: int, timeout: float = 10.0) -> list[tuple[bytes, dict[str, str]]]:
        """The first ``count`` dead-lettered messages for this stack: (original bytes, headers)."""
        if self.kind == "rabbitmq":
            return await rabbit_dead_letters(f"{self.queue}.dlq", count, timeout)
        assert self.bootstrap is not None
        return await kafka_dead_letters(self.bootstrap, count, timeout)


def requester_for(stack: Stack, **kwargs: Any) -> Any:
    """Another requester on a stack's queue (a second calling service)."""
    if stack.kind == "rabbitmq":
        kwargs.setdefault("clock", SystemClock())
        return RabbitRequester(AMQP_URL, queue=stack.queue, telemetry=f"{stack.queue}.telemetry", **kwargs)
    assert stack.bootstrap is not None
    return KafkaRequester(stack.bootstrap, topic=stack.queue, **{"clock": SystemClock(), **kwargs})


def transport_and_requester(
    kind: str, queue: str, bootstrap: str | None, *, max_in_flight: int = 256
) -> tuple[Transport, Any]:
    if kind == "rabbitmq":
        telemetry = f"{queue}.telemetry"  # a stream per test: the shared one only ever grows
        return (
            RabbitTransport(
                AMQP_URL, queue=queue, max_in_flight=max_in_flight, telemetry=telemetry, clock=SystemClock()
            ),
            RabbitRequester(AMQP_URL, queue=queue, telemetry=telemetry, clock=SystemClock()),
        )
    assert bootstrap is not None
    return (
        KafkaTransport(
            bootstrap,
            topic=queue,
            group_id=f"g.{queue}",
            max_in_flight=max_in_flight,
            **FAST_GROUP,
            clock=SystemClock(),
        ),
        KafkaRequester(bootstrap, topic=queue, clock=SystemClock()),
    )


StackFactory = Callable[..., Awaitable[Stack]]


async def stack_factory(stack: AsyncExitStack, kind: str, bootstrap: str | None) -> StackFactory:
    async def make(
        upstreams: dict[str, Any],
        *,
        codec: str = JSON,
        env: dict[str, Any] | None = None,
        max_in_flight: int = 256,
        certificates: dict[str, Any] | None = None,
        security: dict[str, Any] | None = None,
    ) -> Stack:
        queue = f"t.requests.{uuid.uuid4().hex[:10]}"
        transport, requester = transport_and_requester(kind, queue, bootstrap, max_in_flight=max_in_flight)
        settings = load_settings(**{"ENABLE_METRICS": False, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, **(env or {})})
        events = RecordingObserver()
        document: dict[str, Any] = {"upstreams": upstreams}
        if certificates is not None:
            document["certificates"] = certificates
        if security is not None:
            document["security"] = security
        gateway = Gateway(load_config(settings, document), observers=[events], transports=[transport])
        if kind == "rabbitmq":
            # Registered first, so it runs last: a consuming gateway would re-declare a deleted queue.
            stack.push_async_callback(delete_rabbit_topology, queue)
        await stack.enter_async_context(gateway)
        client = await stack.enter_async_context(GatewayClient(requester, codec=codec))
        return Stack(kind, gateway, client, queue, events, bootstrap)

    return make


async def delete_rabbit_topology(queue: str) -> None:
    """Remove what one test stack declared on the shared broker (requests, dead letters, telemetry)."""
    await delete_queues(AMQP_URL, queue, f"{queue}.dlq", f"{queue}.telemetry")
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        await channel.exchange_delete(f"{queue}.telemetry")


async def rabbit_dead_letters(queue: str, count: int, timeout: float) -> list[tuple[bytes, dict[str, str]]]:
    import asyncio

    out: list[tuple[bytes, dict[str, str]]] = []
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        q = await channel.get_queue(queue)
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while len(out) < count and loop.time() < end:
            message = await q.get(no_ack=True, fail=False)
            if message is None:
                await asyncio.sleep(0.05)
                continue
            out.append((message.body, {k: str(v) for k, v in (message.headers or {}).items()}))
        await q.delete(if_unused=False, if_empty=False)
    return out


async def kafka_dead_letters(bootstrap: str, count: int, timeout: float) -> list[tuple[bytes, dict[str, str]]]:
    import asyncio

    consumer = AIOKafkaConsumer(
        "cmn.requests.dlq", bootstrap_servers=bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=10
    )
    await consumer.start()
    out: list[tuple[bytes, dict[str, str]]] = []
    try:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while len(out) < count and loop.time() < end:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for r in records:
                    out.append((r.value, {k: v.decode() for k, v in r.headers}))
    finally:
        await consumer.stop()
    return out
