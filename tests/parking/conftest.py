"""Parking against real brokers: a gateway whose transport declares park tiers, and an upstream that
can be down (nothing listening on its port) and come back on the same port."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import pytest
from aiohttp import web

from gateway.app import Gateway, load_config
from gateway.bus.base import Transport, park_destination
from gateway.bus.kafka.requester import KafkaRequester
from gateway.bus.kafka.transport import KafkaTransport
from gateway.bus.rabbitmq.requester import RabbitRequester
from gateway.bus.rabbitmq.transport import RabbitTransport
from gateway.client import GatewayClient
from gateway.clock import SystemClock
from gateway.events import RecordingObserver, RequestParked
from gateway.settings import load_settings
from tests.fixtures.kafka import FAST_GROUP
from tests.fixtures.rabbit import AMQP_URL, delete_queues
from tests.fixtures.upstreams import free_port, start_app

PARK_SECRET = "park-secret-of-the-test-fleet-0123456789"


class Switchable:
    """An upstream on a fixed port that is down (connection refused) until ``up`` and after ``down``."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.hits = 0
        self._runner: web.AppRunner | None = None

    async def up(self) -> None:
        async def handle(request: web.Request) -> web.Response:
            self.hits += 1
            return web.json_response({"method": request.method, "path": request.path_qs})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        self._runner, _ = await start_app(app, self.port)

    async def down(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()


@pytest.fixture
async def switchable() -> AsyncIterator[Switchable]:
    upstream = Switchable()
    yield upstream
    await upstream.down()


@dataclass
class ParkStack:
    kind: str
    queue: str
    gateway: Gateway
    transport: Transport
    client: GatewayClient
    events: RecordingObserver
    bootstrap: str | None = None
    delays: tuple[int, ...] = field(default=())

    def parked(self) -> list[RequestParked]:
        return [e for e in self.events.events if isinstance(e, RequestParked)]

    async def another_client(
        self, *, key_id: str | None = None, secret: str | None = None, **requester: Any
    ) -> GatewayClient:
        bus = requester_for(self.kind, self.queue, self.bootstrap, **requester)
        return await GatewayClient(bus, key_id=key_id, secret=secret).start()


def requester_for(kind: str, queue: str, bootstrap: str | None, **kwargs: Any) -> Any:
    if kind == "rabbitmq":
        return RabbitRequester(AMQP_URL, queue=queue, telemetry=f"{queue}.telemetry", clock=SystemClock(), **kwargs)
    assert bootstrap is not None
    return KafkaRequester(bootstrap, topic=queue, clock=SystemClock(), **kwargs)


def park_transport(kind: str, queue: str, bootstrap: str | None, delays: tuple[int, ...], **kwargs: Any) -> Transport:
    if kind == "rabbitmq":
        return RabbitTransport(
            AMQP_URL, queue=queue, telemetry=f"{queue}.telemetry", park_delays=delays, clock=SystemClock(), **kwargs
        )
    assert bootstrap is not None
    return KafkaTransport(
        bootstrap, topic=queue, group_id=f"g.{queue}", park_delays=delays, **FAST_GROUP, clock=SystemClock(), **kwargs
    )


async def delete_rabbit(queue: str, delays: tuple[int, ...]) -> None:
    parks = [park_destination(queue, d) for d in delays]
    await delete_queues(AMQP_URL, queue, f"{queue}.dlq", f"{queue}.telemetry", *parks)
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        await channel.exchange_delete(f"{queue}.telemetry")


ParkStackFactory = Callable[..., Awaitable[ParkStack]]


@pytest.fixture(params=["rabbitmq", "kafka"])
def park_broker(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    bootstrap = request.getfixturevalue("kafka_bootstrap") if request.param == "kafka" else None
    return request.param, bootstrap


@pytest.fixture
async def park_stack(park_broker: tuple[str, str | None]) -> AsyncIterator[ParkStackFactory]:
    kind, bootstrap = park_broker
    async with AsyncExitStack() as stack:

        async def make(
            upstreams: dict[str, Any],
            *,
            delays: tuple[int, ...],
            env: dict[str, Any] | None = None,
            security: dict[str, Any] | None = None,
            **transport: Any,
        ) -> ParkStack:
            queue = f"t.requests.{uuid.uuid4().hex[:10]}"
            if kind == "rabbitmq":
                stack.push_async_callback(delete_rabbit, queue, delays)
            settings = load_settings(
                **{
                    "ENABLE_METRICS": False,
                    "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                    "PARK_SECRET": PARK_SECRET,
                    **(env or {}),
                }
            )
            events = RecordingObserver()
            bus = park_transport(kind, queue, bootstrap, delays, **transport)
            document = {"upstreams": upstreams, **({"security": security} if security else {})}
            gateway = Gateway(load_config(settings, document), observers=[events], transports=[bus])
            await stack.enter_async_context(gateway)
            client = await stack.enter_async_context(GatewayClient(requester_for(kind, queue, bootstrap)))
            return ParkStack(kind, queue, gateway, bus, client, events, bootstrap, delays)

        yield make
