"""The services under test, each as an async context manager that yields a ``Call`` to load it with.

    raw_http      aiohttp client straight to the upstream (the HTTP limit)
    raw_broker    echo service, no HTTP (the bus round-trip limit)
    naive         hand-written gateway (aio-pika / aiokafka → aiohttp → reply → ack)
    cmn           ``python -m gateway.cli serve`` on uvloop

On Kafka every bus target gets a fresh embedded Tansu broker: its memory store stalls after a few
thousand batches per partition. On RabbitMQ every target gets queues of its own, deleted afterwards.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiormq
import yaml

from gateway.bus.embedded import EmbeddedBroker
from gateway.client import GatewayClient
from gateway.clock import SystemClock
from tests.performance.bench_load import (
    UPSTREAM,
    Call,
    CpuProbe,
    bus_call,
    cpu_probe,
    first_reply,
    http_call,
    http_session,
    kafka_client,
    rabbit_client,
)
from tests.performance.bench_procs import AMQP_URL, Child, pid_of

RAW_HTTP, RAW_BROKER, NAIVE, CMN = "raw_http", "raw_broker", "naive", "cmn"
TARGETS = (RAW_HTTP, RAW_BROKER, NAIVE, CMN)
BROKERS = ("rabbitmq", "kafka")
# Inherited variables that would point a child at another broker or exporter.
_SCRUB = ("AMQP_URL", "KAFKA_BOOTSTRAP_SERVERS", "OTLP_ENDPOINT", "REDIS_URL", "CMN_UPSTREAMS_FILE")


@dataclass(frozen=True, slots=True)
class Knobs:
    """What every service under test is given, so they are compared on the same footing."""

    upstream_url: str
    upstream_pid: int | None = None  # raw HTTP's serving process, for its CPU cost
    concurrency: int = 256  # naive prefetch / naive Kafka concurrency / CMN MAX_IN_FLIGHT
    pool_size: int = 256  # CMN POOL_SIZE (the naive gateways' aiohttp connector is unlimited)
    kafka_fetch_max_wait_ms: int = 1
    cmn_variants: tuple[str, ...] = ()  # what-if experiments (bench_variant); () is CMN as it ships
    cmn_source: str | None = None  # another checkout's ``gateway`` package to serve (bench_cpu's before/after)
    naive_module: str = "tests.performance.bench_naive"  # or bench_naive_tuned: the same, with CMN's GC tuning


@dataclass
class Running:
    """A started target: the call to load it with, and its serving process (None for raw HTTP)."""

    call: Call
    process: Child | None
    client: GatewayClient | None = None
    broker_pid: int | None = None  # the RabbitMQ node or this target's Tansu process

    @property
    def serving_pid(self) -> int | None:
        """The process whose CPU cost is charged to this target."""
        return self.process.pid if self.process is not None else None

    def cpu_split(self, knobs: Knobs) -> dict[str, CpuProbe]:
        """Probes for every process a request of this target costs CPU in (the load generator aside)."""
        pids = {"service": self.serving_pid, "upstream": knobs.upstream_pid, "broker": self.broker_pid}
        if self.serving_pid == knobs.upstream_pid:  # raw HTTP: the upstream is what serves
            pids["service"] = None
        return {name: cpu_probe(pid) for name, pid in pids.items() if pid is not None}


@dataclass
class RawHttp(Running):
    pid: int | None = None

    @property
    def serving_pid(self) -> int | None:
        return self.pid


def child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    return {**env, **extra}


def gateway_child(env: dict[str, str], knobs: Knobs, workdir: Path) -> Child:
    upstreams = workdir / "upstreams.yaml"
    upstreams.write_text(yaml.safe_dump({"upstreams": {UPSTREAM: {"endpoints": [knobs.upstream_url]}}}))
    base = {
        "CMN_UPSTREAMS_FILE": str(upstreams),
        "ENABLE_METRICS": "false",
        "LOG_LEVEL": "WARNING",
        "LOG_FORMAT": "json",
    }
    args = ["-m", "tests.performance.bench_variant", *knobs.cmn_variants] if knobs.cmn_variants else []
    if knobs.cmn_source is not None and args:  # another checkout with variants: bench_variant's "before" first
        args[2:2] = ["before"]
        env = {**env, "CMN_BENCH_GATEWAY_SOURCE": knobs.cmn_source}
    if knobs.cmn_source is not None and not args:
        args = ["-m", "tests.performance.bench_source", knobs.cmn_source]
    args = args or ["-m", "gateway.cli", "serve"]
    # "cmn_serving" since the start-up lines became JSON; an older checkout printed "cmn serving".
    ready = "cmn_serving" if knobs.cmn_source is None else "serving"
    return Child("cmn serve", args, env=child_env({**base, **env}), ready=ready)


def rabbit_env(queue: str, knobs: Knobs) -> dict[str, str]:
    return {
        "AMQP_URL": AMQP_URL,
        "CMN_REQUESTS_QUEUE": queue,
        "MAX_IN_FLIGHT": str(knobs.concurrency),
        "POOL_SIZE": str(knobs.pool_size),
    }


def kafka_env(bootstrap: str, topic: str, knobs: Knobs) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "CMN_REQUESTS_QUEUE": topic,
        "KAFKA_GROUP_ID": f"cmn.{topic}",
        "KAFKA_SESSION_TIMEOUT_MS": "1500",
        "KAFKA_FETCH_MAX_WAIT_MS": str(knobs.kafka_fetch_max_wait_ms),
        "MAX_IN_FLIGHT": str(knobs.concurrency),
        "POOL_SIZE": str(knobs.pool_size),
    }


def service_child(broker: str, target: str, where: str, knobs: Knobs, workdir: Path) -> Child:
    """The serving process of a bus target; ``where`` is the queue (RabbitMQ) or bootstrap|topic (Kafka)."""
    if target == CMN:
        if broker == "rabbitmq":
            return gateway_child(rabbit_env(where, knobs), knobs, workdir)
        bootstrap, topic = where.split("|")
        return gateway_child(kafka_env(bootstrap, topic, knobs), knobs, workdir)
    module = "tests.performance.bench_echo" if target == RAW_BROKER else knobs.naive_module
    if broker == "rabbitmq":
        args = [broker, "--queue", where, "--prefetch", str(knobs.concurrency)]
    else:
        bootstrap, topic = where.split("|")
        args = [broker, "--bootstrap", bootstrap, "--topic", topic, "--concurrency", str(knobs.concurrency)]
    if target == NAIVE:
        args += ["--upstream", knobs.upstream_url]
    return Child(f"{target} {broker}", ["-m", module, *args], env=child_env({}))


async def delete_queues(*names: str) -> None:
    connection = await aiormq.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)
    finally:
        await connection.close()


@asynccontextmanager
async def started(broker: str, target: str, knobs: Knobs) -> AsyncIterator[Running]:
    """Start ``target`` on ``broker``, wait until it answers, yield it; stop and clean up after."""
    if target == RAW_HTTP:
        async with http_session(knobs.concurrency) as session:
            call = http_call(session, knobs.upstream_url + "/echo")
            await first_reply(call)
            yield RawHttp(call, None, pid=knobs.upstream_pid)
        return
    async with AsyncExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cmn-bench-")))
        name = f"bench.{target}.{uuid.uuid4().hex[:10]}"
        if broker == "rabbitmq":
            stack.push_async_callback(delete_queues, name, f"{name}.dlq")
            where = name
            client = rabbit_client(name)
            broker_pid = pid_of("beam.smp")
        else:
            tansu = await stack.enter_async_context(
                EmbeddedBroker(port=0, log_file=workdir / "tansu.log", clock=SystemClock())
            )
            where = f"{tansu.bootstrap}|{name}"
            client = kafka_client(tansu.bootstrap, name)
            broker_pid = tansu.pid
        process = service_child(broker, target, where, knobs, workdir)
        await stack.enter_async_context(process)
        await stack.enter_async_context(client)
        call = bus_call(client)
        await first_reply(call)
        yield Running(call, process, client, broker_pid)
