"""The composition root: one place assembles typed values, and every component runs on the gateway's clock."""

from __future__ import annotations

import ast
import asyncio
import gc
import inspect
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from gateway import wiring
from gateway.app import Gateway, load_config
from gateway.client import GatewayClient
from gateway.clock import SystemClock
from gateway.gc_governor import THRESHOLDS
from gateway.settings import load_settings
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.tracing import TracingHandle
from gateway.testing import FakeClock, MemoryRequester, MemoryTransport
from tests.fixtures.kafka import unique
from tests.fixtures.rabbit import AMQP_URL, delete_queues, wait_until
from tests.fixtures.upstreams import Upstream


@pytest.fixture
async def fake_clock_gateway(kafka_bootstrap: str, echo_upstream: Upstream) -> AsyncIterator[Gateway]:
    """A gateway on both brokers, with metrics on a free port, built from settings on a FakeClock."""
    queue = unique("cmn.requests.test-app")
    settings = load_settings(
        AMQP_URL=AMQP_URL,
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        KAFKA_GROUP_ID=unique("g"),
        KAFKA_SESSION_TIMEOUT_MS=1000,
        CMN_REQUESTS_QUEUE=queue,
        ENABLE_METRICS=True,
        METRICS_PORT=0,
    )
    config = load_config(settings, {"upstreams": {"echo": {"endpoints": [echo_upstream.url]}}})
    try:
        async with Gateway(config, clock=FakeClock()) as gateway:
            yield gateway
    finally:
        await delete_queues(AMQP_URL, queue, f"{queue}.dlq")


def clocks_held(root: object) -> Iterator[tuple[str, object]]:
    """(holder class, clock) for every clock held by an object of the gateway package reachable from ``root``."""
    seen: set[int] = set()
    todo: list[object] = [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, dict):
            todo.extend(obj.values())
        elif isinstance(obj, list | tuple | set | frozenset):
            todo.extend(obj)
        elif type(obj).__module__.startswith("gateway."):
            for name, value in _attributes(obj):
                if isinstance(value, SystemClock | FakeClock):
                    yield f"{type(obj).__name__}.{name}", value
                else:
                    todo.append(value)


def _attributes(obj: object) -> Iterator[tuple[str, Any]]:
    yield from getattr(obj, "__dict__", {}).items()
    for cls in type(obj).__mro__:
        for slot in getattr(cls, "__slots__", ()):
            if hasattr(obj, slot):
                yield slot, getattr(obj, slot)


async def test_every_component_the_gateway_builds_runs_on_its_clock(fake_clock_gateway: Gateway) -> None:
    """The RabbitMQ transport once ran on a SystemClock of its own while Kafka had the gateway's: no more."""
    gateway = fake_clock_gateway
    held = list(clocks_held(gateway))
    strangers = [holder for holder, clock in held if clock is not gateway.clock]
    assert not strangers, f"components on a clock of their own: {strangers}"
    holders = {holder.split(".")[0] for holder, _ in held}
    assert {"RabbitTransport", "KafkaTransport", "TelemetryService", "Pipeline", "Admission"} <= holders, holders
    assert {t.name for t in gateway.transports} == {"rabbitmq", "kafka"}


async def test_the_root_assembles_typed_values_from_the_builders(fake_clock_gateway: Gateway) -> None:
    gateway = fake_clock_gateway
    assert isinstance(gateway.metrics, Metrics) and gateway.metrics in gateway.observer.observers
    assert isinstance(gateway.metrics_registry, CollectorRegistry)
    assert isinstance(gateway.tracing, TracingHandle) and not gateway.tracing.enabled
    assert gateway.embedded_bootstrap is None  # a broker is configured
    port = gateway.metrics_port
    assert isinstance(port, int) and port > 0
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    assert response.status == 200 and "cmn_" in text


async def test_tune_process_is_explicit_and_governs_on_the_gateways_clock(fake_clock_gateway: Gateway) -> None:
    """Started in-process, the gateway leaves the host's collector alone; tune_process (cmn serve) tunes it."""
    gateway = fake_clock_gateway
    before = gc.get_threshold()
    assert before != THRESHOLDS and gateway.governor is None  # start() did not touch the collector
    try:
        governor = gateway.tune_process()
        assert gc.get_threshold() == THRESHOLDS
        assert gateway.tune_process() is governor  # once per gateway
        assert governor._clock is gateway.clock
        await gateway.aclose()  # stops the governor first: any hold on the collector is released
        assert gc.isenabled()
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def test_wiring_does_not_import_app_and_its_builders_take_no_gateway() -> None:
    """Builders return values and app.py assembles them: no import loop hidden behind TYPE_CHECKING."""
    tree = ast.parse(Path(wiring.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m and m.startswith("gateway.app")}, imported
    builders = [f for name, f in vars(wiring).items() if name.startswith("build_") and inspect.isfunction(f)]
    assert len(builders) >= 8
    for builder in builders:
        annotations = {str(p.annotation) for p in inspect.signature(builder).parameters.values()}
        assert not [a for a in annotations if "Gateway" in a], builder.__name__
        assert inspect.signature(builder).return_annotation not in ("None", None), builder.__name__


# Where a process (or the SDK's user) starts: the only modules that may make a SystemClock or take
# a clock that may be None. Everything below them is handed its clock.
ROOTS = (
    "app.py",
    "client.py",
    "demo.py",
    "testing_gateway.py",
    "cli/",
    "certs/cli.py",
    "dlq/cli.py",
    "security/audit/",
)


def test_components_below_the_roots_require_their_clock() -> None:
    """No ``clock or SystemClock()`` below the composition roots: a default clock there is how the
    RabbitMQ transport ran on a clock of its own unnoticed (and how KafkaDeadLetters still did)."""
    package = Path(wiring.__file__).parent
    found: list[str] = []
    for path in sorted(package.rglob("*.py")):
        where = path.relative_to(package).as_posix()
        if where == "clock.py" or where.startswith(ROOTS):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "SystemClock":
                found.append(f"{where}:{node.lineno} makes a SystemClock")
            optional = (
                isinstance(node, ast.arg) and node.annotation is not None and "None" in ast.unparse(node.annotation)
            )
            if optional and isinstance(node, ast.arg) and node.arg == "clock":
                found.append(f"{where}:{node.lineno} takes an optional clock")
    assert found == []


def test_the_sdk_entry_hands_its_clock_to_the_requester_it_builds() -> None:
    """GatewayClient is a root of its own: it defaults to the system clock, and shares whichever it has."""
    from gateway.client import GatewayClient

    clock = FakeClock()
    for client in (
        GatewayClient.rabbitmq(AMQP_URL, clock=clock),
        GatewayClient.kafka("127.0.0.1:9", clock=clock),
    ):
        assert [c for _, c in clocks_held(client)] and all(c is clock for _, c in clocks_held(client))
    default = GatewayClient.rabbitmq(AMQP_URL)
    held = {id(c) for _, c in clocks_held(default)}
    assert len(held) == 1 and isinstance(default._clock, SystemClock)


async def test_the_status_document_reads_the_gateways_clock_and_drain_phase(fake_clock_gateway: Gateway) -> None:
    gateway = fake_clock_gateway
    clock = gateway.clock
    assert isinstance(clock, FakeClock)
    clock.advance(90.0)
    status = gateway.status()
    assert (status.uptime, status.time) == (90.0, clock.time())
    assert (status.drain, status.in_flight) == ("consuming", 0)
    assert {(t.name, t.ready) for t in status.transports} == {("rabbitmq", True), ("kafka", True)}
    assert [u.name for u in status.upstreams] == ["echo"]
    await gateway.drain()
    assert gateway.status().drain == "stopped"
    port = gateway.metrics_port
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/admin/upstreams") as response:
        document = await response.json()
    assert (document["drain"], document["uptime"]) == ("stopped", 90.0)


async def test_the_status_document_shows_draining_while_requests_finish(echo_upstream: Upstream) -> None:
    transport = MemoryTransport()
    config = load_config(
        load_settings(ENABLE_METRICS=False), {"upstreams": {"echo": {"endpoints": [echo_upstream.url]}}}
    )
    async with Gateway(config, transports=[transport]) as gateway, GatewayClient(MemoryRequester(transport)) as client:
        assert gateway.status().drain == "consuming"
        reply = asyncio.ensure_future(client.request("echo", "GET", "/slow?delay_ms=300"))
        await wait_until(lambda: gateway.in_flight == 1)
        drain = asyncio.ensure_future(gateway.drain())
        await asyncio.sleep(0)
        status = gateway.status()
        assert (status.drain, status.in_flight) == ("draining", 1)
        assert status.upstreams[0].endpoints[0].active == 1
        await drain
        assert gateway.status().drain == "stopped"
        assert (await reply).status == 200
