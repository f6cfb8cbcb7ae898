"""CPU per request of CMN's own code, in one process, checkouts side by side (issue 14, second pass).

    python -m tests.performance.bench_inproc --cmn before=/tmp/before --cmn after=. [--traced] [--runs 5]

Each run serves ``--requests`` requests through ``InMemoryGateway`` (the real pipeline, guard,
admission, router, pool, aiohttp and telemetry; a ``MemoryTransport`` instead of a broker) to an
aiohttp upstream in the same process, ``--concurrency`` at a time, and divides the process's CPU
time by the requests. Client, transport and upstream cost the same for every checkout, so the
differences between checkouts are the gateway's own, without a broker, a load generator or other
processes to share the machine with: on a machine shared with other benchmarks this moves far
less than ``bench_cpu``. With ``--traced`` every request is traced (OTLP/HTTP to a sink in its own
process). Checkouts run in turn, each in a fresh process, interleaved over the runs.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess  # nosec B404  # runs this same module for each checkout
import sys
from pathlib import Path

from tests.performance.bench_variant import _SINK

_CHILD = """
import asyncio, sys, time
sys.path.insert(0, {source!r})
import uvloop
from aiohttp import web
from gateway.testing_gateway import InMemoryGateway

async def upstream(request):
    await request.read()
    return web.json_response({{"ok": True}})

async def main():
    settings = {{"OTLP_ENDPOINT": {endpoint!r}}} if {endpoint!r} else {{}}
    async with InMemoryGateway({{"bench": upstream}}, settings=settings) as gateway, gateway.client() as client:
        async def some(n):
            for _ in range(n):
                reply = await client.request("bench", "POST", "/pay", json={{"amount": 5}}, timeout=30)
                assert reply.status == 200, reply
        await asyncio.gather(*(some(50) for _ in range({concurrency})))  # warm-up
        per = {requests} // {concurrency}
        start = time.process_time()
        await asyncio.gather(*(some(per) for _ in range({concurrency})))
        print((time.process_time() - start) / (per * {concurrency}) * 1e6)

uvloop.run(main())
"""


def run_once(source: str, endpoint: str, requests: int, concurrency: int) -> float:
    code = _CHILD.format(source=source, endpoint=endpoint, requests=requests, concurrency=concurrency)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)  # nosec B603
    if done.returncode != 0:
        raise SystemExit(f"{source}: {done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cmn", action="append", required=True, help="LABEL=DIR (repeatable)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--traced", action="store_true")
    args = parser.parse_args()
    ways = [(label, str(Path(source).resolve())) for label, _, source in (c.partition("=") for c in args.cmn)]
    sink = subprocess.Popen([sys.executable, "-c", _SINK], stdout=subprocess.PIPE, text=True) if args.traced else None  # nosec B603
    try:
        endpoint = ""
        if sink is not None:
            assert sink.stdout is not None
            endpoint = f"http://127.0.0.1:{sink.stdout.readline().strip()}"
        results: dict[str, list[float]] = {}
        for run in range(args.runs):
            for label, source in ways:
                cpu = run_once(source, endpoint, args.requests, args.concurrency)
                results.setdefault(label, []).append(cpu)
                print(f"[run {run + 1}/{args.runs}] {label:<10} {cpu:7.1f} µs CPU/request", flush=True)
        first = statistics.median(results[ways[0][0]])
        traced = " traced" if args.traced else ""
        print(f"\nin-process CPU µs per request{traced} (median of {args.runs}, client and upstream included)")
        for label, values in results.items():
            median = statistics.median(values)
            runs = [round(v) for v in values]
            print(f"  {label:<10} {median:7.1f} µs  {median - first:+6.1f} vs {ways[0][0]}  runs {runs}")
    finally:
        if sink is not None:
            sink.kill()


if __name__ == "__main__":
    main()
