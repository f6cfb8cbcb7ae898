"""Issue 3's "Scale" trial: 10,000 requests held 1 s each by the upstream, all in flight at once.

Three ways side by side: a plain aiohttp client calling the upstream directly (the limit), a naive
aio-pika gateway with prefetch 10,000, and the CMN gateway process (MAX_IN_FLIGHT=10000). Wall
time runs from the first publish (or call) to the last reply; peak RSS is the serving process's VmHWM.

The direct client runs in a child of its own (``python -m tests.performance.bench_scale direct``)
so its RSS is its own and it does not share the load generator's loop.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import aiohttp
import orjson

from gateway.client import GatewayClient, ReplyTimeoutError
from tests.performance.bench_load import CpuProbe, cpu_probe
from tests.performance.bench_procs import Child, peak_rss_mb, raise_fd_limit, run_loop_main

HOLD_PATH = "/hold?ms=1000"
SCALE_TIMEOUT = 120.0


@dataclass(frozen=True, slots=True)
class ScaleResult:
    target: str
    requests: int
    ok: int
    errors: int
    wall_s: float
    peak_rss_mb: float | None
    error_codes: dict[str, int] = field(default_factory=dict)  # reply error code (or "no_reply") → count
    cpu_s: float | None = None  # CPU seconds the serving process spent on the trial
    # CPU seconds every process spent on the trial: "service", "upstream", "broker", "loadgen".
    # A single-process gateway's wall time can never be below its own CPU time.
    cpu_split: dict[str, float] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- the direct client (runs in its own process) ------------------------------------------------


async def direct(url: str, count: int) -> ScaleResult:
    """``count`` concurrent GETs with no connection limit, as a user's own client would make them."""
    timeout = aiohttp.ClientTimeout(total=SCALE_TIMEOUT)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:

        async def one() -> bool:
            try:
                async with session.get(url + HOLD_PATH) as response:
                    await response.read()
                    return response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                return False

        cpu = cpu_probe(os.getpid())
        cpu_before, started = cpu(), time.perf_counter()
        results = await asyncio.gather(*(one() for _ in range(count)))
        wall = time.perf_counter() - started
    ok = sum(results)
    rss = peak_rss_mb(os.getpid())
    return ScaleResult("raw HTTP (aiohttp direct)", count, ok, count - ok, wall, rss, {}, cpu() - cpu_before)


async def run_direct(url: str, count: int, upstream_pid: int | None = None) -> ScaleResult:
    child = Child(
        "direct-10k",
        ["-m", "tests.performance.bench_scale", "direct", "--url", url, "--n", str(count)],
        ready="RESULT ",
    )
    upstream = cpu_probe(upstream_pid) if upstream_pid is not None else None
    before = upstream() if upstream is not None else 0.0
    await child.start(timeout=SCALE_TIMEOUT + 30)
    await child.aclose()
    data = orjson.loads(child.ready_line.split("RESULT ", 1)[1])
    result = ScaleResult(**data)
    if upstream is None or result.cpu_s is None:
        return result
    return replace(result, cpu_split={"service": result.cpu_s, "upstream": upstream() - before})


# -- through the bus -----------------------------------------------------------------------------


async def through_bus(
    target: str, client: GatewayClient, server: Child, count: int, others: Mapping[str, CpuProbe] | None = None
) -> ScaleResult:
    """Publish ``count`` requests at once through ``client`` and wait for every reply.

    ``others`` probes the other processes the trial costs CPU in (upstream, broker), for ``cpu_split``.
    """
    prefix = uuid.uuid4().hex[:12]
    codes: collections.Counter[str] = collections.Counter()

    async def one(i: int) -> bool:
        rid = f"{prefix}-{i}"
        envelope = {
            "id": rid,
            "upstream": "bench",
            "method": "GET",
            "path": HOLD_PATH,
            "timeout_ms": int(SCALE_TIMEOUT * 1000),
            "sent_at": int(time.time() * 1000),
        }
        try:
            reply = await client.send_raw(orjson.dumps(envelope), correlation_id=rid, timeout=SCALE_TIMEOUT)
        except ReplyTimeoutError:
            codes["no_reply"] += 1
            return False
        decoded = orjson.loads(reply.body)
        if decoded.get("error") is not None:
            codes[decoded["error"].get("code", "?")] += 1
            return False
        if decoded.get("status") != 200:
            codes[f"http_{decoded.get('status')}"] += 1
            return False
        return True

    probes = {"service": cpu_probe(server.pid), **(others or {}), "loadgen": time.process_time}
    before, started = {name: probe() for name, probe in probes.items()}, time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(count)))
    wall = time.perf_counter() - started
    spent = {name: probe() - before[name] for name, probe in probes.items()}
    ok = sum(results)
    rss = server.peak_rss_mb()
    return ScaleResult(target, count, ok, count - ok, wall, rss, dict(codes), spent["service"], spent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["direct"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--n", type=int, default=10_000)
    args = parser.parse_args()
    raise_fd_limit()

    async def go() -> None:
        result = await direct(args.url, args.n)
        print("RESULT " + orjson.dumps(result.as_dict()).decode(), flush=True)

    run_loop_main(go())


if __name__ == "__main__":
    main()
