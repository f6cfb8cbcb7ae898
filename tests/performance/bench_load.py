"""Load generators and their statistics: closed loop (N concurrent requesters) and fixed rate.

A ``Call`` sends request number ``i`` and returns whether its reply was a success. Bus calls go
through the real SDK (``GatewayClient.send_raw`` over ``RabbitRequester`` / ``KafkaRequester``),
the same for the echo service, the naive gateway and CMN, so only the service under test changes.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from gateway.bus.kafka.requester import KafkaRequester
from gateway.bus.rabbitmq.requester import RabbitRequester
from gateway.client import GatewayClient, ReplyTimeoutError
from gateway.clock import SystemClock
from tests.performance.bench_procs import AMQP_URL

Call = Callable[[int], Awaitable[bool]]
CpuProbe = Callable[[], float]
UPSTREAM = "bench"
PAYLOAD: dict[str, Any] = {"amount": 1999, "currency": "EUR", "customer": "cus_0123456789", "note": "benchmark"}
CALL_TIMEOUT = 15.0


@dataclass(frozen=True, slots=True)
class Trial:
    """One measured run: throughput and latency percentiles (ms) of the requests that completed in it."""

    target: str
    mode: str  # "closed" (N concurrent) or "rate" (fixed arrival rate)
    load: float  # concurrency or requests/s
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    completed: int
    errors: int
    seconds: float
    # CPU time the serving process spent per completed request (µs): a cost figure that the other
    # tenants of a shared machine disturb far less than throughput. None when not measured.
    cpu_us_per_req: float | None = None
    loadavg_1m: float | None = None  # the machine's load at the end of the run, for context
    loadgen_cpu_share: float | None = None  # the load generator's CPU over the window, in cores (1.0 = saturated)
    # Where the machine's CPU went per completed request (µs), by process: "service" (echo, naive or
    # CMN), "upstream", "broker" (the RabbitMQ node or the Tansu process) and "loadgen" (this one).
    # Every request costs all of them, so on a saturated machine their sum bounds the throughput.
    cpu_split: dict[str, float] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


def summarise(target: str, mode: str, load: float, latencies: list[float], errors: int, seconds: float) -> Trial:
    ordered = sorted(latencies)
    p50, p95, p99 = (percentile(ordered, q) * 1000 for q in (50, 95, 99))
    return Trial(target, mode, load, len(ordered) / seconds, p50, p95, p99, len(ordered), errors, seconds)


async def closed_loop(
    target: str,
    call: Call,
    *,
    concurrency: int,
    seconds: float,
    warmup: float = 1.0,
    cpu: CpuProbe | None = None,
    split: Mapping[str, CpuProbe] | None = None,
) -> Trial:
    """``concurrency`` requesters send back to back; counts what completes inside the measured window.

    ``cpu`` probes the serving process (``cpu_us_per_req``); ``split`` names every process whose CPU
    per request goes into ``cpu_split`` (the load generator's own is added as "loadgen").
    """
    counter = iter(range(1 << 62))
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter() + warmup
    end = start + seconds
    cpu_window = asyncio.create_task(_cpu_between(cpu, start, end))
    own_window = asyncio.create_task(_cpu_between(time.process_time, start, end))
    probes = {**(split or {}), "loadgen": time.process_time}
    split_windows = {name: asyncio.create_task(_cpu_between(probe, start, end)) for name, probe in probes.items()}

    async def requester() -> None:
        nonlocal errors
        while (sent := time.perf_counter()) < end:
            ok = await call(next(counter))
            done = time.perf_counter()
            if sent >= start and done <= end:
                if ok:
                    latencies.append(done - sent)
                else:
                    errors += 1

    await asyncio.gather(*(requester() for _ in range(concurrency)))
    trial = summarise(target, "closed", concurrency, latencies, errors, seconds)
    own = await own_window
    spent = {name: await window for name, window in split_windows.items()}
    per_request = {name: s / trial.completed * 1e6 for name, s in spent.items() if s is not None and trial.completed}
    return replace(
        with_cpu(trial, await cpu_window),
        loadgen_cpu_share=None if own is None else own / seconds,
        cpu_split=per_request or None,
    )


async def _cpu_between(cpu: CpuProbe | None, start: float, end: float) -> float | None:
    if cpu is None:
        return None
    await asyncio.sleep(max(0.0, start - time.perf_counter()))
    before = cpu()
    await asyncio.sleep(max(0.0, end - time.perf_counter()))
    return cpu() - before


def with_cpu(trial: Trial, cpu_seconds: float | None) -> Trial:
    per_request = None if cpu_seconds is None or not trial.completed else cpu_seconds / trial.completed * 1e6
    return replace(trial, cpu_us_per_req=per_request, loadavg_1m=os.getloadavg()[0])


def cpu_probe(pid: int) -> CpuProbe:
    """User + system CPU seconds of process ``pid`` so far (from /proc/<pid>/stat)."""
    tick = os.sysconf("SC_CLK_TCK")
    stat = Path(f"/proc/{pid}/stat")

    def read() -> float:
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    return read


async def fixed_rate(target: str, call: Call, *, rate: float, seconds: float, warmup: float = 1.0) -> Trial:
    """Open loop: request k starts at ``k / rate``; latency counts from that scheduled time, so a slow
    service cannot hide its queueing by slowing the generator down (no coordinated omission)."""
    latencies: list[float] = []
    errors = 0
    origin = time.perf_counter()
    total = int(rate * (warmup + seconds))
    measured_from = int(rate * warmup)

    async def one(k: int, scheduled: float) -> None:
        nonlocal errors
        ok = await call(k)
        if k >= measured_from:
            if ok:
                latencies.append(time.perf_counter() - scheduled)
            else:
                errors += 1

    tasks = []
    k = 0
    while k < total:
        now = time.perf_counter()
        while k < total and origin + k / rate <= now:
            tasks.append(asyncio.create_task(one(k, origin + k / rate)))
            k += 1
        await asyncio.sleep(max(0.0, origin + k / rate - time.perf_counter()))
    await asyncio.gather(*tasks)
    return with_cpu(summarise(target, "rate", rate, latencies, errors, seconds), None)


# -- calls -------------------------------------------------------------------------------------


def http_call(session: aiohttp.ClientSession, url: str) -> Call:
    body = orjson.dumps(PAYLOAD)
    headers = {"content-type": "application/json"}

    async def call(_: int) -> bool:
        try:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    return call


def echo_envelope(rid: str, timeout: float = CALL_TIMEOUT) -> bytes:
    """The benchmarks' request: POST /echo with a small JSON body, stamped with its send time."""
    envelope = {
        "id": rid,
        "upstream": UPSTREAM,
        "method": "POST",
        "path": "/echo",
        "json": PAYLOAD,
        "timeout_ms": int(timeout * 1000),
        "sent_at": int(time.time() * 1000),
    }
    return orjson.dumps(envelope)


def bus_call(client: GatewayClient) -> Call:
    """Publish a request envelope (POST /echo with a small JSON body) and check the reply has no error."""
    prefix = uuid.uuid4().hex[:12]

    async def call(i: int) -> bool:
        rid = f"{prefix}-{i}"
        try:
            reply = await client.send_raw(echo_envelope(rid), correlation_id=rid, timeout=CALL_TIMEOUT)
        except ReplyTimeoutError:
            return False
        return orjson.loads(reply.body).get("error") is None

    return call


@asynccontextmanager
async def http_session(concurrency: int) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


def rabbit_client(queue: str) -> GatewayClient:
    return GatewayClient(RabbitRequester(AMQP_URL, queue=queue, clock=SystemClock()))


def kafka_client(bootstrap: str, topic: str) -> GatewayClient:
    return GatewayClient(KafkaRequester(bootstrap, topic=topic, fetch_max_wait_ms=1, clock=SystemClock()))


async def first_reply(call: Call, *, within: float = 60.0) -> None:
    """Wait until the service answers at all (queue declared, consumer group joined)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    i = 0
    while loop.time() < end:
        i += 1
        try:
            if await asyncio.wait_for(call(-i), 3.0):
                return
        except TimeoutError:
            continue
    raise RuntimeError(f"no successful reply within {within} s")


def median_trial(trials: list[Trial]) -> Trial:
    """The run with the median throughput (its latencies stay those of one real run)."""
    ordered = sorted(trials, key=lambda t: t.rps)
    return ordered[len(ordered) // 2]


def spread(trials: list[Trial]) -> tuple[float, float]:
    """Lowest and highest throughput of the runs (how noisy the machine was)."""
    rates = [t.rps for t in trials]
    return (min(rates), max(rates)) if rates else (0.0, 0.0)
