"""Shared endpoint health (issue 11, section 4): how many requests reach an endpoint after it turns bad.

Three real `cmn serve` replicas on RabbitMQ, one upstream over two endpoints (round robin, the
default breaker and outlier detection), a steady open-loop load from one client through the requests
queue. After ``BEFORE_S`` one endpoint answers 503 to everything; for ``AFTER_S`` the endpoint counts
the requests that still reach it, by replica (it learns which replica holds each connection from
/proc: tests/integration/fleet_health.py). Modes:

    shared   SHARED_HEALTH=true (the default): replicas share verdicts, a quorum takes it out
    local    SHARED_HEALTH=false: every replica finds out by itself
    alone    sharing on, but the endpoint fails for one replica only (its own network path): the
             others must keep using it, so their requests to it should stay at their share

Each mode runs ``RUNS`` times, a fresh fleet per run; the figures are medians.

    .venv/bin/python -m tests.performance.benchmark_shared_health
    .venv/bin/pytest tests/performance/benchmark_shared_health.py -m benchmark -s
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest

from gateway.client import GatewayClient
from gateway.errors import GatewayError
from tests.fixtures.rabbit import AMQP_URL
from tests.integration.fleet_health import Endpoint, Replica, fleet_ready, start_fleet, until, upstreams_file
from tests.integration.harness import delete_rabbit_topology

RUNS = 3
RATE = 60.0  # requests per second, across the fleet
BEFORE_S = 2.0
AFTER_S = 20.0
MODES = ("shared", "local", "alone")


async def _load(client: GatewayClient, seconds: float, results: list[str]) -> list[asyncio.Task[None]]:
    """Open loop: one request every 1/RATE s for ``seconds``, each recorded as "ok" or its error."""
    loop = asyncio.get_running_loop()

    async def one(i: int) -> None:
        try:
            reply = await client.request("payments", "GET", f"/pay/{i}", timeout=20)
            results.append("ok" if reply.status == 200 else str(reply.error.code if reply.error else reply.status))
        except (GatewayError, TimeoutError) as exc:
            results.append(type(exc).__name__)

    tasks, start, i = [], loop.time(), 0
    while loop.time() - start < seconds:
        tasks.append(asyncio.create_task(one(i)))
        i += 1
        await asyncio.sleep(max(0.0, start + i / RATE - loop.time()))
    return tasks


async def _serving(replicas: list[Replica]) -> None:
    async def answering() -> bool:
        builds = await asyncio.gather(*(r.metric("cmn_build_info") for r in replicas))
        return all(b is not None for b in builds)

    await until(answering, 30.0, "every replica serves its metrics")


async def one_run(mode: str, tmp: Path) -> dict[str, Any]:
    queue = f"t.requests.bench.{uuid.uuid4().hex[:10]}"
    env = {
        "AMQP_URL": AMQP_URL,
        "CMN_REQUESTS_QUEUE": queue,
        "CONTROL_PRINCIPALS": "guest",
        "SHARED_HEALTH": "false" if mode == "local" else "true",
    }
    good, bad = await Endpoint().start(), await Endpoint().start()
    replicas = await start_fleet(tmp, env, upstreams_file(good.url, bad.url))
    results: list[str] = []
    try:
        for replica in replicas:
            assert replica.process.process is not None
            bad.replicas[replica.name] = replica.process.process.pid
        await _serving(replicas)
        if mode != "local":
            await fleet_ready(replicas)
        async with GatewayClient.rabbitmq(AMQP_URL, queue=queue) as client:
            warm = await _load(client, BEFORE_S, [])
            bad.turn(sick={replicas[0].name} if mode == "alone" else None)
            tasks = await _load(client, AFTER_S, results)
            await asyncio.gather(*warm, *tasks)
        takeouts = await asyncio.gather(
            *(r.metric("cmn_shared_health_takeouts_total", upstream="payments") for r in replicas)
        )
    finally:
        for replica in replicas:
            await replica.process.aclose()
        await good.aclose()
        await bad.aclose()
        await delete_rabbit_topology(queue)
    by_replica = [bad.hits_after[r.name] for r in replicas]
    return {
        "mode": mode,
        "requests": len(results),
        "client_errors": sum(r != "ok" for r in results),
        "bad_hits": sum(by_replica),
        "bad_hits_by_replica": by_replica,
        "takeouts": [int(t or 0) for t in takeouts],
    }


def summarize(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    summary = {}
    for mode in MODES:
        rows = [r for r in results if r["mode"] == mode]
        if not rows:
            continue
        # Which replica takes it out on the quorum's word varies by run: sort each run's counts (lowest
        # first), except when alone, where the first replica is the one that cannot reach the endpoint.
        counts = [r["bad_hits_by_replica"] if mode == "alone" else sorted(r["bad_hits_by_replica"]) for r in rows]
        by_replica = [statistics.median(c[i] for c in counts) for i in range(3)]
        summary[mode] = {
            "runs": len(rows),
            "median_bad_hits": statistics.median(r["bad_hits"] for r in rows),
            "median_bad_hits_by_replica": by_replica,
            "median_requests": statistics.median(r["requests"] for r in rows),
            "client_errors": sum(r["client_errors"] for r in rows),
            "takeouts": [r["takeouts"] for r in rows],
        }
    return summary


async def run_all(modes: tuple[str, ...] = MODES, runs: int = RUNS) -> dict[str, dict[str, Any]]:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(runs):
            for mode in modes:
                where = Path(tmp) / f"{mode}-{n}"
                where.mkdir()
                result = await one_run(mode, where)
                print(json.dumps(result), flush=True)
                results.append(result)
    summary = summarize(results)
    print(f"\nshared health: 3 replicas, 2 endpoints, {RATE:g} req/s, {AFTER_S:g} s after one turns to 503")
    for mode, row in summary.items():
        print(f"{mode:>7}: {json.dumps(row)}")
    print("RESULTS " + json.dumps(summary))
    return summary


@pytest.mark.benchmark
async def test_sharing_sends_fewer_requests_to_a_dead_endpoint_and_none_away_from_a_live_one() -> None:
    summary = await run_all()
    assert summary["shared"]["median_bad_hits"] < summary["local"]["median_bad_hits"]
    others = summary["alone"]["median_bad_hits_by_replica"][1:]
    assert all(hits > 0 for hits in others)  # the replicas that can reach it keep using it
    assert all(t[1:] == [0, 0] for t in summary["alone"]["takeouts"])


if __name__ == "__main__":
    asyncio.run(run_all())
