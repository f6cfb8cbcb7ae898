"""`cmn demo`: what a newcomer runs first. Everything local: embedded broker, sample upstream, gateway."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from gateway.app import Gateway, load_config
from gateway.bus.embedded import EmbeddedBroker
from gateway.client import GatewayClient
from gateway.clock import SystemClock
from gateway.errors import GatewayError
from gateway.sample.upstream import payments_app, serve
from gateway.settings import load_settings


async def run_demo(*, requests: int, concurrency: int, console: Console) -> None:
    runner, url = await serve(payments_app())
    clock = SystemClock()  # one clock for the broker, the gateway and the client this demo composes
    try:
        async with EmbeddedBroker(port=0, clock=clock) as broker:
            console.print(f"embedded Kafka-protocol broker (Tansu) on [bold]{broker.bootstrap}[/bold]")
            console.print(f"sample upstream [bold]payments[/bold] at {url}")
            settings = load_settings(
                KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap, KAFKA_SESSION_TIMEOUT_MS=1000, ENABLE_METRICS=False
            )
            config = load_config(settings, {"upstreams": {"payments": {"endpoints": [url]}}})
            gateway, client = Gateway(config, clock=clock), GatewayClient.kafka(broker.bootstrap, clock=clock)
            async with gateway, client:
                await _until_ready(gateway)
                latencies, outcomes = await _send_batch(client, requests, concurrency, console)
    finally:
        await runner.cleanup()
    console.print(_results(latencies, outcomes))
    if requests and not any(_succeeded(outcome) for outcome in outcomes):
        failures = ", ".join(f"{n} {outcome}" for outcome, n in sorted(outcomes.items()))
        raise GatewayError(f"every one of the {requests} requests failed ({failures})")


def _succeeded(outcome: str) -> bool:
    """An upstream answer below 500 (the sample's 402 declines included); an error code or a 5xx is not."""
    return outcome.isdigit() and int(outcome) < 500


async def _until_ready(gateway: Gateway, timeout: float = 30.0) -> None:
    """Wait for the consumer group join, so the first requests don't measure it."""
    for _ in range(int(timeout / 0.05)):
        if gateway.ready:
            return
        await gateway.clock.sleep(0.05)
    raise GatewayError(f"the gateway did not become ready within {timeout:.0f} s")


async def _send_batch(
    client: GatewayClient, total: int, concurrency: int, console: Console
) -> tuple[list[float], Counter[str]]:
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    gate = asyncio.Semaphore(concurrency)
    columns = (TextColumn("sending"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("requests", total=total)

        async def one(i: int) -> None:
            async with gate:
                started = time.perf_counter()
                try:
                    reply = await client.request(
                        "payments",
                        "POST",
                        "/v1/charges",
                        json={"amount": 100 + i, "currency": "EUR"},
                        timeout=10,
                    )
                    outcomes[str(reply.status) if reply.error is None else reply.error.code] += 1
                except GatewayError as exc:
                    outcomes[exc.code] += 1
                latencies.append((time.perf_counter() - started) * 1000)
                progress.advance(task)

        await asyncio.gather(*(one(i) for i in range(total)))
    return latencies, outcomes


def _results(latencies: list[float], outcomes: Counter[str]) -> Table:
    table = Table(title="cmn demo: results")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("requests", str(len(latencies)))
    for outcome, n in sorted(outcomes.items()):
        table.add_row(f"  status {outcome}", str(n))
    if len(latencies) >= 2:
        q = statistics.quantiles(latencies, n=100)
        table.add_row("latency p50", f"{q[49]:.1f} ms")
        table.add_row("latency p95", f"{q[94]:.1f} ms")
        table.add_row("latency p99", f"{q[98]:.1f} ms")
    return table
