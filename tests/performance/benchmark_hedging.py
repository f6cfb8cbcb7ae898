"""Hedged requests (issue 12, section 2): two endpoints, one of which answers 10 % of requests after 1 s.

The forwarder (router, pools, breakers, retry budget: everything below the bus) runs in this process
and is driven at a fixed arrival rate (open loop: latency counts from the scheduled start, so
queueing cannot hide); each endpoint is a process of its own (``bench_slow_upstream``), one fast,
one with the slow tail. Each variant gets a warm-up (not measured: it also lets ``p95`` learn),
then a measured window; after it, both endpoints say how many requests they received, so the
*upstream load* is requests received per client request (1.00 = no extra load). Pools hold 100
per endpoint, so slow requests never queue fast ones behind them (the default 10 would). Variants run
interleaved, ``--runs`` times, on fresh endpoint processes; the table shows medians.

    .venv/bin/python -m tests.performance.benchmark_hedging [--runs 3] [--rate 200] [--seconds 10]
    .venv/bin/pytest tests/performance/benchmark_hedging.py -m benchmark -s
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp
import pytest

from gateway.clock import SystemClock
from gateway.errors import GatewayError
from gateway.events import Event, HedgeSent, HedgeWon
from gateway.upstream.config import UpstreamDefaults
from gateway.upstream.forward import build_forwarder
from tests.performance.bench_load import percentile
from tests.performance.bench_procs import Child, quiet_collector, run_loop_main
from tests.upstream.helpers import outbound, upstreams

SLOW_SHARE = 0.10
SLOW_MS = 1000
TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    load_balancer: str
    hedge: dict[str, Any] | None


VARIANTS = (
    Variant("no hedging", "round_robin", None),
    Variant("hedge after 50 ms", "round_robin", {"after_ms": 50, "max": 1}),
    Variant("hedge after p95", "round_robin", {"after_ms": "p95", "max": 1}),
    Variant("no hedging, least_request", "least_request", None),
    Variant("hedge after 50 ms, least_request", "least_request", {"after_ms": 50, "max": 1}),
)


@dataclass(frozen=True, slots=True)
class Result:
    variant: str
    requests: int
    errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    upstream_load: float  # requests the endpoints received per client request
    attempts_per_request: float  # as the replies report them
    hedges_sent: int
    hedges_won: int
    learned_delay_ms: float | None  # what p95 mode had learned at the end of the window


class Hedges:
    """Counts HedgeSent / HedgeWon (what ``cmn_hedges_total`` counts)."""

    def __init__(self) -> None:
        self.sent = self.won = 0

    def on_event(self, event: Event) -> None:
        if isinstance(event, HedgeSent):
            self.sent += 1
        elif isinstance(event, HedgeWon):
            self.won += 1


Call = Callable[[int], Awaitable[tuple[bool, int]]]


async def at_rate(call: Call, rate: float, seconds: float) -> list[tuple[float, bool, int]]:
    """(latency from the scheduled start, ok, attempts) of ``rate * seconds`` requests, open loop."""
    done: list[tuple[float, bool, int]] = []
    origin = time.perf_counter()

    async def one(k: int, scheduled: float) -> None:
        ok, attempts = await call(k)
        done.append((time.perf_counter() - scheduled, ok, attempts))

    tasks = []
    for k in range(int(rate * seconds)):
        scheduled = origin + k / rate
        await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
        tasks.append(asyncio.create_task(one(k, scheduled)))
    await asyncio.gather(*tasks)
    return done


async def hits(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(f"{url}/_stats") as response:
        count: int = (await response.json())["hits"]
        return count


def endpoint(slow_share: float, seed: int) -> Child:
    args = ["-m", "tests.performance.bench_slow_upstream", f"--slow-share={slow_share}", f"--slow-ms={SLOW_MS}"]
    return Child(f"endpoint-{slow_share}", [*args, f"--seed={seed}"])


async def one_trial(variant: Variant, rate: float, seconds: float, warmup: float, seed: int) -> Result:
    async with endpoint(SLOW_SHARE, seed) as slow, endpoint(0.0, seed) as fast:
        urls = [f"http://127.0.0.1:{child.ready_line.split()[1]}" for child in (slow, fast)]
        # Pools large enough that slow requests never queue fast ones (POOL_SIZE 10 would, at this rate).
        config: dict[str, Any] = {"endpoints": urls, "load_balancer": variant.load_balancer, "pool": {"max_size": 100}}
        if variant.hedge is not None:
            config["hedge"] = variant.hedge
        hedges = Hedges()
        fwd = build_forwarder(
            upstreams(svc=config), UpstreamDefaults(), clock=SystemClock(), observer=hedges, stats_interval=None
        )
        async with fwd, aiohttp.ClientSession() as stats:

            async def call(k: int) -> tuple[bool, int]:
                try:
                    response = await fwd.forward(outbound("svc", path=f"/r/{k}", timeout=TIMEOUT_S))
                except GatewayError as exc:
                    return False, exc.attempts
                return response.status == 200, response.attempts

            await at_rate(call, rate, warmup)
            before = sum([await hits(stats, url) for url in urls])
            sent_before, won_before = hedges.sent, hedges.won
            done = await at_rate(call, rate, seconds)
            received = sum([await hits(stats, url) for url in urls]) - before
            hedging = fwd.router("svc").hedging
            learned = hedging.delay(remaining=TIMEOUT_S) if hedging is not None else None
    latencies = sorted(d[0] for d in done if d[1])
    return Result(
        variant=variant.name,
        requests=len(done),
        errors=sum(1 for d in done if not d[1]),
        p50_ms=round(percentile(latencies, 50) * 1000, 1),
        p95_ms=round(percentile(latencies, 95) * 1000, 1),
        p99_ms=round(percentile(latencies, 99) * 1000, 1),
        upstream_load=round(received / len(done), 3),
        attempts_per_request=round(sum(d[2] for d in done) / len(done), 3),
        hedges_sent=hedges.sent - sent_before,
        hedges_won=hedges.won - won_before,
        learned_delay_ms=None if learned is None else round(learned * 1000, 2),
    )


def medians(results: list[Result], variant: str) -> dict[str, Any]:
    rows = [r for r in results if r.variant == variant]
    keys = ("p50_ms", "p95_ms", "p99_ms", "upstream_load", "attempts_per_request", "hedges_sent", "hedges_won")
    summary: dict[str, Any] = {"variant": variant, "runs": len(rows), "errors": sum(r.errors for r in rows)}
    for key in keys:
        values = [getattr(r, key) for r in rows]
        summary[key] = statistics.median(values)
        summary[f"{key}_range"] = (min(values), max(values))
    return summary


def table(summaries: list[dict[str, Any]]) -> str:
    lines = [
        "| variant | p50 ms | p95 ms | p99 ms (min-max) | upstream load | hedges sent / won per 1,000 | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        low, high = s["p99_ms_range"]
        lines.append(
            f"| {s['variant']} | {s['p50_ms']:.1f} | {s['p95_ms']:.1f} | {s['p99_ms']:.1f} ({low:.0f}-{high:.0f}) "
            f"| {s['upstream_load']:.3f} | {s['hedges_sent']} / {s['hedges_won']} | {s['errors']} |"
        )
    return "\n".join(lines)


async def run(runs: int, rate: float, seconds: float, warmup: float) -> list[dict[str, Any]]:
    quiet_collector()
    results = []
    for n in range(runs):
        for variant in VARIANTS:  # interleaved: each run sees the machine as it is that minute
            result = await one_trial(variant, rate, seconds, warmup, seed=n + 1)
            print(json.dumps(asdict(result)), flush=True)
            results.append(result)
    summaries = [medians(results, v.name) for v in VARIANTS]
    total = int(rate * seconds)
    for s in summaries:  # per 1,000 client requests, as the table reads
        s["hedges_sent"] = round(s["hedges_sent"] * 1000 / total)
        s["hedges_won"] = round(s["hedges_won"] * 1000 / total)
    print(
        f"\nhedging: 2 endpoints, one answers {SLOW_SHARE:.0%} of requests after {SLOW_MS} ms; "
        f"{rate:g} req/s for {seconds:g} s after {warmup:g} s of warm-up; median of {runs} runs"
    )
    print(table(summaries))
    return summaries


@pytest.mark.benchmark
async def test_hedging_cuts_the_tail_for_a_bounded_extra_load() -> None:
    summaries = {s["variant"]: s for s in await run(runs=3, rate=200, seconds=10, warmup=3)}
    off, hedged = summaries["no hedging"], summaries["hedge after 50 ms"]
    assert off["p99_ms"] >= SLOW_MS  # the slow tail shows without hedging
    assert hedged["p99_ms"] < SLOW_MS / 2  # and is gone with it
    assert hedged["upstream_load"] < 1.2  # for about one extra request in twenty


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    args = parser.parse_args()
    run_loop_main(run(args.runs, args.rate, args.seconds, args.warmup))


if __name__ == "__main__":
    main()
