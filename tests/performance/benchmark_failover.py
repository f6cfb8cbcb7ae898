"""Failover: two endpoints under steady load, SIGKILL one, measure how long until replies are error-free.

The upstreams are separate processes (``tests.upstream.upstream_proc``); the forwarder and the load
(``WORKERS`` concurrent request loops) share this process. For each method the run records every
completion with its time; the failover time is from the kill to the last error after it (0 when
there was none). GET is idempotent (retried on the other endpoint); POST without an idempotency key
is not, so requests in flight on the killed endpoint when it dies fail, while later ones that hit
the dead endpoint (connect refused, never sent) are still retried elsewhere.

    .venv/bin/pytest tests/performance/benchmark_failover.py -m benchmark -s
"""

from __future__ import annotations

import asyncio
import json
import statistics
from dataclasses import dataclass, field
from typing import Any

import pytest

from gateway.clock import SystemClock
from gateway.errors import GatewayError
from gateway.events import EndpointEjected, Event
from gateway.upstream.config import UpstreamDefaults
from gateway.upstream.forward import GatewayForwarder, build_forwarder
from tests.fixtures.upstreams import free_port
from tests.upstream.helpers import outbound, upstreams
from tests.upstream.processes import UpstreamProcess

WORKERS = 32
BEFORE_S = 2.0
AFTER_S = 3.0
UPSTREAM_DELAY_MS = 5


@dataclass
class Run:
    method: str
    kill_at: float = 0.0
    done: list[tuple[float, str | None, float]] = field(default_factory=list)  # (time, error code, latency)

    def errors_after_kill(self) -> list[tuple[float, str | None, float]]:
        return [d for d in self.done if d[1] is not None and d[0] >= self.kill_at]

    def summary(self, ejected_after: float | None) -> dict[str, Any]:
        errors = self.errors_after_kill()
        after = [d for d in self.done if d[0] >= self.kill_at]
        before = [d for d in self.done if d[0] < self.kill_at]
        latencies = sorted(d[2] for d in after)
        return {
            "method": self.method,
            "requests": len(self.done),
            "errors": len([d for d in self.done if d[1] is not None]),
            "error_codes": sorted({d[1] for d in errors if d[1]}),
            "failover_s": round(max(d[0] for d in errors) - self.kill_at, 3) if errors else 0.0,
            "ejected_after_s": None if ejected_after is None else round(ejected_after, 3),
            "rps_before": round(len(before) / BEFORE_S),
            "rps_after": round(len(after) / AFTER_S),
            "p99_ms_after": round(latencies[int(len(latencies) * 0.99)] * 1000, 1) if latencies else None,
        }


async def load(fwd: GatewayForwarder, run: Run, stop: asyncio.Event, clock: SystemClock) -> None:
    async def worker() -> None:
        while not stop.is_set():
            started = clock.monotonic()
            try:
                await fwd.forward(outbound("svc", run.method, timeout=5.0))
                code = None
            except GatewayError as exc:
                code = exc.code
            now = clock.monotonic()
            run.done.append((now, code, now - started))

    await asyncio.gather(*(worker() for _ in range(WORKERS)))


class StampedObserver:
    """Keeps (monotonic time, event) so the report can say when the dead endpoint was ejected."""

    def __init__(self, clock: SystemClock) -> None:
        self._clock = clock
        self.events: list[tuple[float, Event]] = []

    def on_event(self, event: Event) -> None:
        self.events.append((self._clock.monotonic(), event))


async def one_run(method: str) -> dict[str, Any]:
    clock = SystemClock()
    observer = StampedObserver(clock)
    victim = await UpstreamProcess(free_port(), UPSTREAM_DELAY_MS).start()
    survivor = await UpstreamProcess(free_port(), UPSTREAM_DELAY_MS).start()
    config = upstreams(svc={"endpoints": [victim.url, survivor.url]})
    run, stop = Run(method), asyncio.Event()
    try:
        async with build_forwarder(config, UpstreamDefaults(), clock=clock, observer=observer) as fwd:
            task = asyncio.ensure_future(load(fwd, run, stop, clock))
            await asyncio.sleep(BEFORE_S)
            run.kill_at = clock.monotonic()
            await victim.kill()
            await asyncio.sleep(AFTER_S)
            stop.set()
            await task
    finally:
        await victim.kill()
        await survivor.kill()
    ejected = [t for t, e in observer.events if isinstance(e, EndpointEjected) and e.endpoint == victim.url]
    return run.summary(ejected_after=ejected[0] - run.kill_at if ejected else None)


@pytest.mark.benchmark
async def test_failover_after_killing_one_of_two_endpoints() -> None:
    results = [await one_run(method) for _ in range(3) for method in ("GET", "POST")]
    print(f"\nfailover: 2 endpoints, {WORKERS} concurrent request loops, SIGKILL one after {BEFORE_S} s")
    header = (
        "method",
        "requests",
        "errors",
        "error_codes",
        "failover_s",
        "ejected_after_s",
        "rps_before",
        "rps_after",
        "p99_ms_after",
    )
    print(" ".join(f"{h:>12}" for h in header))
    for r in results:
        print(" ".join(f"{r[h]!s:>12}" for h in header))
    for method in ("GET", "POST"):
        rows = [r for r in results if r["method"] == method]
        print(f"{method}: median failover {statistics.median(r['failover_s'] for r in rows):.3f} s")
    print("RESULTS " + json.dumps(results))
    for r in results:
        assert r["failover_s"] < 3.0, r
        if r["method"] == "GET":
            assert r["errors"] == 0, r
