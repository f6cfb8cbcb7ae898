"""Parking (issue 12, section 1): an upstream down for 10 s under steady load, with parking and without.

    .venv/bin/python -m tests.performance.benchmark_parking [--broker rabbitmq|kafka|both] [--runs 3]
    .venv/bin/pytest tests/performance/benchmark_parking.py -m benchmark -s

One real ``cmn serve`` process (MAX_IN_FLIGHT 8) on a real broker (the shared RabbitMQ; a fresh
Tansu per trial), two upstreams in this process: ``flaky`` and ``healthy`` (answers in 20 ms).
Requests arrive at a steady rate on each (20 req/s each, timeout 60 s, GET) for 14 s; ``flaky`` is
down from 2 s to 12 s: it answers 503 with ``Retry-After: 2``, what a service behind a load
balancer answers while it is redeployed. Three modes run the same upstream settings (3 attempts,
attempt timeout 1 s, breaker on): "off" (no ``park:``), "park" (``park: {delays: [1, 2, 5, 10]}``)
and "park+budget" (the same with ``try_budget: 0.5``). Without a try budget a request to ``flaky``
waits out Retry-After in process (holding a worker slot about 4 s) before it fails (off) or parks
(park); with one, its try ends at the first 503 (the wait is beyond its budget) and it parks.
Reported per trial: the share of ``flaky``'s requests sent during the outage
that were answered 200, and ``healthy``'s p50/p95 latency for requests sent during the outage.
Medians over the runs. Results: printed, and ``benchmark-results/parking.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import orjson
import pytest
from aiohttp import web

from gateway.bus.base import park_destination
from gateway.bus.embedded import EmbeddedBroker
from gateway.client import GatewayClient
from gateway.clock import SystemClock
from tests.fixtures.kafka import FAST_GROUP
from tests.fixtures.rabbit import AMQP_URL, delete_queues
from tests.fixtures.upstreams import start_app
from tests.integration.process import ServeProcess
from tests.performance.bench_report import RESULTS

RATE = 20.0  # requests per second, per upstream
SEND_S = 14.0
OUTAGE = (2.0, 12.0)  # seconds after the first request
TIMEOUT_S = 60.0
MAX_IN_FLIGHT = 8
DELAYS = [1, 2, 5, 10]
TRY_BUDGET = 0.5
HEALTHY_MS = 20
SECRET = "benchmark-park-secret-0123456789abcdef"
MODES = ("off", "park", "park+budget")  # no park:, park: without try_budget, park: with try_budget


@dataclass
class Sent:
    upstream: str
    at: float  # seconds after the first request
    latency: float | None = None
    status: int | None = None
    error: str | None = None
    attempts: int = 0


@dataclass
class Trial:
    broker: str
    mode: str  # one of MODES
    flaky_sent_in_outage: int = 0
    flaky_ok_share: float = 0.0
    flaky_error_codes: dict[str, int] = field(default_factory=dict)
    flaky_p95_s: float | None = None
    healthy_p50_ms: float | None = None
    healthy_p95_ms: float | None = None
    healthy_failed: int = 0


class Upstreams:
    def __init__(self) -> None:
        self.down = False
        self.runners: list[web.AppRunner] = []
        self.urls: dict[str, str] = {}

    async def start(self) -> None:
        async def flaky(request: web.Request) -> web.Response:
            if self.down:
                return web.json_response({"down": True}, status=503, headers={"Retry-After": "2"})
            return web.json_response({"ok": True})

        async def healthy(request: web.Request) -> web.Response:
            await asyncio.sleep(HEALTHY_MS / 1000)
            return web.json_response({"ok": True})

        for name, handler in (("flaky", flaky), ("healthy", healthy)):
            app = web.Application()
            app.router.add_get("/{tail:.*}", handler)
            runner, port = await start_app(app)
            self.runners.append(runner)
            self.urls[name] = f"http://127.0.0.1:{port}"

    async def aclose(self) -> None:
        for runner in self.runners:
            await runner.cleanup()


def upstream_config(urls: dict[str, str], mode: str) -> dict[str, Any]:
    common = {"timeouts": {"attempt": 1.0, "connect": 1.0}, "retry": {"attempts": 3}}
    flaky: dict[str, Any] = {"endpoints": [urls["flaky"]], **common}
    if mode == "park":
        flaky["park"] = {"delays": DELAYS}
    elif mode == "park+budget":
        flaky["park"] = {"delays": DELAYS, "try_budget": TRY_BUDGET}
    return {"flaky": flaky, "healthy": {"endpoints": [urls["healthy"]], **common}}


async def until_ready(client: GatewayClient) -> None:
    for _ in range(120):
        try:
            reply = await client.request("healthy", "GET", "/warmup", timeout=2)
        except TimeoutError:
            continue
        if reply.status == 200:
            return
    raise RuntimeError("the gateway never answered")


async def one(client: GatewayClient, sent: Sent, t0: float) -> None:
    reply = await client.request(sent.upstream, "GET", f"/{sent.upstream}", timeout=TIMEOUT_S)
    sent.latency = time.monotonic() - t0 - sent.at
    sent.status = reply.status
    sent.error = reply.error.code if reply.error is not None else None
    sent.attempts = reply.attempts or 0


async def load(client: GatewayClient, upstreams: Upstreams) -> list[Sent]:
    t0 = time.monotonic()
    tasks: list[asyncio.Task[None]] = []
    sent: list[Sent] = []
    n = int(SEND_S * RATE)
    flipped = [False, False]
    for i in range(n):
        at = i / RATE
        ahead = at - (time.monotonic() - t0)
        if ahead > 0:
            await asyncio.sleep(ahead)
        if not flipped[0] and at >= OUTAGE[0]:
            upstreams.down, flipped[0] = True, True
        if not flipped[1] and at >= OUTAGE[1]:
            upstreams.down, flipped[1] = False, True
        for name in ("flaky", "healthy"):
            s = Sent(name, at)
            sent.append(s)
            tasks.append(asyncio.create_task(one(client, s, t0)))
    upstreams.down = False
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), TIMEOUT_S + 30)
    return sent


def summarise(trial: Trial, sent: list[Sent]) -> Trial:
    during = [s for s in sent if OUTAGE[0] <= s.at < OUTAGE[1]]
    flaky = [s for s in during if s.upstream == "flaky"]
    healthy = sorted(s.latency for s in during if s.upstream == "healthy" and s.latency is not None)
    trial.flaky_sent_in_outage = len(flaky)
    trial.flaky_ok_share = round(sum(s.status == 200 for s in flaky) / len(flaky), 3) if flaky else 0.0
    codes: dict[str, int] = {}
    for s in flaky:
        if s.status != 200:
            key = s.error or str(s.status)
            codes[key] = codes.get(key, 0) + 1
    trial.flaky_error_codes = codes
    flaky_latencies = sorted(s.latency for s in flaky if s.latency is not None)
    trial.flaky_p95_s = round(_pct(flaky_latencies, 0.95), 2) if flaky_latencies else None
    trial.healthy_p50_ms = round(_pct(healthy, 0.5) * 1000, 1) if healthy else None
    trial.healthy_p95_ms = round(_pct(healthy, 0.95) * 1000, 1) if healthy else None
    trial.healthy_failed = sum(1 for s in during if s.upstream == "healthy" and s.status != 200)
    return trial


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(len(values) * q))]


async def run_trial(broker: str, mode: str) -> Trial:
    queue = f"bench.requests.{uuid.uuid4().hex[:8]}"
    upstreams = Upstreams()
    await upstreams.start()
    async with AsyncExitStack() as stack:
        stack.push_async_callback(upstreams.aclose)
        env = {"CMN_REQUESTS_QUEUE": queue, "MAX_IN_FLIGHT": str(MAX_IN_FLIGHT), "PARK_SECRET": SECRET}
        if broker == "rabbitmq":
            env["AMQP_URL"] = AMQP_URL
            parks = [park_destination(queue, d) for d in DELAYS]
            stack.push_async_callback(delete_queues, AMQP_URL, queue, f"{queue}.dlq", *parks)
            client = GatewayClient.rabbitmq(AMQP_URL, queue=queue)
        else:
            tansu = EmbeddedBroker(port=0, clock=SystemClock())
            await tansu.start()
            stack.push_async_callback(tansu.aclose)
            env.update(
                KAFKA_BOOTSTRAP_SERVERS=tansu.bootstrap,
                KAFKA_GROUP_ID=f"g.{queue}",
                KAFKA_SESSION_TIMEOUT_MS=str(FAST_GROUP["session_timeout_ms"]),
            )
            client = GatewayClient.kafka(tansu.bootstrap, topic=queue)
        tmp = stack.enter_context(TemporaryDirectory())
        serve = ServeProcess(Path(tmp), upstream_config(upstreams.urls, mode), env)
        await serve.start()
        stack.push_async_callback(serve.aclose)
        await stack.enter_async_context(client)
        await until_ready(client)
        sent = await load(client, upstreams)
        return summarise(Trial(broker, mode), sent)


def report(trials: list[Trial]) -> dict[str, Any]:
    header = (
        "broker",
        "mode",
        "flaky_ok_share",
        "flaky_p95_s",
        "healthy_p50_ms",
        "healthy_p95_ms",
        "healthy_failed",
    )
    print(
        f"\nparking: flaky down {OUTAGE[1] - OUTAGE[0]:.0f} s (503, Retry-After 2), {RATE:.0f} req/s per upstream, "
        f"timeout {TIMEOUT_S:.0f} s, MAX_IN_FLIGHT {MAX_IN_FLIGHT}"
    )
    print(" ".join(f"{h:>15}" for h in header) + "  flaky errors")
    for t in trials:
        print(" ".join(f"{getattr(t, h)!s:>15}" for h in header) + f"  {t.flaky_error_codes}")
    medians: dict[str, Any] = {}
    for broker in sorted({t.broker for t in trials}):
        for mode in MODES:
            rows = [t for t in trials if t.broker == broker and t.mode == mode]
            if not rows:
                continue
            key = f"{broker}/{mode}"
            medians[key] = {
                "runs": len(rows),
                "flaky_ok_share": statistics.median(t.flaky_ok_share for t in rows),
                "healthy_p50_ms": statistics.median(t.healthy_p50_ms or 0.0 for t in rows),
                "healthy_p95_ms": statistics.median(t.healthy_p95_ms or 0.0 for t in rows),
                "flaky_p95_s": statistics.median(t.flaky_p95_s or 0.0 for t in rows),
            }
            print(f"median {key}: {medians[key]}")
    document = {"trials": [asdict(t) for t in trials], "medians": medians}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "parking.json").write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    return document


async def run(brokers: list[str], runs: int) -> dict[str, Any]:
    trials = []
    for _ in range(runs):
        for broker in brokers:
            for mode in MODES:  # alternated, so drift on the shared machine hits every mode
                trials.append(await run_trial(broker, mode))
                print(trials[-1])
    return report(trials)


@pytest.mark.benchmark
async def test_parking_rides_out_an_outage() -> None:
    document = await run(["rabbitmq", "kafka"], 3)
    for key, row in document["medians"].items():
        if key.endswith(("/park", "/park+budget")):
            assert row["flaky_ok_share"] == 1.0, (key, row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--broker", choices=["rabbitmq", "kafka", "both"], default="both")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    brokers = ["rabbitmq", "kafka"] if args.broker == "both" else [args.broker]
    asyncio.run(run(brokers, args.runs))


if __name__ == "__main__":
    main()
