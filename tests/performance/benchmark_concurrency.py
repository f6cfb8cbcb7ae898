"""10,000 concurrent in-flight requests through the forwarder, beside a plain aiohttp client.

An upstream process holds every request 1 s (``tests.performance.bench_upstream``, ``/hold``).
Each trial is a fresh process, so its peak RSS is its own: ``direct`` is one aiohttp session with
a connector limit of N (the limit of what this machine does), ``forwarder`` is CMN's
``build_forwarder`` with the pool sized to N. Both on uvloop, as ``cmn serve`` runs. Trials
alternate (direct, forwarder, direct, ...; TRIALS of each) because the machine is shared and noisy.

    .venv/bin/pytest tests/performance/benchmark_concurrency.py -m benchmark -s
    python -m tests.performance.benchmark_concurrency --mode forwarder --url http://127.0.0.1:PORT
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
from typing import Any

import aiohttp
import pytest

from tests.performance.bench_procs import REPO, Child, raise_fd_limit, run_loop_main

N = 10_000
HOLD_MS = 1000
TRIALS = 3


async def direct(url: str, n: int) -> tuple[int, int]:
    connector = aiohttp.TCPConnector(limit=n)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def one() -> bool:
            try:
                async with session.get(f"{url}/hold?ms={HOLD_MS}") as response:
                    await response.read()
                    return response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                return False

        results = await asyncio.gather(*(one() for _ in range(n)))
    return sum(results), n - sum(results)


async def forwarder(url: str, n: int) -> tuple[int, int]:
    from gateway.clock import Deadline, SystemClock
    from gateway.envelope.models import RequestEnvelope
    from gateway.errors import GatewayError
    from gateway.events import NullObserver
    from gateway.upstream.base import OutboundRequest
    from gateway.upstream.config import UpstreamDefaults, UpstreamsFile
    from gateway.upstream.forward import build_forwarder

    clock = SystemClock()
    config = UpstreamsFile.model_validate(
        {"upstreams": {"hold": {"endpoints": [url], "pool": {"max_size": n, "acquire_timeout": 60}}}}
    )
    async with build_forwarder(
        config, UpstreamDefaults(request_timeout=60), clock=clock, observer=NullObserver()
    ) as fwd:

        async def one(i: int) -> bool:
            envelope = RequestEnvelope(id=str(i), upstream="hold", path=f"/hold?ms={HOLD_MS}")
            try:
                response = await fwd.forward(OutboundRequest(envelope, None, {}, Deadline.after(clock, 60)))
            except GatewayError:
                return False
            return response.status == 200

        results = await asyncio.gather(*(one(i) for i in range(n)))
    return sum(results), n - sum(results)


async def trial(mode: str, url: str, n: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    ok, errors = await (direct(url, n) if mode == "direct" else forwarder(url, n))
    wall = loop.time() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "mode": mode,
        "n": n,
        "ok": ok,
        "errors": errors,
        "wall_s": round(wall, 3),
        "peak_rss_mb": round(peak_mb, 1),
    }


async def run_child(mode: str, url: str, n: int) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.performance.benchmark_concurrency",
        "--mode",
        mode,
        "--url",
        url,
        "--n",
        str(n),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    lines = [line for line in out.decode().splitlines() if line.startswith("RESULT ")]
    assert lines, f"{mode} trial printed no result (exit {process.returncode})"
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
    return result


@pytest.mark.benchmark
async def test_forwarder_holds_10000_concurrent_requests() -> None:
    raise_fd_limit()
    async with Child("upstream", ["-m", "tests.performance.bench_upstream"]) as upstream:
        url = f"http://127.0.0.1:{upstream.ready_line.split()[-1]}"
        results = [await run_child(mode, url, N) for _ in range(TRIALS) for mode in ("direct", "forwarder")]
    report(results)
    for result in results:
        assert (result["ok"], result["errors"]) == (N, 0), result


def report(results: list[dict[str, Any]]) -> None:
    by_mode = {m: [r for r in results if r["mode"] == m] for m in ("direct", "forwarder")}
    print(f"\n{N} concurrent requests held {HOLD_MS} ms by the upstream (uvloop; each trial its own process)")
    print(f"{'mode':<10} {'wall s (each)':<20} {'median':>8} {'peak RSS MB':>12} {'errors':>7}")
    for mode, rows in by_mode.items():
        walls = [r["wall_s"] for r in rows]
        print(
            f"{mode:<10} {', '.join(f'{w:.2f}' for w in walls):<20} {statistics.median(walls):>8.2f}"
            f" {max(r['peak_rss_mb'] for r in rows):>12.1f} {sum(r['errors'] for r in rows):>7}"
        )
    ratio = statistics.median(r["wall_s"] for r in by_mode["forwarder"]) / statistics.median(
        r["wall_s"] for r in by_mode["direct"]
    )
    print(f"forwarder / direct wall time: {ratio:.2f}x")
    print("RESULTS " + json.dumps(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=["direct", "forwarder"], required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--n", type=int, default=N)
    args = parser.parse_args()
    raise_fd_limit()
    print("RESULT " + json.dumps(run_loop_main(trial(args.mode, args.url, args.n))), flush=True)


if __name__ == "__main__":
    main()
