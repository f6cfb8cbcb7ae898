"""Telemetry overhead, side by side: the request path with metrics, logs and tracing on vs off.

    .venv/bin/pytest tests/performance/benchmark_telemetry.py -m benchmark -s

Each "request" is what the pipeline does around telemetry: RequestReceived, a consumer span continued
from message headers, one real HTTP call to a loopback upstream (instrumented aiohttp client when
tracing is on), inject into the reply headers, RequestCompleted to the observers. "on" adds the
Metrics and RequestLog observers (JSON lines), OTLP export to a real receiver, and a scraper pulling
/metrics every 50 ms (20x Prometheus's usual rate). Upstream, receiver and load share one process
and event loop, so the ratio is pessimistic: a real gateway spends more per request on the broker,
which telemetry does not touch. Trials alternate off/on; medians are compared, never asserted.
Throughput swings with the neighbours' load; process CPU time per request (all threads) is the
steadier figure. The OTLP receiver decodes spans in this process too, so the tracing row
over-states its cost.
"""

from __future__ import annotations

import asyncio
import io
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from gateway.events import NullObserver, Observer, ObserverGroup, RequestCompleted, RequestReceived
from gateway.telemetry.logging import RequestLog, configure_logging
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.server import MetricsServer
from gateway.telemetry.tracing import NoopRequestTracer, OtelRequestTracer, configure_tracing
from tests.fixtures.otlp import OtlpReceiver
from tests.fixtures.upstreams import Upstream

REQUESTS = 3000
CONCURRENCY = 32
TRIALS = 5
HEADERS = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}


@dataclass(slots=True)
class Wiring:
    tracer: OtelRequestTracer | NoopRequestTracer
    observer: Observer
    scrapes: int = 0


async def one_request(wiring: Wiring, http: aiohttp.ClientSession, url: str, n: int) -> None:
    started = time.perf_counter()
    wiring.observer.on_event(RequestReceived("rabbitmq"))
    with wiring.tracer.request_span(HEADERS, transport="rabbitmq", destination="cmn.requests", correlation_id="r"):
        async with http.get(url) as response:
            await response.read()
            status = response.status
        reply: dict[str, str] = {}
        wiring.tracer.inject(reply)
    took = time.perf_counter() - started
    wiring.observer.on_event(RequestCompleted(f"r-{n}", "echo", "GET", status, took, transport="rabbitmq"))


@dataclass(frozen=True, slots=True)
class Trial:
    rate: float  # requests per second, wall clock
    cpu_us: float  # process CPU time per request (all threads: span export included)


async def load(wiring: Wiring, url: str) -> Trial:
    """Closed loop at ``CONCURRENCY``. CPU time per request is the steadier figure on a shared machine."""
    counter = iter(range(REQUESTS))
    async with aiohttp.ClientSession() as http:  # created inside the trial: instrumented only when "on"

        async def worker() -> None:
            for n in counter:
                await one_request(wiring, http, url, n)

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        took, cpu = time.perf_counter() - started, time.process_time() - cpu
    return Trial(REQUESTS / took, cpu / REQUESTS * 1e6)


@asynccontextmanager
async def telemetry_on(receiver: OtlpReceiver | None) -> AsyncIterator[Wiring]:
    """Metrics + request log + a busy scraper; with ``receiver``, tracing exported to it as well."""
    registry = CollectorRegistry()
    configure_logging("INFO", "json", stream=io.StringIO())
    async with AsyncExitStack() as stack:
        tracing = await stack.enter_async_context(configure_tracing(receiver.endpoint if receiver else None))
        wiring = Wiring(tracing.tracer, ObserverGroup([Metrics(registry), RequestLog()]))
        server = await stack.enter_async_context(
            MetricsServer(registry, host="127.0.0.1", port=0, readiness=lambda: True)
        )
        scraper = asyncio.create_task(scrape(wiring, f"http://127.0.0.1:{server.port}/metrics"))
        try:
            yield wiring
        finally:
            scraper.cancel()
            await asyncio.gather(scraper, return_exceptions=True)
            await tracing.flush()


async def scrape(wiring: Wiring, url: str) -> None:
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(url) as response:
                await response.read()
            wiring.scrapes += 1
            await asyncio.sleep(0.05)


def summary(label: str, trials: list[Trial], baseline: list[Trial]) -> str:
    rate = statistics.median(t.rate for t in trials)
    cpu = statistics.median(t.cpu_us for t in trials)
    base_rate = statistics.median(t.rate for t in baseline)
    base_cpu = statistics.median(t.cpu_us for t in baseline)
    return (
        f"{label:34s} {rate:6.0f} req/s x{rate / base_rate:.2f} | {cpu:5.0f} us CPU/request "
        f"(+{cpu - base_cpu:.0f}) | trials {', '.join(f'{t.rate:.0f}' for t in trials)}"
    )


@pytest.mark.benchmark
async def test_telemetry_overhead_side_by_side(echo_upstream: Upstream, otlp_receiver: OtlpReceiver) -> None:
    off: list[Trial] = []
    observed: list[Trial] = []
    traced: list[Trial] = []
    scrapes = 0
    for _ in range(TRIALS):
        off.append(await load(Wiring(NoopRequestTracer(), NullObserver()), echo_upstream.url))
        async with telemetry_on(None) as wiring:
            observed.append(await load(wiring, echo_upstream.url))
        scrapes += wiring.scrapes
        async with telemetry_on(otlp_receiver) as wiring:
            traced.append(await load(wiring, echo_upstream.url))
        scrapes += wiring.scrapes
    print(
        f"\n{summary('telemetry off', off, off)}"
        f"\n{summary('metrics + logs + /metrics scrapes', observed, off)}"
        f"\n{summary('... + tracing (OTLP export)', traced, off)}"
        f"\n{scrapes} scrapes, {len(otlp_receiver.spans)} spans exported"
    )
    assert len(otlp_receiver.spans) == TRIALS * REQUESTS * 2  # a consumer and a client span per request
    assert scrapes > 0
